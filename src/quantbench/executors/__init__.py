"""Executors place a run's comparisons on devices. Each comparison's cells run in order on one
device (its baseline, schemes, the baseline again), so everything it compares shares a card;
comparisons run side by side where there are several devices. Only the driver (the process
that called `run`) writes the database, cell by cell as they finish.

`local`: this machine, one thread per device, each cell a subprocess (executor.run_cell).
`ray`: each comparison a Ray task holding its GPU (or a CPU slot) on a cluster.
"""

from __future__ import annotations

from quantbench.errors import UsageError

EXECUTORS = {"local": "quantbench.executors.local", "ray": "quantbench.executors.ray_cluster"}


def get(name: str):
    import importlib

    if name not in EXECUTORS:
        raise UsageError(f"--executor '{name}' is not one of {', '.join(EXECUTORS)}")
    return importlib.import_module(EXECUTORS[name])


def run_threads(threads, cancel, on_cancel=None) -> None:
    """Start the executor's threads and wait for them; Ctrl-C or SIGTERM reach only this
    (the main) thread: set `cancel`, let `on_cancel` stop remote work, join, re-raise."""
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)
    except BaseException:
        cancel.set()
        if on_cancel is not None:
            on_cancel()
        for t in threads:
            t.join(timeout=60)
        raise
