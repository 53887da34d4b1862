"""Runtimes drive generation; the scheme decides how weights are stored, the runtime how the
decode loop runs, so that comparisons stay like with like. Each runtime is a plug-in
(`runtimes/base.py`); `RUNTIMES` maps the ones a user can choose to what they do."""

from quantbench.runtimes.base import Engine, Runtime, for_scheme, get, register, selectable  # noqa: F401


def __getattr__(name):
    if name == "RUNTIMES":  # filled when asked: the runtime modules register on first use
        return selectable()
    raise AttributeError(name)
