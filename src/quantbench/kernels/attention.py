"""Decode attention in Triton: one new token per sequence against a static KV cache, the
flash-decoding way (split the cache's positions across programs, combine the partial softmaxes).

Why not SDPA at a decode step: with a static cache, SDPA reads every position of the cache (the
prefill's and the empty ones beyond the current token, masked), needs a mask tensor built per
step, and transformers expands K and V to the query heads for grouped-query attention first (two
copy kernels a layer on the 1B preset: 32 of its 231 kernels a token, H100,
docs/results/2026-12-06-gemlite.md). This kernel reads only the positions written so far, takes
the current position from a device tensor (nothing frozen into a CUDA graph), and lets one
program serve a KV head's whole query group, so each K/V byte is read once.

Layout: q [B, Hq, 1, D], k and v [B, Hkv, L, D] (transformers' StaticCache), the position of the
token being decoded in `pos` ([1, 1] or [B, 1]: the cache holds positions 0..pos). Output
[B, 1, Hq, D], as transformers' attention functions return it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

# Positions a program reads per step of its loop: a 64 x 128 bf16 K tile is 16 KB.
BLOCK_N = 64
# Fewest positions worth a split of their own once the unsplit grid (a program per sequence and
# KV head) already busies over a quarter of the multiprocessors: then the combine kernel costs
# more than the parallelism saves. Below that, one block a split is worth it. H100,
# benchmarks/decode_attention.py, 264 positions: batch 1 (8 programs) 4.2 us in 5 splits
# against 5.2 us in 1; batch 8 (64 programs) 6.5 us in 1 split, 6.9-7.2 us in 2 or 5.
MIN_CHUNK = 256


@dataclass(frozen=True)
class Plan:
    """How a launch splits the cache: `splits` programs per KV head, `chunk` positions each
    (a multiple of BLOCK_N). splits == 1 writes the output directly; more add a combine."""

    splits: int
    chunk: int
    block_n: int = BLOCK_N
    num_warps: int = 4

    def short(self) -> str:
        return f"splits{self.splits} chunk{self.chunk} n{self.block_n} w{self.num_warps}"


def plan(batch: int, kv_heads: int, max_len: int, sms: int, splits: int | None = None) -> Plan:
    """Enough programs to give every multiprocessor one (B x Hkv x splits ~ sms); a split is
    never shorter than one block, nor than MIN_CHUNK positions where the unsplit grid already
    busies a quarter of the multiprocessors. `splits` forces a count (benchmarks)."""
    blocks = -(-max_len // BLOCK_N)
    if splits is None:
        programs = max(1, batch * kv_heads)
        most = blocks if 4 * programs <= sms else max_len // MIN_CHUNK
        splits = min(-(-sms // programs), most)
    splits = max(1, min(splits, blocks))
    chunk = -(-blocks // splits) * BLOCK_N
    return Plan(splits=-(-max_len // chunk), chunk=chunk)


def reference(q, k, v, pos, scale: float):
    """The kernel's definition in torch (fp32 math): what runs where Triton cannot, and what
    the tests hold the kernel to."""
    batch, q_heads, _, dim = q.shape
    kv_heads, length = k.shape[1], k.shape[2]
    group = q_heads // kv_heads
    qf = q.float().reshape(batch, kv_heads, group, dim)
    scores = torch.einsum("bhgd,bhnd->bhgn", qf, k.float()) * scale
    valid = torch.arange(length, device=q.device) <= pos.reshape(-1, 1, 1, 1)
    scores = scores.masked_fill(~valid, float("-inf"))
    # unwritten positions may hold anything, NaN included: 0 x NaN would still poison the sum
    v = v.float().masked_fill(~valid.reshape(-1, 1, length, 1), 0.0)
    out = torch.einsum("bhgn,bhnd->bhgd", scores.softmax(dim=-1), v)
    return out.reshape(batch, q_heads, 1, dim).transpose(1, 2).to(q.dtype)


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _launch(q, k, v, pos, scale, splits, chunk, block_n, num_warps, fold=None):
    """Both kernels of one decode attention; `fold` = (new_k, new_v, cos, sin) rotates and
    writes the step's key and value inside the split kernel (q then is before RoPE too)."""
    from quantbench.kernels.attention_kernels import (qb_decode_attention as split_kernel,
                                                      qb_decode_attention_combine as combine_kernel)

    batch, q_heads, _, dim = q.shape
    kv_heads = k.shape[1]
    group = q_heads // kv_heads
    out = torch.empty((batch, 1, q_heads, dim), dtype=q.dtype, device=q.device)
    if splits > 1:
        part = torch.empty((batch * q_heads * splits, dim), dtype=torch.float32,
                           device=q.device)
        lse = torch.empty((batch * q_heads * splits,), dtype=torch.float32, device=q.device)
    else:  # not read: the kernel writes the output itself
        part = lse = out
    if fold is None:  # not read: FOLD is off
        new_k = new_v = cos = sin = q
        fold_strides = (0,) * 6
    else:
        new_k, new_v, cos, sin = fold
        fold_strides = (new_k.stride(0), new_k.stride(1), new_v.stride(0), new_v.stride(1),
                        cos.stride(0) if cos.shape[0] > 1 else 0,
                        sin.stride(0) if sin.shape[0] > 1 else 0)
    block_d = max(16, _pow2(dim))  # tl.dot's smallest side
    split_kernel[(batch * kv_heads, splits)](
        q, k, v, pos, out, part, lse, new_k, new_v, cos, sin,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), pos.stride(0) if pos.shape[0] > 1 else 0,
        out.stride(0), out.stride(2), *fold_strides, scale * 1.4426950408889634,
        KV_HEADS=kv_heads, GROUP=group, BLOCK_G=max(16, _pow2(group)), HEAD_DIM=dim,
        BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=chunk, SPLITS=splits, FOLD=fold is not None,
        num_warps=num_warps)
    if splits > 1:
        combine_kernel[(batch * q_heads,)](
            part, lse, out, out.stride(0), out.stride(2), Q_HEADS=q_heads, HEAD_DIM=dim,
            BLOCK_D=block_d, SPLITS=splits, BLOCK_S=_pow2(splits), num_warps=4)
    return out


@functools.lru_cache(maxsize=None)
def _op():
    # Opaque custom_ops, not triton_ops: Inductor then calls them as they stand (the Triton JIT
    # launches the kernels, as in the eager step) instead of compiling the kernels itself. As a
    # triton_op, torch 2.11's Inductor failed every compiled-qb cell on an H100 (2026-12-06:
    # "SubprocException: An exception occurred in a subprocess") and the cells ran eager
    # kernels. Nothing is lost: Inductor fuses nothing into a user kernel, and the CUDA graph
    # replays the launches without the Python around them.
    from torch.library import custom_op

    @custom_op("quantbench::decode_attention", mutates_args=())
    def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                         scale: float, splits: int, chunk: int, block_n: int,
                         num_warps: int) -> torch.Tensor:
        return _launch(q, k, v, pos, scale, splits, chunk, block_n, num_warps)

    @decode_attention.register_fake
    def _(q, k, v, pos, scale, splits, chunk, block_n, num_warps):
        batch, q_heads, _, dim = q.shape
        return q.new_empty((batch, 1, q_heads, dim))

    # The cache is declared mutated: Inductor then orders the step's reads of it after this
    # call, and (the caches being the graph's inputs) writes in place, copying nothing.
    @custom_op("quantbench::decode_attention_folded", mutates_args=("k", "v"))
    def decode_attention_folded(q: torch.Tensor, new_k: torch.Tensor, new_v: torch.Tensor,
                                cos: torch.Tensor, sin: torch.Tensor, k: torch.Tensor,
                                v: torch.Tensor, pos: torch.Tensor, scale: float, splits: int,
                                chunk: int, block_n: int, num_warps: int) -> torch.Tensor:
        return _launch(q, k, v, pos, scale, splits, chunk, block_n, num_warps,
                       fold=(new_k, new_v, cos, sin))

    @decode_attention_folded.register_fake
    def _(q, new_k, new_v, cos, sin, k, v, pos, scale, splits, chunk, block_n, num_warps):
        batch, q_heads, _, dim = q.shape
        return q.new_empty((batch, 1, q_heads, dim))

    # The step's cos/sin, made buffers once. Each folded layer hands them to the opaque
    # operator above, and Inductor copies an input it left unrealized at every such call: one
    # or two small kernels a layer that recompute the rotary embedding (2026-12-06 profiles,
    # 8B batch 8: ~100 a token). Realized here, every layer reads the same two buffers.
    @custom_op("quantbench::rope_table", mutates_args=())
    def rope_table(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return cos.clone(), sin.clone()

    @rope_table.register_fake
    def _(cos, sin):
        return torch.empty_like(cos), torch.empty_like(sin)

    return torch.ops.quantbench


def register() -> None:
    """Before any graph is traced: a traced call then sees only the operator."""
    _op()


def decode_attention(q, k, v, pos, scale: float, chosen: Plan):
    """q [B, Hq, 1, D], k/v [B, Hkv, L, D] (last dimension contiguous), pos [1 or B, 1] ->
    [B, 1, Hq, D]."""
    if not torch.compiler.is_compiling():  # traced, the operator is there already (install)
        register()
    q, k, v = (_last_contiguous(t) for t in (q, k, v))
    pos = pos.reshape(-1)
    return torch.ops.quantbench.decode_attention(q, k, v, pos, float(scale), chosen.splits,
                                                 chosen.chunk, chosen.block_n, chosen.num_warps)


def rope_table(cos, sin):
    """cos/sin as buffers of their own, computed once a step (see _op)."""
    if not torch.compiler.is_compiling():
        register()
    return torch.ops.quantbench.rope_table(cos, sin)


def _last_contiguous(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def decode_attention_folded(q, new_k, new_v, cos, sin, k, v, pos, scale: float, chosen: Plan):
    """As decode_attention, from the step's q [B, Hq, 1, D], new_k and new_v [B, Hkv, 1, D]
    before RoPE (cos/sin [1 or B, 1, D], the model's rotary embedding of the step's position):
    writes the rotated key and the value into the cache k/v [B, Hkv, L, D] at `pos`, in place,
    and attends over positions 0..pos. -> [B, 1, Hq, D]."""
    if not torch.compiler.is_compiling():
        register()
    q, new_k, new_v = (_last_contiguous(t) for t in (q, new_k, new_v))
    cos, sin = (_last_contiguous(t.reshape(t.shape[0], t.shape[-1])) for t in (cos, sin))
    return torch.ops.quantbench.decode_attention_folded(
        q, new_k, new_v, cos, sin, k, v, pos.reshape(-1), float(scale), chosen.splits,
        chosen.chunk, chosen.block_n, chosen.num_warps)


def rotate(x, cos, sin):
    """Llama-family RoPE (rotate-half), in fp32, rounded once to x's dtype: as the folded
    kernel computes it (transformers rounds each product to the model's dtype)."""
    half = x.shape[-1] // 2
    xf = x.float()
    rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos.float() + rotated * sin.float()).to(x.dtype)


def reference_folded(q, new_k, new_v, cos, sin, k, v, pos, scale: float):
    """The folded kernel's definition in torch: rotate, write the cache at pos, attend."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [1 or B, 1, 1, D] against [B, H, 1, D]
    q, new_k = rotate(q, cos, sin), rotate(new_k, cos, sin)
    at = pos.reshape(-1)
    if at.numel() == 1:
        k.index_copy_(2, at, new_k.to(k.dtype))
        v.index_copy_(2, at, new_v.to(v.dtype))
    else:  # a position per sequence
        rows = torch.arange(k.shape[0], device=k.device)
        k[rows, :, at] = new_k[:, :, 0].to(k.dtype)
        v[rows, :, at] = new_v[:, :, 0].to(v.dtype)
    return reference(q, k, v, pos, scale)


def lower(head_dim: int, group: int, splits: int, arch: int = 90, dtype: str = "bf16",
          fold: bool = False):
    """The split kernel as a GPU of compute capability `arch` would run it, compiled on any
    machine (kernels.asm): its TTGIR and PTX."""
    from quantbench.kernels import asm
    from quantbench.kernels.attention_kernels import qb_decode_attention as split_kernel

    ptrs = {"q_ptr": f"*{dtype}", "k_ptr": f"*{dtype}", "v_ptr": f"*{dtype}", "pos_ptr": "*i64",
            "out_ptr": f"*{dtype}", "part_ptr": "*fp32" if splits > 1 else f"*{dtype}",
            "lse_ptr": "*fp32" if splits > 1 else f"*{dtype}", "new_k_ptr": f"*{dtype}",
            "new_v_ptr": f"*{dtype}", "cos_ptr": f"*{dtype}", "sin_ptr": f"*{dtype}"}
    strides = ["stride_qb", "stride_qh", "stride_kb", "stride_kh", "stride_kn", "stride_vb",
               "stride_vh", "stride_vn", "stride_pb", "stride_ob", "stride_oh", "stride_nkb",
               "stride_nkh", "stride_nvb", "stride_nvh", "stride_cb", "stride_sb"]
    sig = {**ptrs, **{name: "i32" for name in strides}, "scale_log2": "fp32"}
    consts = {"KV_HEADS": 8, "GROUP": group, "BLOCK_G": max(16, _pow2(group)),
              "HEAD_DIM": head_dim, "BLOCK_D": max(16, _pow2(head_dim)), "BLOCK_N": BLOCK_N,
              "CHUNK": BLOCK_N * 2, "SPLITS": splits, "FOLD": fold}
    # A static cache's strides are multiples of 16 elements, as are a fused projection's
    # (q, k and v slices of one row); pos's and cos/sin's batch strides may be 0.
    divisible = list(ptrs) + [s for s in strides if s not in ("stride_pb", "stride_cb",
                                                              "stride_sb")]
    return asm.compile_for(split_kernel, sig, consts, divisible, arch)
