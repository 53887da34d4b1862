"""One run per device at a time: a machine-wide lock file per device (the CPU, each GPU by its
UUID), held by the run's process for its whole length. The kernel drops it when that process
ends, however it ends (kill -9 included), so a stale lock cannot block the next run."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from quantbench.errors import UsageError


class DeviceBusy(UsageError):
    """Another run holds the device: the CLI exits with status 4."""


def lock_dir() -> Path:
    return Path(os.environ.get("QUANTBENCH_LOCK_DIR") or Path(tempfile.gettempdir()) / "quantbench-locks")


def device_key(device: str) -> str:
    """'cpu', or 'cuda-<uuid>': cuda:0 names another card under another CUDA_VISIBLE_DEVICES."""
    if not device.startswith("cuda"):
        return "cpu"
    import torch

    index = int(device.split(":")[1]) if ":" in device else 0
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return f"cuda-{uuid}" if uuid else f"cuda-{index}"


@dataclass
class DeviceLock:
    device: str
    path: Path
    fd: int | None = None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # a lock directory every user of the machine can share
        os.chmod(path.parent, 0o1777)
    except OSError:
        pass
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's lock file: flock works on a read-only descriptor
        fd = os.open(path, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o666)
    except OSError:
        pass
    return fd


def holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(device: str, who: dict) -> str:
    if not who:
        return f"{device} is in use by another quantbench run"
    return (f"{device} is in use by another quantbench run (pid {who.get('pid', '?')}, since "
            f"{who.get('since', '?')}: {who.get('command') or 'Python API'})")


def acquire(device: str, command: str = "", wait: bool = False, on_wait=None) -> DeviceLock:
    """Take the device's lock; if another run holds it, wait (wait=True) or raise DeviceBusy.
    `on_wait(text)` is called once when waiting starts."""
    path = lock_dir() / f"{device_key(device)}.lock"
    fd = _open(path)
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            text = _describe(device, holder(path))
            if not wait:
                os.close(fd)
                raise DeviceBusy(f"{text}: two runs on one device measure each other; wait for "
                                 "it, pass --wait to queue behind it, or --allow-shared to "
                                 "measure anyway (its cells are then flagged as shared)") from None
            if not told and on_wait:
                on_wait(text)
                told = True
            time.sleep(0.5)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                  "command": command, "device": device}).encode(), 0)
    except OSError:
        pass  # a read-only lock file still locks; only the holder's description is lost
    return DeviceLock(device, path, fd)
