"""Where a compiled decode step's time goes: the kernels of a few CUDA-graph replays, counted
and timed by torch's profiler, by name and by coarse family."""

from __future__ import annotations

from quantbench.errors import error_text


def first_and_last_error(exc: BaseException) -> str:
    """The first error of a chain, then the last: a capture that fails inside the step ends in
    `torch.cuda.graph`'s exit raising "operation failed due to a previous error during
    capture", which hides the operation that broke it."""
    first = exc
    seen = {id(exc)}
    while (earlier := first.__cause__ or first.__context__) is not None and id(earlier) not in seen:
        seen.add(id(earlier))
        first = earlier
    text = error_text(first) if first is exc else f"{error_text(first)} (then {error_text(exc)})"
    return text[:500]  # compile errors can carry a whole graph in their first line


def kernel_kind(name: str) -> str:
    """A coarse family per kernel, for where a step's time goes."""
    low = name.lower()
    if low.startswith("triton"):  # inductor's fusions, named after every op they hold
        return "fused (triton)"
    if any(k in low for k in ("flash", "fmha", "sdpa", "attention")):
        return "attention"
    if any(k in low for k in ("dequant", "unpack", "int4pack", "int8pack", "_weight_int")):
        return "dequant/quantized matmul"
    if any(k in low for k in ("gemm", "gemv", "matmul", "cutlass", "xmma", "nvjet", "splitk",
                              "cublas", "mm_kernel", "kgemm")):
        return "matmul"
    if "memcpy" in low or "memset" in low:
        return "copy"
    return "other"


def profile_replays(replay, steps: int, sync) -> dict:
    """Kernels of `steps` calls of `replay` (a CUDA graph's): how many a token, how long, of
    which kind; the ten longest by name."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    try:
        sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                replay()
            sync()
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    except Exception as exc:
        return {"error": first_and_last_error(exc)}
    if not kernels:
        return {"error": "the profiler saw no kernels inside the graph replays"}

    def us(event):
        return float(getattr(event, "device_time_total", 0.0) or 0.0)

    by_name: dict[str, list[float]] = {}
    for event in kernels:
        by_name.setdefault(event.name, []).append(us(event))
    by_kind: dict[str, dict] = {}
    for name, times in by_name.items():
        kind = by_kind.setdefault(kernel_kind(name), {"kernels_per_token": 0.0,
                                                      "us_per_token": 0.0})
        kind["kernels_per_token"] += len(times) / steps
        kind["us_per_token"] += sum(times) / steps
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:10]
    return {
        "steps": steps,
        "kernels_per_token": len(kernels) / steps,
        "kernel_us_per_token": sum(us(e) for e in kernels) / steps,
        "by_kind": by_kind,
        "top": [{"name": name[:160], "kind": kernel_kind(name),
                 "per_token": len(t) / steps, "us_per_token": sum(t) / steps}
                for name, t in top]}
