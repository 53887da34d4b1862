"""`python -m quantbench.hardware.profile DEVICE OUT.json`: measure a device once.

Copy bandwidth = (bytes read + bytes written) / time of a large device-to-device copy; matmul rate =
2 n^3 / time of an n x n matmul (bf16 on a GPU, fp32 on a CPU, where bf16 has no fast path).
Best of several repetitions: the ceiling is what the device can do, not its average.
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
    n = 8192 if cuda else 1024
    dtype = torch.bfloat16 if cuda else torch.float32
    mm_s = _matmul_seconds(timed, device, n, dtype, reps=20 if cuda else 3)
    return {"device": device,
            "name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
            "copy_bandwidth_Bps": 2 * nbytes / copy_s, "copy_bytes": nbytes,
            "matmul_flops": 2 * n ** 3 / mm_s, "matmul_dtype": str(dtype).replace("torch.", ""),
            "matmul_n": n, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _copy_seconds(timed, device: str, nbytes: int, reps: int) -> float:
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    return timed(lambda: dst.copy_(src), reps)


def _matmul_seconds(timed, device: str, n: int, dtype, reps: int) -> float:
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
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
