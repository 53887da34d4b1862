"""How busy the machine was with other work while a cell's timed runs ran.

CPU: all cores' busy time (/proc/stat) less this process's own (os.times), over the wall time,
in cores. GPU: compute processes on the cell's GPU other than this one (NVML). A cell is
contended when others used at least CONTENDED_CORES (or 5% of the cores, on big machines) or
another process computed on its GPU; such a cell is flagged in every output and never reused.
Processes that share this one's QUANTBENCH_CONTENTION_GROUP are not others (see GROUP_ENV).
"""

from __future__ import annotations

from quantbench.devices import open_nvml

import os
import threading
import time

CONTENDED_CORES = 0.3
# Below this many CPU-seconds of other work nothing is claimed: /proc/stat counts in 10 ms
# ticks, so a window of a few hundredths of a second cannot tell 0.3 cores from rounding.
MIN_OTHER_SECONDS = 0.1


def _cpu_busy_s() -> float | None:
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_s(run_pid: int) -> float:
    """This process and the run that started it (its progress display is not contention)."""
    t = os.times()
    return t.user + t.system + _process_s(run_pid)


def _run_tree(run_pid: int) -> tuple[float, set[int]]:
    """CPU seconds of the run that started this cell and everything it started (this cell, the
    cells measuring beside it on other GPUs, their compile workers, the fork server), dead
    children included through their parents' children times; and their pids, with this one's."""
    import psutil

    try:
        parent = psutil.Process(run_pid)
        procs = [parent] + parent.children(recursive=True)
    except psutil.Error:
        return _own_s(run_pid), {os.getpid()}
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total, {p.pid for p in procs} | {os.getpid()}


# Runs started together on purpose (a test suite's parallel workers, a CI matrix on one box)
# can declare themselves one group: each then counts the others' CPU time as its own run's, not
# as contention, and the record says how much of it there was.
GROUP_ENV = "QUANTBENCH_CONTENTION_GROUP"


def _group_snapshot(exclude: set[int]) -> dict[tuple[int, float], tuple[float, float, int]]:
    """Own CPU seconds, reaped children's CPU seconds and parent of each live process of this
    process's declared group outside `exclude` (this run's own tree), keyed by (pid, start)."""
    import psutil

    group = os.environ.get(GROUP_ENV)
    seen = {}
    for proc in psutil.process_iter():
        if proc.pid in exclude:
            continue
        try:
            if proc.environ().get(GROUP_ENV) != group:
                continue
            t = proc.cpu_times()
            seen[(proc.pid, proc.create_time())] = (t.user + t.system,
                                                    t.children_user + t.children_system,
                                                    proc.ppid())
        except (psutil.Error, OSError):
            pass
    return seen


class GroupLedger:
    """The declared group's CPU seconds over a window, process by process, sampled at its ends
    and every second between. Summing the live processes alone took a member's whole past away
    when it ended: a stopped daemon, a killed run's orphans, a Ray worker (Ray's raylet leaves
    its workers to the kernel to reap), all made the group's work look like a stranger's
    (2026-12-06).

    A member that ends inside the window counts what it was last seen to use, unless its parent
    is seen to have taken it into its children times: the parent outlived it (was seen after
    it was gone), its children times grew by at least what the member had used, and the parent
    is alive at the end or itself so held. Where that cannot be seen (the two last seen in the
    same sample), the member counts: the ledger errs towards the group, not a stranger."""

    def __init__(self):
        # key -> {sample index: (own, children, parent)}; sample 1 is the window's start
        self.history: dict = {}
        self.alive: dict = {}
        self.samples = 0
        self._lock = threading.Lock()

    def sample(self, exclude: set[int]) -> None:
        snapshot = _group_snapshot(exclude)
        with self._lock:
            self.samples += 1
            for key, value in snapshot.items():
                self.history.setdefault(key, {})[self.samples] = value
            self.alive = snapshot

    def _held(self, key, by_pid: dict, live: set[int], depth: int = 0) -> bool:
        """Whether this ended member's time is in a live process's children times."""
        seen = max(self.history[key])
        own, children, parent = self.history[key][seen]
        if parent not in by_pid:  # this run's own tree (excluded from the snapshots), or init
            return parent in live
        parent_key = by_pid[parent]
        history = self.history[parent_key]
        last = max(history)
        if last <= seen or depth > 16:
            return False  # not seen to outlive it
        before = max((i for i in history if i <= seen), default=None)
        gained = history[last][1] - (history[before][1] if before is not None else 0.0)
        if gained < 0.9 * (own + children):
            return False  # a parent that lets the kernel reap its children
        return parent_key in self.alive or self._held(parent_key, by_pid, live, depth + 1)

    def seconds(self, run_tree: set[int]) -> float:
        with self._lock:
            live = {pid for pid, _ in self.alive} | run_tree
            by_pid = {pid: (pid, start) for pid, start in self.history}
            total = 0.0
            for key, history in self.history.items():
                if key not in self.alive and self._held(key, by_pid, live):
                    continue
                own, children, _ = history[max(history)]
                start_own, start_children, _ = history.get(1, (0.0, 0.0, 0))
                total += max(0.0, own + children - start_own - start_children)
            return total


def _process_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def gpu_pids(device: str) -> set[int] | None:
    """Processes with a compute context on the device, as NVML numbers them (in a container
    these can be the host's pids, not ours)."""
    index = _nvml_index(device)
    if index is None:
        return None
    try:
        pynvml, handle = open_nvml(index)
        return {p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)}
    except Exception as exc:  # NVML absent or not permitted: said in the record, not guessed
        global NVML_ERROR
        NVML_ERROR = f"{type(exc).__name__}: {exc}"
        return None


NVML_ERROR: str | None = None


def _nvml_index(device: str) -> int | None:
    """torch's index of the device; devices.open_nvml finds NVML's GPU for it."""
    if not device.startswith("cuda"):
        return None
    return int(device.split(":")[1]) if ":" in device else 0


class LoadSampler:
    """`with LoadSampler(device) as s: ...` then `s.result()`."""

    def __init__(self, device: str, own_gpu_pids: set[int] = frozenset(),
                 run_pid: int | None = None):
        """`own_gpu_pids`: this process as NVML numbers it, where that differs from
        os.getpid() (seen by the worker as the pid that appeared with its CUDA context).
        `run_pid`: the run that asked for this cell (worker.LAUNCH["started_by"]); the parent
        by default, but a forked cell's parent is the fork server's waiter, not the run."""
        self.device = device
        self.run_pid = run_pid or os.getppid()
        self.own = set(own_gpu_pids) | {os.getpid()}
        self.gpu_index = _nvml_index(device)
        self.cores = os.cpu_count() or 1
        self._start = None
        self._gpu_pids: set[int] = set()
        self._gpu_known = False

    def _gpu_sample(self) -> None:
        if self.gpu_index is None:
            return
        pids = gpu_pids(self.device)
        if pids is not None:
            self._gpu_known = True
            self._gpu_pids.update(pids - self.own)

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            self._gpu_sample()
            if self._group is not None:
                self._group.sample(_run_tree(self.run_pid)[1])

    def _sample(self) -> tuple:
        run = self.run_pid
        tree_s, tree = _run_tree(run)
        if self._group is not None:
            self._group.sample(tree)
        return time.monotonic(), _cpu_busy_s(), _own_s(run), tree_s, tree

    def __enter__(self):
        self._gpu_sample()
        self._group = GroupLedger() if os.environ.get(GROUP_ENV) else None
        self._stop = threading.Event()
        self._thread = None
        # A process that comes and goes mid-run is seen too: on the GPU, and in the group.
        if self._gpu_known or self._group is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        self._start = self._sample()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._end = self._sample()
        self._gpu_sample()

    def result(self) -> dict:
        (t0, busy0, own0, tree0, _), (t1, busy1, own1, tree1, pids1) = self._start, self._end
        wall = max(t1 - t0, 1e-9)
        out: dict = {"cpu_cores": self.cores, "seconds": wall}
        reasons = []
        if busy0 is not None and busy1 is not None:
            # The run's other cells (other GPUs of a sweep) are not strangers: they are
            # recorded apart, and count only when the machine had no core left for this cell.
            run_s = max(own1 - own0, tree1 - tree0)
            group_s = self._group.seconds(pids1) if self._group is not None else 0.0
            other_s = max(0.0, (busy1 - busy0) - run_s - group_s)
            if os.environ.get(GROUP_ENV):
                out["group"] = os.environ[GROUP_ENV]
                out["group_cpu_cores"] = group_s / wall
            others = other_s / wall
            siblings = max(0.0, (tree1 - tree0) - (own1 - own0)) / wall
            out["other_cpu_cores"] = others
            out["run_other_cells_cpu_cores"] = siblings
            limit = max(CONTENDED_CORES, 0.05 * self.cores)
            out["other_cpu_threshold"] = limit
            if others >= limit and other_s >= MIN_OTHER_SECONDS:
                reasons.append(f"other processes used {others:.1f} of {self.cores} CPU cores")
            elif (busy1 - busy0) / wall > 0.9 * self.cores and siblings >= limit:
                reasons.append(f"the CPU was saturated ({(busy1 - busy0) / wall:.1f} of "
                               f"{self.cores} cores busy), {siblings:.1f} of them by this "
                               "run's other cells")
        else:
            out["other_cpu_cores"] = None
        if self.gpu_index is not None:
            out["gpu_other_pids"] = sorted(self._gpu_pids) if self._gpu_known else None
            if not self._gpu_known:
                out["gpu_reason"] = f"NVML could not list the GPU's processes ({NVML_ERROR})"
            if self._gpu_pids:
                reasons.append(f"{len(self._gpu_pids)} other process(es) computed on the GPU "
                               f"(pid {', '.join(map(str, sorted(self._gpu_pids)))})")
        out["contended"] = bool(reasons)
        if reasons:
            out["reason"] = "; ".join(reasons)
        return out


def contention_flag(info: dict) -> str | None:
    """Why a cell's figures are not clean (measured under contention, or with --allow-shared),
    or None."""
    load = info.get("contention") or {}
    reasons = [load["reason"]] if load.get("contended") else []
    if info.get("shared"):
        reasons.append("measured with --allow-shared")
    return "; ".join(reasons) or None
