"""A Ray cluster: each comparison one Ray task that holds its GPU (or a CPU slot) on some node
and measures the comparison's cells there in order, each in its own subprocess as always, so
that a comparison never spans two machines. The task streams each cell's result back as it
finishes; only this process (the driver) writes the database. A task whose worker or node is
lost mid-cell is submitted again once with the cells it had not returned; a cell lost twice is
recorded as failed and the comparison goes on.

Start a cluster with `ray start --head --num-cpus 1` (and `ray start --address HEAD:6379
--num-cpus 1` on each other machine): a CPU comparison takes one CPU slot, so one slot per
machine keeps CPU cells from sharing a machine. GPU comparisons take one GPU each.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from quantbench.errors import UsageError
from quantbench.executors import run_threads

_SRC = str(Path(__file__).resolve().parent.parent.parent)
_TRIES = 2  # a cell whose worker is lost is measured once more


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'quantbench[ray]' (and a "
                         "cluster: ray start --head)") from None
    return ray


def connect(address: str | None) -> None:
    ray = _ray()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    path = os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"--executor ray: no Ray cluster at {address} ({str(exc).splitlines()[0]}"
                         "): start one with `ray start --head`, or pass --address "
                         "HOST:6379") from None


def resolve(spec: str, address: str | None):
    """(device as cells name it, capability, lanes) for a device spec, asked of the cluster:
    this machine may have no GPU at all."""
    connect(address)
    ray = _ray()
    spec = "auto" if spec is None else str(spec).strip()
    gpus = ray.cluster_resources().get("GPU", 0)
    if spec == "cpu" or (spec == "auto" and not gpus):
        return "cpu", None, ["ray"]
    if spec not in ("cuda", "auto") and not spec.startswith("cuda:"):
        raise UsageError(f"--device '{spec}' not understood: use auto, cpu or cuda")
    if not gpus:
        raise UsageError("--device cuda: the Ray cluster has no GPU (ray status lists its "
                         "resources)")
    probe = ray.remote(_probe_gpu)
    name, capability = ray.get(probe.options(num_gpus=1, num_cpus=0).remote())
    if spec.startswith("cuda:"):
        # Accepted so that a sweep measured with --executor local resumes here; measure()
        # refuses it if any of its cells is still to be measured.
        return spec, tuple(capability), [PINNED]
    return "cuda", tuple(capability), ["ray"]


PINNED = "ray:pinned"


def _refuse_pinned(spans, done: set[int]) -> None:
    """Ray gives each task whichever GPU is free, so a cell that names one cannot run here."""
    for comparison, first, end in spans:
        if comparison.lanes == [PINNED] and any(p not in done for p in range(first, end)):
            raise UsageError(f"--device {comparison.device} with --executor ray: Ray gives each "
                             "task a free GPU; pass cuda (or run pinned devices with --executor "
                             "local)")


def _probe_gpu():
    import torch

    return torch.cuda.get_device_name(0), list(torch.cuda.get_device_capability(0))


def _remote():
    return _ray().remote(_measure_task)


def _measure_task(cells: list, timeout_s, memory_limit, command: str, gpu: bool):
    """On a node: hold the device, collect this node's environment (a cell's identity says
    what it was measured with), and measure each cell in a subprocess, yielding each."""
    from quantbench import devicelock, environment, executor, identity
    from quantbench.config import CellConfig
    from quantbench.store import now

    device = "cuda:0" if gpu else "cpu"  # Ray shows the task only its own GPU
    if memory_limit == "auto":
        import psutil

        memory_limit = int(0.9 * psutil.virtual_memory().available)
    lock = devicelock.acquire(device, command, wait=True)
    try:
        env = environment.collect()
        try:
            from quantbench.hardware import cache

            env["hardware"] = cache.get(device, env)
        except Exception as exc:  # the roofline is lost, not the cells
            env["hardware"] = {"reason": f"no hardware profile on this node: {exc}"}
        fingerprint = identity.environment_fingerprint(env, device)
        import ray

        context = ray.get_runtime_context()
        where = {"host": socket.gethostname(), "node_id": context.get_node_id(),
                 "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}
        for position, data in cells:
            data = {**data, "environment": fingerprint}
            data["cell_id"] = CellConfig.from_dict(data).cell_id
            started = now()
            result, wall = executor.run_cell(data, timeout_s, None, memory_limit,
                                             place_on=device if gpu else None)
            result.setdefault("info", {})["ray"] = where
            if gpu and where["gpu_ids"]:  # the node's own numbering, not the task's cuda:0
                result["info"]["placed_on"] = f"cuda:{where['gpu_ids'][0]}"
            yield position, data, result, wall, started, env
    finally:
        # The worker outlives the task, and Ray ends it without running atexit: the cells' fork
        # server is ended and reaped here, or init reaps it and its CPU time is no one's.
        from quantbench import forkserver

        forkserver.shutdown()
        lock.release()


def measure(bench, store, run_id: str, env_id: str, spans, done: set[int],
            memory_limit: int | None, lanes: list[str]) -> None:
    _refuse_pinned(spans, done)
    connect(bench.config.execution.address)
    task = _remote()
    lock = threading.Lock()
    errors: list[BaseException] = []
    cancel = threading.Event()
    progress = bench.progress
    streams: dict = {}  # thread -> the Ray stream it reads, cancelled on Ctrl-C

    def run_comparison(span):
        comparison, first, end = span
        todo = []
        for position, cell in zip(range(first, end), comparison.cells):
            label = bench._label(cell)
            if position in done:
                if progress:
                    progress.reused(label, run_id, comparison)
                continue
            with lock:
                previous = bench._reusable(store, comparison, cell)
                if previous:
                    store.link_cell(run_id, position, previous[0])
            if previous:
                if progress:
                    progress.reused(label, previous[1], comparison)
                continue
            todo.append((position, cell.to_dict()))
        tries = {position: 0 for position, _ in todo}
        labels = {position: bench._label(cell) for position, cell in
                  zip(range(first, end), comparison.cells)}
        gpu = comparison.device.startswith("cuda")
        while todo and not cancel.is_set():
            for position, _ in todo[:1]:
                tries[position] += 1
            stream = task.options(num_gpus=1 if gpu else 0, num_cpus=1, max_retries=0,
                                  name=f"quantbench: {comparison.label}").remote(
                todo, bench.config.safety.cell_timeout, memory_limit, bench.command, gpu)
            streams[threading.get_ident()] = stream
            try:
                for ref in stream:
                    if cancel.is_set():
                        _ray().cancel(stream, force=True)
                        return
                    position, data, result, wall, started, env = _ray().get(ref)
                    if bench.config.safety.allow_shared:
                        result.setdefault("info", {})["shared"] = True
                    with lock:
                        cell_env = store.add_env(env)
                        store.add_cell(run_id, position, data, result, cell_env, started, wall)
                    todo = [t for t in todo if t[0] != position]
                    if progress:
                        ray_info = (result.get("info") or {}).get("ray") or {}
                        where = ray_info.get("host", "")
                        if gpu and ray_info.get("gpu_ids"):
                            where += f" GPU {','.join(ray_info['gpu_ids'])}"
                        progress.cell_finished(labels[position], result, wall,
                                               comparison=comparison, where=where or None)
            except Exception as exc:  # the worker or its node was lost mid-cell
                if not todo:
                    return
                position, data = todo[0]
                if tries[position] >= _TRIES:
                    from quantbench.errors import error_text
                    from quantbench.store import now

                    failure = {"status": "failed", "info": {"ray": {"lost": error_text(exc)}},
                               "error": f"the Ray worker measuring this cell was lost twice "
                                        f"({error_text(exc)})"}
                    with lock:
                        store.add_cell(run_id, position, data, failure, env_id, now(), 0.0)
                    todo = todo[1:]
                    if progress:
                        progress.cell_finished(labels[position], failure, 0.0,
                                               comparison=comparison)

    threads = [threading.Thread(target=_guard, args=(run_comparison, span, errors, cancel),
                                daemon=True) for span in spans]
    def cancel_streams():
        for stream in list(streams.values()):
            try:  # the task's process dies, and its cell's subprocess with it (PDEATHSIG)
                _ray().cancel(stream, force=True)
            except Exception:
                pass

    run_threads(threads, cancel, cancel_streams)
    if errors:
        raise errors[0]


def _guard(fn, span, errors, cancel):
    try:
        fn(span)
    except BaseException as exc:  # noqa: BLE001  (re-raised by the driver)
        errors.append(exc)
        cancel.set()
