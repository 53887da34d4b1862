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


def prepare(x, w, fmt: str, group: int, block_m: int, block_k: int, split_k: int):
    """What the kernel reads for this launch: (activations, weight, sums of activations).
    The CUDA-core int4 and int8 paths read the activations in fp32 (no conversion a weight),
    laid out in planes against the weight read as 32-bit words, and need sums of them: int4
    each group's, int8 each split-K program's share of K (gemv._int4_gemv, _int8_gemv). All
    small and one pass; under torch.compile they fuse into the kernel that made x."""
    import triton

    m, k = x.shape
    if fmt not in ("int4", "int8") or block_m >= 16:
        return x, w, x.new_empty(0, dtype=torch.float32)
    x32 = x.float()
    if fmt == "int4":
        sums = x32.view(m, k // group, group).sum(dim=2)
        # each group as eight planes: plane 4h + b holds the inputs that nibble h of byte b of
        # the group's words meets
        planes = x32.view(m, k // group, 2, group // 8, 4).transpose(3, 4).contiguous()
        return planes.view(m, k), w.view(torch.int32), sums
    # K padded to whole tiles for every program, then four planes (plane b: inputs 4i + b)
    span = triton.cdiv(triton.cdiv(k, split_k), block_k) * block_k
    padded = torch.nn.functional.pad(x32, (0, span * split_k - k))
    sums = padded.view(m, split_k, span).sum(dim=2)
    return padded.view(m, -1, 4).transpose(1, 2).contiguous(), w.view(torch.int32), sums


def run_kernel(kernel, x_in, w_in, scale, offset, sums, m: int, n: int, k: int, dtype, fmt: str,
               group: int, block_m: int, block_n: int, block_k: int, split_k: int,
               num_warps: int, num_stages: int):
    """The launch itself on prepared inputs (`kernel`: the Triton kernel, or it wrapped for a
    traced graph); returns the output, or its fp32 split-K partials [split_k, M, N]."""
    import triton

    from quantbench.kernels.gemv import FORMATS

    if split_k > 1:
        out = torch.empty((split_k, m, n), dtype=torch.float32, device=x_in.device)
    else:
        out = torch.empty((1, m, n), dtype=dtype, device=x_in.device)
    grid = (triton.cdiv(n, block_n), split_k, triton.cdiv(m, block_m))
    kernel[grid](
        x_in, w_in, scale, offset, sums, out, m, n, k, x_in.stride(0), w_in.stride(0),
        scale.stride(0), sums.stride(0), out.stride(0), out.stride(1),
        FORMAT=FORMATS[fmt], GROUP=max(group, 1), BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_K=block_k, SPLIT_K=split_k, USE_DOT=block_m >= 16, num_warps=num_warps,
        num_stages=num_stages)
    return out


@functools.lru_cache(maxsize=None)
def _op():
    from torch.library import triton_op, wrap_triton

    from quantbench.kernels.gemv import wo_matmul_kernel

    @triton_op("quantbench::wo_matmul", mutates_args=())
    def wo_matmul(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                  fmt: str, group: int, n: int, block_m: int, block_n: int, block_k: int,
                  split_k: int, num_warps: int, num_stages: int) -> torch.Tensor:
        m, k = x.shape
        x_in, w_in, sums = prepare(x, w, fmt, group, block_m, block_k, split_k)
        out = run_kernel(wrap_triton(wo_matmul_kernel), x_in, w_in, scale, offset, sums, m, n, k,
                         x.dtype, fmt, group, block_m, block_n, block_k, split_k, num_warps,
                         num_stages)
        if split_k > 1:
            return out.sum(dim=0).to(x.dtype)
        return out[0]

    return torch.ops.quantbench.wo_matmul


def launch(x2d, weight, scale, offset, fmt: str, group: int, config: tuple):
    """x2d [M, K] (contiguous) times a packed weight; `config` is a tuning.Config as a tuple
    (plain ints: what a traced graph holds as constants)."""
    scale, offset = _present(scale, offset, x2d.device)
    # Registered (by `register`) before any graph is traced: a traced call sees only the op.
    return torch.ops.quantbench.wo_matmul(x2d, weight, scale, offset, fmt, group,
                                          weight.shape[0], *config)


def _present(scale, offset, device):
    """Scale and offset as tensors: empty ones for formats without them."""
    empty = torch.empty(0, device=device)
    return (scale if scale is not None else empty, offset if offset is not None else empty)


def register() -> None:
    _op()


def matmul(x2d, packed: PackedWeight, config):
    register()
    return launch(x2d, packed.data, packed.scale, packed.offset, packed.fmt, packed.group,
                  config.astuple())


def kernel_alone(x2d, packed: PackedWeight, config):
    """A callable of no arguments that runs only the kernel on inputs prepared once: what the
    tuner times. The preparation (prepare) is the same for every CUDA-core config and, in the
    compiled step, fused into the kernel that made the activations; timed eagerly it would add
    a few microseconds of launches to those configs and none to the tensor-core ones."""
    from quantbench.kernels.gemv import wo_matmul_kernel

    m, k = x2d.shape
    n = packed.data.shape[0]
    scale, offset = _present(packed.scale, packed.offset, x2d.device)
    x_in, w_in, sums = prepare(x2d, packed.data, packed.fmt, packed.group, config.block_m,
                               config.block_k, config.split_k)
    args = (x_in, w_in, scale, offset, sums, m, n, k, x2d.dtype, packed.fmt,
            max(packed.group, 1), *config.astuple())

    def run():
        out = run_kernel(wo_matmul_kernel, *args)
        # the split-K partials' sum stays in: a kernel of its own in an eager step, and in
        # the compiled one fused into the next kernel only in part
        return out.sum(dim=0) if config.split_k > 1 else out
    return run
