"""Launch configs for the weight-only kernel: tuned per shape on the device by timing each
candidate in a CUDA graph (how the compiled runtime replays it), kept in a JSON file per GPU
model and Triton version under $QUANTBENCH_CACHE/kernels/, so a shape is tuned once per machine
image and every later cell (and process) reads the choice."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass

# Bump when the kernel changes in a way that makes old timings meaningless.
KERNEL_VERSION = 4
# Registers the broadcast (non-tensor-core) path may spend on its element-wise accumulator:
# 64 fp32 values a thread, so BLOCK_M x BLOCK_N x BLOCK_K (int4: half, two nibbles a value)
# is at most 64 x 32 x warps.
_ACC_PER_THREAD = 64


@dataclass(frozen=True)
class Config:
    block_m: int
    block_n: int
    block_k: int
    split_k: int
    num_warps: int = 4
    num_stages: int = 2

    def astuple(self) -> tuple:
        return (self.block_m, self.block_n, self.block_k, self.split_k, self.num_warps,
                self.num_stages)

    def short(self) -> str:
        return (f"m{self.block_m} n{self.block_n} k{self.block_k} split{self.split_k} "
                f"w{self.num_warps} s{self.num_stages}")


def block_m_for(m: int) -> int:
    """Rows a program takes: all of a decode batch up to 8 (weights read once for every row,
    without tensor cores), 16/32 on tensor cores up to 32 rows, 64 beyond (prefill)."""
    if m <= 8:
        return 1 << max(0, (m - 1).bit_length())
    return 16 if m <= 16 else 32 if m <= 32 else 64


# (BLOCK_N, BLOCK_K, warps, stages) a decode shape is timed with: few, because each is a
# Triton compile (~0.5 s) and a cell's compile time is counted. Wide K tiles keep enough bytes
# in flight per program (every shape tuned on the H200 chose the widest offered); split-K
# (derived, not searched) fills the multiprocessors. The first is the untuned default.
_GEMV = ((8, 512, 4, 2), (16, 256, 4, 2), (16, 512, 8, 2), (4, 1024, 4, 2), (8, 1024, 8, 2),
         (32, 256, 8, 2), (16, 512, 4, 3))
# int4's broadcast tiles lie in one group (the kernel's _int4_gemv), so its table trades K
# for rows: 64 bytes of a row a tile with groups of 128.
_GEMV_INT4 = ((32, 128, 4, 2), (16, 128, 4, 2), (64, 128, 8, 2), (64, 64, 4, 2),
              (128, 64, 8, 2), (32, 128, 4, 3), (64, 128, 4, 2))
_DOT = ((32, 128, 4, 3), (64, 64, 4, 3), (64, 128, 8, 3), (128, 64, 8, 3))


def _split_for(tiles: int, k: int, block_k: int, sms: int) -> int:
    """The smallest split that puts two programs on every multiprocessor, while each program
    keeps at least two tiles of K."""
    split = 1
    while tiles * split < 2 * sms and k // (block_k * split * 2) >= 2 and split < 16:
        split *= 2
    return split


def _fit(fmt: str, m: int, n: int, k: int, group: int, sms: int, bm: int, bn: int, bk: int,
         warps: int, stages: int) -> Config | None:
    """A table entry made to fit the shape: the broadcast path's K tile shortened to its
    register budget and to K; None where int4's groups and the tile do not nest."""
    if fmt == "int4" and bk > group:  # int4's tiles lie in one group (the kernel's
        bn, bk = bn * bk // group, group  # _int4_gemv): as many bytes a tile, in more rows
    if bm < 16:
        per_value = 2 if fmt == "int4" else 1
        while bk > 32 and bm * bn * bk // per_value > _ACC_PER_THREAD * 32 * warps:
            bk //= 2
    bk = min(bk, max(32, 1 << (k - 1).bit_length()))
    if fmt == "int4" and group % bk:
        return None  # a tile lies in one group
    split = _split_for(-(-n // bn) * -(-m // bm), k, bk, sms)
    return Config(bm, bn, bk, split, warps, stages)


def candidates(fmt: str, m: int, n: int, k: int, group: int, sms: int) -> list[Config]:
    """Launch configs worth timing for a shape; [] beyond 32 rows (the prefill, which runs
    the default: its time is the first token's, not the decode's)."""
    bm = block_m_for(m)
    if bm > 32:
        return []
    gemv = _GEMV_INT4 if fmt == "int4" else _GEMV
    table = [(bm, *c) for c in (_DOT if bm >= 16 else gemv)]
    # A few rows: tensor cores on 16 (rows padded) may beat the broadcast; for int4 even one
    # row, whose broadcast path is bound by its arithmetic (dequantizing in fp32 per weight).
    if 2 < m <= 8 or (fmt == "int4" and m <= 8):
        table += [(16, *c) for c in _DOT]
    out = []
    for entry in table:
        config = _fit(fmt, m, n, k, group, sms, *entry)
        if config is not None and config not in out:
            out.append(config)
    return out


def default(fmt: str, m: int, n: int, k: int, group: int, sms: int = 132) -> Config:
    """Used where nothing was tuned (the CPU interpreter, a graph traced before any eager call):
    the first candidate, or for the prefill's rows a tensor-core tile."""
    found = candidates(fmt, m, n, k, group, sms)
    if found:
        return found[0]
    # No split: the prefill's rows fill the GPU, and fp32 partials of its logits would not fit.
    bk = min(64, group) if fmt == "int4" else 64  # int4: a tile lies in one group
    return Config(64, 64, bk, 1, 4, 2)


# ---- the cache --------------------------------------------------------------------------------
_lock = threading.Lock()
_tables: dict[str, dict] = {}


def _key(fmt: str, m: int, n: int, k: int, group: int) -> str:
    return f"{fmt}:m{block_m_for(m)}:n{n}:k{k}:g{group}"


def file_safe(device_name: str) -> str:
    """A GPU's name as a file-name part ("NVIDIA H200" -> "NVIDIA-H200")."""
    return "".join(c if c.isalnum() else "-" for c in device_name).strip("-")


def cache_path(device_name: str):
    import triton

    from quantbench.models import cache_dir

    return (cache_dir() / "kernels" /
            f"{file_safe(device_name)}-triton{triton.__version__}-v{KERNEL_VERSION}.json")


def _table(device_name: str) -> dict:
    with _lock:
        if device_name not in _tables:
            path = cache_path(device_name)
            try:
                _tables[device_name] = json.loads(path.read_text())
            except (OSError, ValueError):
                _tables[device_name] = {}
        return _tables[device_name]


def _save(device_name: str) -> None:
    path = cache_path(device_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(_tables[device_name], indent=1, sort_keys=True))
    os.replace(tmp, path)  # whole or not at all: parallel cells may tune the same shape


def lookup(device_name: str, fmt: str, m: int, n: int, k: int, group: int) -> dict | None:
    return _table(device_name).get(_key(fmt, m, n, k, group))


def tune(x2d, packed, device_name: str, sms: int) -> dict:
    """Time every candidate on these tensors; keep and return the fastest with its time."""
    import torch
    from triton.testing import do_bench_cudagraph

    from quantbench.kernels import ops

    m, k = x2d.shape
    n = packed.data.shape[0]
    key = _key(packed.fmt, m, n, k, packed.group)
    import time

    start = time.perf_counter()
    timings = []
    options = candidates(packed.fmt, m, n, k, packed.group, sms)
    if not options:  # the prefill: not worth a search
        return {"config": asdict(default(packed.fmt, m, n, k, packed.group, sms)), "us": 0.0,
                "candidates": 0, "GBps": 0.0, "untimed": "more than 32 rows: not timed"}
    for config in options:
        try:
            with torch.cuda.stream(torch.cuda.Stream()):
                ms = do_bench_cudagraph(ops.kernel_alone(x2d, packed, config), rep=10)
        except Exception:  # a config the compiler rejects (too many registers, ...)
            continue
        timings.append((ms, config))
    if not timings:
        raise RuntimeError(f"no launch config of the {packed.fmt} kernel ran for {key}")
    ms, best = min(timings, key=lambda t: t[0])
    entry = {"config": asdict(best), "us": ms * 1e3, "candidates": len(timings),
             "GBps": packed.nbytes / (ms * 1e-3) / 1e9,
             "tune_s": round(time.perf_counter() - start, 2)}
    _table(device_name)[key] = entry
    _save(device_name)
    return entry
