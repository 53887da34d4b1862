"""`python -m quantbench.hardware.profile DEVICE OUT.json`: measure a device once.

Copy bandwidth = (bytes read + bytes written) / time of a large device-to-device copy; read
bandwidth = bytes / time of a sum over a large array (a read-dominated kernel, as a decode step's
weight reads are); matmul rate = 2 n^3 / time of an n x n matmul, per dtype the device has a path
for (fp32 and bf16 everywhere; int8 through torch._int_mm and float8 through torch._scaled_mm on
GPUs that have them). Best of several repetitions: the ceiling is what the device can do, not its
average.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _timer(device: str):
    import torch

    if device.startswith("cuda"):
        def timed(fn, reps):
            fn()
            torch.cuda.synchronize()
            best = float("inf")
            for _ in range(reps):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                best = min(best, start.elapsed_time(end) / 1e3)
            return best
    else:
        def timed(fn, reps):
            fn()
            best = float("inf")
            for _ in range(reps):
                start = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - start)
            return best
    return timed


def measure(device: str) -> dict:
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(device)
    timed = _timer(device)
    nbytes = (1 << 30) if cuda else (256 << 20)
    copy_s = _copy_seconds(timed, device, nbytes, reps=20 if cuda else 5)
    read_s = _read_seconds(timed, device, nbytes, reps=20 if cuda else 5)
    matmul = _matmuls(timed, device, cuda)
    headline = matmul["bfloat16" if cuda else "float32"]
    return {"device": device,
            "name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
            "copy_bandwidth_Bps": 2 * nbytes / copy_s, "copy_bytes": nbytes,
            "read_bandwidth_Bps": nbytes / read_s,
            "read_kernel": f"torch.sum over {nbytes >> 20} MiB of float32",
            "matmul_flops": headline["flops"], "matmul_dtype": "bfloat16" if cuda else "float32",
            "matmul_n": headline["n"], "matmul": matmul,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _matmuls(timed, device: str, cuda: bool) -> dict:
    """Matmul rate per dtype; a dtype without a path on this device is recorded with why."""
    import torch

    out = {}
    plan = ([("bfloat16", 8192), ("float16", 8192), ("float32", 4096), ("int8", 8192),
             ("float8", 8192)] if cuda else [("float32", 1024), ("bfloat16", 512)])
    for name, n in plan:
        try:
            seconds = _matmul_seconds(timed, device, n, name, reps=10 if cuda else 3)
            out[name] = {"flops": 2 * n ** 3 / seconds, "n": n}
        except Exception as exc:  # no kernel for it here (int8 on old GPUs, fp8 before Ada)
            out[name] = {"flops": None, "n": n, "reason": f"{type(exc).__name__}: {exc}"[:200]}
    return out


def _copy_seconds(timed, device: str, nbytes: int, reps: int) -> float:
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    return timed(lambda: dst.copy_(src), reps)


def _read_seconds(timed, device: str, nbytes: int, reps: int) -> float:
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    return timed(lambda: src.sum(), reps)


def _matmul_seconds(timed, device: str, n: int, dtype: str, reps: int) -> float:
    import torch

    if dtype == "int8":
        a = torch.randint(-8, 8, (n, n), device=device, dtype=torch.int8)
        b = torch.randint(-8, 8, (n, n), device=device, dtype=torch.int8).t()
        return timed(lambda: torch._int_mm(a, b), reps)
    if dtype == "float8":
        a = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, n, device=device).to(torch.float8_e4m3fn).t()
        one = torch.ones((), device=device)
        return timed(lambda: torch._scaled_mm(a, b, one, one, out_dtype=torch.bfloat16), reps)
    kind = getattr(torch, dtype)
    a = torch.randn(n, n, device=device, dtype=kind)
    b = torch.randn(n, n, device=device, dtype=kind)
    return timed(lambda: a @ b, reps)


def _cpu_name() -> str:
    from quantbench.environment import _cpu_name as name

    return name()


def main(argv: list[str]) -> int:
    device, out = argv
    data = measure(device)
    tmp = Path(out).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
