"""Starts CPU cells' workers from one preloaded interpreter instead of a fresh one each.

A CPU cell on a small model spent ~7 of its ~12 seconds importing torch and transformers. The
fork server imports them once per run, runs no cell itself, and forks a new process for every
cell: each cell still has its own process (its own peak memory, a crash or a kill ends only that
cell, no state of one cell is seen by the next), started in milliseconds.

GPU cells are still started with a fresh interpreter: a process that forks after anything
touched the CUDA driver hands its children a driver they cannot use, and a GPU cell's start is a
small part of its time.

Processes: the run -> server (`python -m quantbench.worker --serve`, its own session, exits when
the run's end of its stdin closes) -> one waiter per cell (reports the worker's pid and its exit
status) -> the cell's worker (its own session; dies with its waiter, the waiter with the server).
QUANTBENCH_CELL_START=exec starts every cell with a fresh interpreter instead.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# What every CPU cell imports; what a cell imports beyond this it imports itself.
PRELOAD = ("torch", "transformers", "transformers.models.llama.modeling_llama",
           "quantbench.worker", "quantbench.measure.loop", "quantbench.measure.memory",
           "quantbench.measure.telemetry", "quantbench.measure.contention", "quantbench.runtimes",
           "quantbench.schemes", "quantbench.models")
_READY = "ready"


def die_with_parent() -> None:
    """This process is killed when the one that started it ends (a kill -9 of the run leaves
    nothing holding a device or memory)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def limit_data(limit: int) -> None:
    """RLIMIT_DATA counts the private writable memory a process maps (heap, anonymous mappings),
    not reserved address space or mapped files: what filling RAM takes."""
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


# ---- the server's side ----------------------------------------------------------------------

def serve(path: str) -> int:
    """Preload, then fork a waiter for every connection until stdin closes."""
    import gc
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # the cell meets the same error itself, and records it
            pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    gc.collect()
    gc.freeze()  # the children's writes to these objects' headers do not copy every page
    # Reaped here, not by the kernel (SIG_IGN): a reaped child's CPU time joins this process's
    # children times, up to the run, which is how contention.py counts a finished cell's work
    # as its run's (or its group's) rather than a stranger's.
    signal.signal(signal.SIGCHLD, _reap)
    sys.stdout.write(_READY + "\n")
    sys.stdout.flush()
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([listener, stdin], [], [])
        if stdin in ready and not os.read(stdin, 4096):
            return 0  # the run ended, or was killed: the waiters and their workers follow
        if listener in ready:
            conn, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, stdin)  # fd 0 stays taken: received descriptors land above 2
                os.close(null)
                _waiter(conn)  # never returns
            conn.close()


def _reap(*_signal) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 4)
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 16)
        if not more:
            raise EOFError("the run closed the connection before its request was complete")
        data += more
    return json.loads(data), fds


def _waiter(conn: socket.socket) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # so this one can wait for its worker
        die_with_parent()
        request, fds = _receive(conn)
        pid = os.fork()
        if pid == 0:
            _worker(request, fds, conn)  # never returns
        for fd in fds:
            os.close(fd)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        conn.sendall(json.dumps({"status": status}).encode() + b"\n")
        code = 0
    finally:
        os._exit(code)


def _worker(request: dict, fds: list[int], conn: socket.socket) -> None:
    code = 1
    try:
        conn.close()
        os.setsid()  # the run kills the cell as a process group, as it does a spawned one
        die_with_parent()
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        for name in ("SIGINT", "SIGTERM", "SIGPIPE"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        if request.get("memory_limit"):
            limit_data(request["memory_limit"])
        from quantbench import worker

        worker._STARTED = time.perf_counter()
        worker.LAUNCH.update(how="fork server", started_by=request["started_by"],
                             torch_preloaded="torch" in sys.modules)
        sys.argv = ["quantbench.worker", *request["argv"]]
        code = worker.main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# ---- the run's side -------------------------------------------------------------------------

class ForkedCell:
    """The part of subprocess.Popen the executor uses, for a worker the server forked."""

    def __init__(self, conn: socket.socket, stdout, pid: int, received: bytes = b""):
        self._conn, self.stdout, self.pid = conn, stdout, pid
        self._buffer = received  # what the waiter sent after the pid
        self.returncode: int | None = None

    def _read_status(self, timeout: float | None) -> None:
        if self.returncode is not None:
            return
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._conn], [], [], timeout)
            if not ready:
                return
            more = self._conn.recv(4096)
            if not more:  # the waiter died without a word: the server was killed
                self.returncode = -signal.SIGKILL
                self._conn.close()
                return
            self._buffer += more
        status = json.loads(self._buffer.split(b"\n")[0])["status"]
        self.returncode = os.waitstatus_to_exitcode(status)
        self._conn.close()

    def poll(self) -> int | None:
        self._read_status(0)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            self._read_status(None)
        return self.returncode

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class ForkServer:
    def __init__(self, env: dict):
        self.env = env
        self._dir = tempfile.TemporaryDirectory(prefix="quantbench-forkserver-")
        self.path = os.path.join(self._dir.name, "socket")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "quantbench.worker", "--serve", self.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True, text=True)
        line = self.proc.stdout.readline().strip()
        if line != _READY:
            self.close()
            raise RuntimeError(f"the cells' fork server did not start ({line or 'no output'})")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def start(self, argv: list[str], env: dict, stderr, memory_limit: int | None) -> ForkedCell:
        read_end, write_end = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            request = {"argv": argv, "env": env, "cwd": os.getcwd(),
                       "memory_limit": memory_limit, "started_by": os.getpid()}
            try:
                socket.send_fds(conn, [json.dumps(request).encode() + b"\n"],
                                [write_end, stderr.fileno()])
            finally:
                os.close(write_end)  # the worker holds its own copy: EOF here when it exits
            buffer = b""
            while b"\n" not in buffer:
                more = conn.recv(4096)
                if not more:
                    raise RuntimeError("the cells' fork server stopped before the cell started")
                buffer += more
        except BaseException:
            conn.close()
            os.close(read_end)
            raise
        first, _, rest = buffer.partition(b"\n")
        return ForkedCell(conn, os.fdopen(read_end, "r"), json.loads(first)["pid"], rest)

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # the server's signal to exit
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
        self._dir.cleanup()


def mode() -> str:
    """How CPU cells start under this environment."""
    if os.environ.get("QUANTBENCH_CELL_START", "fork") == "exec" or not hasattr(os, "fork"):
        return "fresh interpreter"
    return "fork server"


_server: ForkServer | None = None
_lock = threading.Lock()


def shutdown() -> None:
    """Ends the run's server and reaps it, so that its CPU time (the preload, every cell's)
    joins the run's children times: a run that exits leaving it to init would hand another
    run's contention sampler seconds of work that belongs to no one it knows."""
    global _server
    with _lock:
        if _server is not None:
            _server.close()
            _server = None


atexit.register(shutdown)  # where a caller ends without saying so


def server_for(env: dict) -> ForkServer | None:
    """The run's server for cells of this environment; None where cells start as before."""
    global _server
    if mode() != "fork server":
        return None
    with _lock:
        if _server is not None and (_server.env != env or not _server.alive()):
            _server.close()
            _server = None
        if _server is None:
            try:
                _server = ForkServer(env)
            except Exception:
                return None  # cells start with a fresh interpreter, as they always could
        return _server
