"""Runs each cell in a process of its own: its peak memory is its own, a crash or an
out-of-memory kill ends the cell and not the run, and no library state leaks between cells.
CPU cells' processes are forked from a preloaded server (forkserver.py), GPU cells' are fresh
interpreters."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from quantbench import forkserver
from quantbench.worker import PROGRESS_PREFIX

_SRC = str(Path(__file__).resolve().parent.parent)


def _worker_env() -> dict:
    env = dict(os.environ)
    # The child must import this very quantbench, also when it runs from a source tree.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env["HF_HUB_OFFLINE"] = "1"  # models were resolved to local files before any cell ran
    # The same string hashing in every cell: one source of process-to-process spread the
    # cells of a run need not have.
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def _failure(message: str, stderr_tail: str = "") -> dict:
    return {"status": "failed", "error": message, "info": {"stderr_tail": stderr_tail}}


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child_setup(memory_limit: int | None, hard_limit: bool):
    """Runs in the worker between fork and exec: it dies with its parent (kill -9 of the run
    leaves no worker holding the device) and, on the CPU, cannot map more than the limit."""
    def setup():
        forkserver.die_with_parent()
        if memory_limit and hard_limit:
            forkserver.limit_data(memory_limit)
    return setup


_OOM_SIGNS = ("can't allocate memory", "cannot allocate memory", "memoryerror", "std::bad_alloc",
              "out of memory")


def _memory_failure(result: dict, memory_limit: int | None, stderr_tail: str) -> dict:
    """A cell that ran into --cell-memory-limit says so, with what it tried to allocate."""
    if not memory_limit or result.get("status") == "ok":
        return result
    text = f"{result.get('error', '')}\n{stderr_tail}".lower()
    if "cuda out of memory" in text.split("\n")[0] or not any(s in text for s in _OOM_SIGNS):
        return result
    from quantbench.config import size_text

    return {**result, "error": f"out of memory (limit {size_text(memory_limit)}, "
                               f"--cell-memory-limit): {result.get('error', '')}".rstrip(": "),
            "info": {**result.get("info", {}), "memory_limit_bytes": memory_limit}}


def run_cell(cell: dict, timeout_s: float | None, on_event=None,
             memory_limit: int | None = None, place_on: str | None = None,
             cancel=None) -> tuple[dict, float]:
    """Measure one cell (its CellConfig dict) in a subprocess; returns (result, wall seconds).
    With `memory_limit` (bytes) the worker cannot map more (CPU cells) and is killed once its
    resident memory passes it (every cell: also where a hard limit would break CUDA).
    `place_on`: the concrete device (cuda:N) of a cell whose device names a pool (cuda); with
    several GPUs here the worker sees only that one (CUDA_VISIBLE_DEVICES), as cuda:0.
    `cancel` (a threading.Event): set by the run when it is interrupted in another thread; the
    cell's processes are killed and KeyboardInterrupt raised here."""
    from quantbench.devices import visible_mask

    result, wall = _run(cell, timeout_s, on_event, memory_limit, place_on or cell["device"],
                        visible_mask(place_on or cell["device"]), cancel)
    if place_on and place_on != cell["device"] or result.get("status") == "ok" and \
            cell["device"].startswith("cuda"):
        result.setdefault("info", {})["placed_on"] = place_on or cell["device"]
    return result, wall


def _start(on_gpu: bool, argv: list[str], env: dict, log, memory_limit: int | None):
    """The cell's worker process: forked from the run's preloaded server (CPU cells), else a
    fresh interpreter (GPU cells, or where the server cannot start)."""
    server = None if on_gpu else forkserver.server_for(env)
    if server is not None:
        try:
            return server.start(argv, env, log, memory_limit)
        except (OSError, RuntimeError):
            pass  # the server is gone: this cell starts as cells always could
    return subprocess.Popen(
        [sys.executable, "-m", "quantbench.worker", *argv],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
        env=env, start_new_session=True, preexec_fn=_child_setup(memory_limit, not on_gpu))


def _run(cell: dict, timeout_s, on_event, memory_limit, device: str, mask: str | None, cancel):
    env = _worker_env()
    if mask is not None:
        env["CUDA_VISIBLE_DEVICES"] = mask
        device = "cuda:0"
    with tempfile.TemporaryDirectory(prefix="quantbench-cell-") as tmp:
        tmp = Path(tmp)
        cell_path, result_path, log_path = tmp / "cell.json", tmp / "result.json", tmp / "stderr.log"
        cell_path.write_text(json.dumps({**cell, "device": device}))
        start = time.perf_counter()
        with open(log_path, "w") as log:
            proc = _start(cell["device"].startswith("cuda"), [str(cell_path), str(result_path)],
                          env, log, memory_limit)
            lines: queue.Queue = queue.Queue()
            reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
            reader.start()
            timed_out = False
            over = 0
            try:
                while True:
                    try:
                        line = lines.get(timeout=0.2)
                    except queue.Empty:
                        line = None
                    if line is None and proc.poll() is not None and not reader.is_alive():
                        break
                    if cancel is not None and cancel.is_set():
                        raise KeyboardInterrupt
                    if line and line.startswith(PROGRESS_PREFIX) and on_event:
                        try:
                            on_event(json.loads(line[len(PROGRESS_PREFIX):]))
                        except ValueError:
                            pass
                    if timeout_s and time.perf_counter() - start > timeout_s and proc.poll() is None:
                        _kill(proc)
                        timed_out = True
                    if memory_limit and not over and proc.poll() is None:
                        rss = _rss_bytes(proc.pid)
                        if rss > memory_limit:
                            _kill(proc)
                            over = rss
            except BaseException:
                # Interrupted (Ctrl-C, SIGTERM): the worker has its own session, so it would
                # otherwise live on and hold the GPU.
                _kill(proc)
                raise
            proc.wait()
        wall = time.perf_counter() - start
        stderr_tail = _tail(log_path)
        if timed_out:
            return _failure(f"timed out after {timeout_s:g} s (--cell-timeout); the cell was "
                            "killed", stderr_tail), wall
        if over:
            from quantbench.config import size_text

            failure = _failure(f"out of memory (limit {size_text(memory_limit)}, "
                               f"--cell-memory-limit): killed at {size_text(over)} resident",
                               stderr_tail)
            failure["info"]["memory_limit_bytes"] = memory_limit
            return failure, wall
        if result_path.exists():
            result = json.loads(result_path.read_text())
            if result["status"] == "failed":
                result.setdefault("info", {})["stderr_tail"] = stderr_tail
            return _memory_failure(result, memory_limit, stderr_tail), wall
        code = proc.returncode
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (likely out of memory)" if -code == signal.SIGKILL else ""
            return _memory_failure(_failure(f"worker killed by {name}{hint}", stderr_tail),
                                   memory_limit, stderr_tail), wall
        last = [ln for ln in stderr_tail.splitlines() if ln.strip()]
        return _memory_failure(_failure(f"worker exited with status {code}: "
                                        f"{last[-1] if last else 'no output'}", stderr_tail),
                               memory_limit, stderr_tail), wall


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    stream.close()


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
