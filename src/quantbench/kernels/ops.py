"""The kernel as a torch operator (`torch.ops.quantbench.wo_matmul`): a `triton_op`, so
torch.compile sees the Triton kernel itself (no graph break, one launch in the step's CUDA
graph), and launch configs chosen per shape and device (ops' `config_for`, kernels/tuning.py).

Block sizes are arguments of the operator, not a `triton.autotune` inside it: the configs are
tuned once, eagerly, on real tensors (kernels.tuning), so what a compiled graph holds is a plain
launch that CUDA-graph capture can take, and the record can say which config ran."""

import functools
import os

import torch  # at module level: the operator's schema is read from its annotations

from quantbench.kernels.formats import PackedWeight


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.lru_cache(maxsize=None)
def _op():
    import triton
    from torch.library import triton_op, wrap_triton

    from quantbench.kernels.gemv import FORMATS, wo_matmul_kernel

    @triton_op("quantbench::wo_matmul", mutates_args=())
    def wo_matmul(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                  fmt: str, group: int, n: int, block_m: int, block_n: int, block_k: int,
                  split_k: int, num_warps: int, num_stages: int) -> torch.Tensor:
        m, k = x.shape
        use_dot = block_m >= 16
        if split_k > 1:
            out = torch.empty((split_k, m, n), dtype=torch.float32, device=x.device)
        else:
            out = torch.empty((1, m, n), dtype=x.dtype, device=x.device)
        grid = (triton.cdiv(n, block_n), split_k, triton.cdiv(m, block_m))
        wrap_triton(wo_matmul_kernel)[grid](
            x, w, scale, offset, out, m, n, k, x.stride(0), w.stride(0), scale.stride(0),
            out.stride(0), out.stride(1), FORMAT=FORMATS[fmt], GROUP=max(group, 1),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split_k, USE_DOT=use_dot,
            num_warps=num_warps, num_stages=num_stages)
        if split_k > 1:
            return out.sum(dim=0).to(x.dtype)
        return out[0]

    return torch.ops.quantbench.wo_matmul


def launch(x2d, weight, scale, offset, fmt: str, group: int, config: tuple):
    """x2d [M, K] (contiguous) times a packed weight; `config` is a tuning.Config as a tuple
    (plain ints: what a traced graph holds as constants)."""
    empty = torch.empty(0, device=x2d.device)  # for formats without scale or offset
    # Registered (by `register`) before any graph is traced: a traced call sees only the op.
    return torch.ops.quantbench.wo_matmul(x2d, weight, scale if scale is not None else empty,
                 offset if offset is not None else empty, fmt, group, weight.shape[0], *config)


def register() -> None:
    _op()


def matmul(x2d, packed: PackedWeight, config):
    register()
    return launch(x2d, packed.data, packed.scale, packed.offset, packed.fmt, packed.group,
                  config.astuple())
