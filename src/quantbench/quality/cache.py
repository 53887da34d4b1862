"""Baseline log-probabilities, computed once per (model, token slice, windows, baseline scheme and
its settings, device type and model, torch and transformers versions, attention implementation)
and reused by every cell; stored in fp32 (fp16 storage biases KL).

Size: (eval tokens - 1) x vocabulary x 4 bytes: 2047 x 49152 x 4 = 402 MB for the bundled model
at the defaults. Location: $QUANTBENCH_CACHE/logits/ (default ~/.cache/quantbench/logits/).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from quantbench.config import stable_hash

FORMAT = 2  # bump when what is stored or keyed changes: old entries are then never read


def context(device: str) -> dict:
    """What else moves the baseline's logits: the device model (kernels differ by card), the
    libraries that compute them, and the attention implementation."""
    import importlib.metadata

    from quantbench.models import ATTENTION

    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(int(device.split(":")[1]) if ":" in device else 0)
    else:
        from quantbench.environment import _cpu_name

        name = _cpu_name()
    versions = {}
    for dist in ("torch", "transformers"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {"device_model": name, "attention": ATTENTION, **versions}


def key(model_fingerprint: str, quality_identity: dict, device_type: str, seed: int,
        ctx: dict | None = None) -> str:
    return stable_hash({"format": FORMAT, "model": model_fingerprint, "quality": quality_identity,
                        "device_type": device_type, "seed": seed, "context": ctx or {}})[:24]


def path_for(cache_key: str) -> Path:
    from quantbench.models import cache_dir

    return cache_dir() / "logits" / f"{cache_key}.npy"


def load(cache_key: str):
    path = path_for(cache_key)
    if not path.exists():
        return None
    return np.load(path, mmap_mode="r")


class Writer:
    """Rows written window by window into a memory-mapped temporary file, renamed when complete,
    so an interrupted computation never leaves a partial cache behind."""

    def __init__(self, cache_key: str, rows: int, vocab: int, meta: dict):
        self.path = path_for(cache_key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.npy")
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float32,
                                               shape=(rows, vocab))
        self.meta = meta

    def write(self, start: int, values: np.ndarray) -> None:
        self.array[start:start + len(values)] = values

    def commit(self):
        self.array.flush()
        del self.array
        os.replace(self.tmp, self.path)
        self.path.with_suffix(".json").write_text(json.dumps(self.meta, indent=2))
        return np.load(self.path, mmap_mode="r")

    def abandon(self) -> None:
        self.tmp.unlink(missing_ok=True)
