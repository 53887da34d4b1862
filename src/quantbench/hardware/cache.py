"""The hardware profile of a device, measured once in a child process and cached."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

from quantbench.config import stable_hash
from quantbench.errors import UsageError
from quantbench.hardware import datasheet


FORMAT = 2  # 2: read bandwidth and a matmul rate per dtype; older profiles are measured again


def _identity(device: str, env: dict) -> dict:
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        gpu = (env.get("gpus") or [{}])[min(index, len(env.get("gpus") or [{}]) - 1)]
        return {"device": device, "gpu": gpu.get("name"), "driver": gpu.get("driver"),
                "torch": (env.get("libraries") or {}).get("torch"), "format": FORMAT}
    return {"device": "cpu", "cpu": env.get("cpu"), "cores": env.get("cpu_cores_physical"),
            "torch": (env.get("libraries") or {}).get("torch"), "format": FORMAT}


def path_for(device: str, env: dict) -> Path:
    from quantbench.models import cache_dir

    return cache_dir() / "hardware" / f"{stable_hash(_identity(device, env))[:16]}.json"


def get(device: str, env: dict, refresh: bool = False, on_measure=None) -> dict:
    """Measured profile + datasheet figures for `device`; measures only when not cached."""
    path = path_for(device, env)
    if refresh or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with on_measure() if on_measure else contextlib.nullcontext():
            proc = subprocess.run([sys.executable, "-m", "quantbench.hardware.profile", device,
                                   str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise UsageError(f"could not measure {device}: {lines[-1] if lines else 'no output'}")
    profile = json.loads(path.read_text())
    profile["cached_at"] = str(path)
    spec = datasheet.lookup(profile.get("name", "")) if device.startswith("cuda") else None
    if spec:
        profile["datasheet"] = {"name": spec.name, "memory_bandwidth_Bps": spec.memory_bandwidth_gbs * 1e9,
                                "bf16_flops": spec.bf16_tflops * 1e12 if spec.bf16_tflops else None,
                                "note": spec.note}
    return profile
