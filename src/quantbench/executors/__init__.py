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
