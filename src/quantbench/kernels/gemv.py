"""quantbench's weight-only matmul kernel, in Triton: y[M, N] = x[M, K] @ dequant(w)[N, K]^T for
the small M of decoding (1-32 rows; larger M, the prefill, runs the same kernel on tensor cores).

One kernel for four weight formats, chosen at compile time (FORMAT):
  bf16  the plain weight (a split-K GEMV for comparison with cuBLAS),
  int8  symmetric, one fp32 scale per output row:           w = q * s[n]
  fp8   e4m3, one fp32 scale per output row:                w = q * s[n]
  int4  asymmetric, a scale and an offset per group of K:   w = q * s[n, g] + b[n, g]
        two values a byte along K (even k in the low nibble); "scale and offset" rather than
        "scale and zero point" makes the dequantization one multiply-add per weight. A K tile
        spans several groups (wide tiles keep enough bytes in flight), each group's scale and
        offset broadcast over its part of the tile.

Split-K: with few output rows (a 2048-wide layer is 64 tiles of 32 rows, on a 132-SM H200) one
program per tile leaves the GPU half empty, so SPLIT_K programs share a row tile's K range and
write fp32 partials that the caller sums (deterministic, no atomics, no zero-filled buffer).
"""

from __future__ import annotations

import triton
import triton.language as tl

FORMATS = {"bf16": 0, "int8": 1, "fp8": 2, "int4": 3}


@triton.jit
def wo_matmul_kernel(x_ptr, w_ptr, s_ptr, b_ptr, out_ptr,
                     M, N, K, stride_xm, stride_wn, stride_sn, stride_os, stride_om,
                     FORMAT: tl.constexpr, GROUP: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    # This program's share of K, whole tiles of it.
    k_span = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_begin = pid_k * k_span
    k_end = k_begin + k_span  # the last share may run past K: its loads are masked
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    x_dtype = x_ptr.dtype.element_ty
    if FORMAT == 3:
        HALF: tl.constexpr = BLOCK_K // 2
        # A tile spans whole groups (BLOCK_K a multiple of GROUP) or lies in one (a divisor).
        SUB: tl.constexpr = GROUP if GROUP < BLOCK_K else BLOCK_K
        NSUB: tl.constexpr = BLOCK_K // SUB
        offs_h = tl.arange(0, HALF)
        offs_sub = tl.arange(0, NSUB)
        for k0 in range(k_begin, k_end, BLOCK_K):
            # even and odd positions of the tile: the low and high nibbles of one byte each
            k_even = k0 + 2 * offs_h
            mask_k = k_even < K
            xm = mask_m[:, None] & mask_k[None, :]
            x_lo = tl.load(x_ptr + offs_m[:, None] * stride_xm + k_even[None, :], mask=xm, other=0.0)
            x_hi = tl.load(x_ptr + offs_m[:, None] * stride_xm + k_even[None, :] + 1, mask=xm,
                           other=0.0)
            packed = tl.load(w_ptr + offs_n[:, None] * stride_wn + (k0 // 2 + offs_h)[None, :],
                             mask=mask_n[:, None] & mask_k[None, :], other=0)
            groups = k0 // GROUP + offs_sub
            gm = mask_n[:, None] & (groups * GROUP < K)[None, :]
            s = tl.load(s_ptr + offs_n[:, None] * stride_sn + groups[None, :], mask=gm, other=0.0)
            b = tl.load(b_ptr + offs_n[:, None] * stride_sn + groups[None, :], mask=gm, other=0.0)
            # each group's scale and offset over its half of the tile's bytes
            s = tl.reshape(tl.broadcast_to(s.to(tl.float32)[:, :, None], (BLOCK_N, NSUB, SUB // 2)),
                           (BLOCK_N, HALF))
            b = tl.reshape(tl.broadcast_to(b.to(tl.float32)[:, :, None], (BLOCK_N, NSUB, SUB // 2)),
                           (BLOCK_N, HALF))
            w_lo = (packed & 0xF).to(tl.float32) * s + b
            w_hi = ((packed >> 4) & 0xF).to(tl.float32) * s + b
            if USE_DOT:
                acc += tl.dot(x_lo, tl.trans(w_lo.to(x_dtype)))
                acc += tl.dot(x_hi, tl.trans(w_hi.to(x_dtype)))
            else:
                acc += tl.sum(x_lo.to(tl.float32)[:, None, :] * w_lo[None, :, :], 2)
                acc += tl.sum(x_hi.to(tl.float32)[:, None, :] * w_hi[None, :, :], 2)
    else:
        offs_k = tl.arange(0, BLOCK_K)
        for k0 in range(k_begin, k_end, BLOCK_K):
            kk = k0 + offs_k
            mask_k = kk < K
            xt = tl.load(x_ptr + offs_m[:, None] * stride_xm + kk[None, :],
                         mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            wt = tl.load(w_ptr + offs_n[:, None] * stride_wn + kk[None, :],
                         mask=mask_n[:, None] & mask_k[None, :], other=0)
            if FORMAT == 2:  # fp8 bytes, stored as uint8
                wt = wt.to(tl.float8e4nv, bitcast=True)
            wt = wt.to(x_dtype)
            if USE_DOT:
                acc += tl.dot(xt, tl.trans(wt))
            else:
                acc += tl.sum(xt.to(tl.float32)[:, None, :] * wt.to(tl.float32)[None, :, :], 2)
        if FORMAT != 0:
            s = tl.load(s_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            acc = acc * s[None, :]
    out = out_ptr + pid_k * stride_os + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
