"""What the measurements ran on: hardware, drivers and library versions."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import quantbench

LIBRARIES = ("torch", "transformers", "accelerate", "safetensors", "numpy", "torchao",
             "bitsandbytes", "optimum-quanto", "hqq", "gguf", "llama_cpp_python", "nvidia-ml-py")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_digest(package: Path | None = None) -> str:
    """The package's Python source, hashed: which code ran when the commit alone cannot say."""
    package = package or Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_commit() -> str | None:
    """HEAD, and for a tree with uncommitted changes `-dirty-<source digest>`: two runs of
    different uncommitted code on one HEAD must not pass for the same environment (a cell of
    the first would be reused by the second), nor must a copy of a tree whose git directory
    is older than its files (a lent GPU machine's)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    return f"{commit}-dirty-{source_digest(here)}" if dirty.stdout.strip() else commit


def host() -> dict:
    """Which machine: two lent machines can share every model and version number."""
    machine_id = None
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            machine_id = Path(path).read_text().strip() or None
        except OSError:
            continue
        if machine_id:
            break
    return {"hostname": platform.node(), "machine_id": machine_id}


def gpus() -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        return []
    found = []
    driver = None
    try:
        from quantbench.devices import open_nvml

        pynvml, _ = open_nvml()
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
    except Exception:  # NVML absent or not permitted: the driver version stays unknown
        pass
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        uuid = getattr(props, "uuid", None)  # which card: lent machines share every other field
        found.append({"index": i, "name": props.name, "memory_bytes": props.total_memory,
                      "capability": f"{props.major}.{props.minor}",
                      "multiprocessors": props.multi_processor_count, "driver": driver,
                      "uuid": f"GPU-{uuid}" if uuid is not None else None})
    return found


def collect() -> dict:
    import psutil
    import torch

    from quantbench import forkserver

    return {
        "quantbench": quantbench.__version__,
        "git_commit": git_commit(),
        "host": host(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "ram_bytes": psutil.virtual_memory().total,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpus": gpus(),
        "libraries": {name: v for name in LIBRARIES if (v := _version(name))},
        "cpu_cell_start": forkserver.mode(),
    }


def quantbench_version() -> str:
    import quantbench

    commit = git_commit()
    return quantbench.__version__ + (f" (git {commit})" if commit else "")


def rows(env: dict) -> list[tuple[str, str]]:
    """(item, value) pairs, the same for the terminal table and the Markdown one."""
    out = []
    for key in ("quantbench", "git_commit", "os", "python", "cpu", "cpu_cores_logical",
                "cpu_cores_physical", "ram_bytes", "torch_threads", "cpu_cell_start", "cuda"):
        value = env.get(key)
        if key == "ram_bytes" and value:
            value = f"{value / 2**30:.1f} GiB"
        out.append((key, str(value) if value is not None else "-"))
    for gpu in env.get("gpus", []):
        out.append((f"gpu {gpu['index']}", f"{gpu['name']}, {gpu['memory_bytes'] / 2**30:.1f} GiB, "
                    f"capability {gpu['capability']}, driver {gpu.get('driver') or '-'}"))
    if not env.get("gpus"):
        out.append(("gpu", "none"))
    out.extend((name, str(version)) for name, version in env.get("libraries", {}).items())
    return out


def to_markdown(env: dict) -> str:
    lines = ["| item | value |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in rows(env)]
    return "\n".join(lines)
