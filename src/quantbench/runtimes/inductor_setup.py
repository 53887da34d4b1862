"""The compiler's settings for the compiled runtimes, and where a compile's seconds went."""

from __future__ import annotations


def compile_phases() -> dict:
    """Where the compile's seconds went, by dynamo's own timers (tracing, AOT, inductor's
    lowering and code generation, Triton's kernel compilation), the largest first."""
    try:
        from torch._dynamo.utils import compile_times

        names, values = compile_times(repr="csv", aggregate=True)
        phases = {n: float(v) for n, v in zip(names, values)}
    except Exception:  # a private API: its absence costs the breakdown, not the cell
        return {}
    return dict(sorted(phases.items(), key=lambda kv: -kv[1])[:12])


# The compiler's settings, the same for every scheme of a comparison (torchao would otherwise
# turn on its own for its cells only). With coordinate-descent tuning inductor writes a batch-1
# matmul as its own Triton reduction and tunes its block sizes by timing them (its comment: "our
# matrix vector multiplies only achieve peak bandwidth with coordinate descent tuning"); without
# it the step calls cuBLAS. The runtimes differ only in this: compiled-plain (no tuning: the
# shortest compile), compiled (tuning, one direction at a time: gpt-fast's setting) and
# compiled-tuned (every direction: torchao's recommended setting, the longest compile).
#
# Tuning picks launch configs by timing, so two processes compiling the same graph can pick
# differently (the same 1B bf16 cell read 779.6-882.4 tok/s across four processes on one H200).
# Inductor stores each pick next to its kernel (`.best_config`) for later processes to reuse,
# but torch up to at least 2.11 drops the pick when it loads a graph from the FX cache through
# its static CUDA launcher, and tunes again (13-17 s on a 1B graph, and a new draw). Without
# the static launcher the pick is reused: measured on an H200 with torch 2.11, tuning on a
# cache hit fell from 15.8 to 1.6 s and the second process decoded within 0.4% of the first
# (docs/results/2026-11-29-h200-tuning-reuse.md). The launcher only saves host time per
# launch, which a CUDA graph's replay does not spend.
INDUCTOR = {"fx_graph_cache": True, "triton.unique_kernel_names": True,
            "force_fuse_int_mm_with_mul": True, "use_static_cuda_launcher": False}
TUNING = {"plain": {"coordinate_descent_tuning": False,
                    "coordinate_descent_check_all_directions": False},
          "one-direction": {"coordinate_descent_tuning": True,
                            "coordinate_descent_check_all_directions": False},
          "all-directions": {"coordinate_descent_tuning": True,
                             "coordinate_descent_check_all_directions": True}}


def inductor_settings(tuning: str) -> dict:
    return {**INDUCTOR, **TUNING[tuning]}


def apply_inductor(settings: dict) -> dict:
    """Set inductor's options; return those this torch knows, as set (the record keeps them)."""
    import torch._inductor.config as config

    applied = {}
    for name, value in settings.items():
        owner, _, leaf = name.rpartition(".")
        target = getattr(config, owner) if owner else config
        if hasattr(target, leaf):
            setattr(target, leaf, value)
            applied[name] = value
    return applied
