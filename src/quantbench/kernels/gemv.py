"""quantbench's weight-only matmul kernel, in Triton: y[M, N] = x[M, K] @ dequant(w)[N, K]^T for
the small M of decoding (1-32 rows; larger M, the prefill, runs the same kernel on tensor cores).

One kernel for four weight formats, chosen at compile time (FORMAT):
  bf16  the plain weight (a split-K GEMV for comparison with cuBLAS),
  int8  symmetric, one fp32 scale per output row:           w = q * s[n]
  fp8   e4m3, one fp32 scale per output row:                w = q * s[n]
  int4  asymmetric, a scale and an offset per group of K:   w = q * s[n, g] + b[n, g]
        two values a byte: byte j of a group holds its positions j (low nibble) and j + G/2
        (high), so the inputs either nibble meets are contiguous loads; "scale and offset"
        rather than "scale and zero point" makes the dequantization one multiply-add per
        weight. A K tile lies in one group, so a row's scale and offset are one value a tile;
        tiles of more rows keep enough bytes in flight.

Two paths: up to 8 rows on CUDA cores (_gemv, _int4_gemv: products accumulated element-wise and
reduced once), 16 rows and more on tensor cores (_dot_tiles). `python -m quantbench.kernels.asm`
shows how a launch config lowers for a GPU, on any machine.

Split-K: with few output rows (a 2048-wide layer is 64 tiles of 32 rows, on a 132-SM H200) one
program per tile leaves the GPU half empty, so SPLIT_K programs share a row tile's K range and
write fp32 partials that the caller sums (deterministic, no atomics, no zero-filled buffer).
"""

from __future__ import annotations

import triton
import triton.language as tl

FORMATS = {"bf16": 0, "int8": 1, "fp8": 2, "int4": 3}


# Integers to floats without the conversion instruction (a quarter of the FMA rate on recent
# GPUs, which made the first kernels arithmetic-bound): an integer 0 <= v < 2^23 in the low
# bits of 2^23's float pattern is the float 2^23 + v, so one integer op and one subtraction.
_MAGIC = tl.constexpr(0x4B000000)  # the bits of 8388608.0


@triton.jit
def _nibble(v):
    return (v.to(tl.int32) | _MAGIC).to(tl.float32, bitcast=True) - 8388608.0


@triton.jit
def _int8(v):  # signed: shifted by 128 into 1..255 first
    return (v.to(tl.int32) + (_MAGIC + 128)).to(tl.float32, bitcast=True) - 8388736.0


@triton.jit
def _gemv(x_ptr, w_ptr, offs_m, offs_n, mask_m, mask_n, K, k_begin, k_end, stride_xm, stride_wn,
          FORMAT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
          BLOCK_K: tl.constexpr):
    """bf16/int8/fp8 on CUDA cores, for a few rows: products accumulate element-wise in
    registers across the K loop and are reduced once at the end (a reduction per tile would
    shuffle across threads every iteration). Both operands are addressed in the accumulator's
    full [rows, outputs, K] shape, so they load straight into its register layout: a broadcast
    operand was moved through shared memory every iteration."""
    m3 = offs_m[:, None, None]
    n3 = offs_n[None, :, None]
    mask_mn = mask_m[:, None, None] & mask_n[None, :, None]
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        kk = (k0 + offs_k)[None, None, :]
        mask = mask_mn & (kk < K)
        xt = tl.load(x_ptr + m3 * stride_xm + n3 * 0 + kk, mask=mask, other=0.0).to(tl.float32)
        wt = tl.load(w_ptr + n3 * stride_wn + m3 * 0 + kk, mask=mask, other=0)
        if FORMAT == 1:
            w = _int8(wt)
        elif FORMAT == 2:  # fp8 bytes, stored as uint8
            w = wt.to(tl.float8e4nv, bitcast=True).to(tl.float32)
        else:
            w = wt.to(tl.float32)
        acc += xt * w
    return tl.sum(acc, 2)


@triton.jit
def _int4_gemv(x_ptr, w_ptr, s_ptr, b_ptr, offs_m, offs_n, mask_m, mask_n, K, k_begin, k_end,
               stride_xm, stride_wn, stride_sn, GROUP: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """int4 on CUDA cores. A tile lies inside one group (BLOCK_K divides GROUP: the tuner gives
    more rows instead of wider tiles), so a row's scale and offset are one value each, loaded
    in the accumulator's layout; every operand is addressed in the accumulator's full
    [rows, outputs, bytes] shape (as in _gemv)."""
    HS: tl.constexpr = BLOCK_K // 2  # bytes of a row in the tile
    HG: tl.constexpr = GROUP // 2  # bytes of a group: the high nibbles' inputs are HG on
    m3 = offs_m[:, None, None]
    n3 = offs_n[None, :, None]
    j3 = tl.arange(0, HS)[None, None, :]
    mask_mn = mask_m[:, None, None] & mask_n[None, :, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N, HS), dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        group = k0 // GROUP
        # K is whole groups, so a tile is all in or all out (as tensors: the interpreter's
        # loads take no scalar masks)
        mask = mask_mn & (j3 * 0 + k0 < K)
        # The tile's first byte, and its low nibbles' first input: k0 = group * GROUP + r holds
        # bytes group * HG + r / 2 on, whose low nibbles are inputs group * GROUP + r / 2 on.
        # Hinted as whole tiles, so both load 16 bytes at a time.
        byte0 = tl.multiple_of(k0 // 2, HS)
        k_lo = tl.multiple_of(byte0 + group * HG, HS)
        xp = x_ptr + m3 * stride_xm + n3 * 0 + k_lo + j3
        x_lo = tl.load(xp, mask=mask, other=0.0).to(tl.float32)
        x_hi = tl.load(xp + HG, mask=mask, other=0.0).to(tl.float32)
        packed = tl.load(w_ptr + n3 * stride_wn + m3 * 0 + byte0 + j3, mask=mask, other=0)
        sb = n3 * stride_sn + group  # [1, BLOCK_N, 1]: small, loaded in the accumulator's layout
        sb_mask = mask_n[None, :, None] & (n3 * 0 + k0 < K)
        s = tl.load(s_ptr + sb, mask=sb_mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + sb, mask=sb_mask, other=0.0).to(tl.float32)
        acc += x_lo * (_nibble(packed & 0xF) * s + b) + x_hi * (_nibble(packed >> 4) * s + b)
    return tl.sum(acc, 2)


@triton.jit
def _dot_tiles(x_ptr, w_ptr, s_ptr, b_ptr, offs_m, offs_n, mask_m, mask_n, K, k_begin, k_end,
               stride_xm, stride_wn, stride_sn, x_dtype: tl.constexpr, FORMAT: tl.constexpr,
               GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr):
    """16 rows and more, on tensor cores: each tile dequantized to the activations' dtype."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if FORMAT == 3:
        # As in _int4_gemv, a tile lies in one group: a row's scale and offset are one value.
        HS: tl.constexpr = BLOCK_K // 2
        HG: tl.constexpr = GROUP // 2
        offs_h = tl.arange(0, HS)
        for k0 in range(k_begin, k_end, BLOCK_K):
            group = k0 // GROUP
            byte0 = tl.multiple_of(k0 // 2, HS)
            k_lo = tl.multiple_of(byte0 + group * HG, HS) + offs_h  # see _int4_gemv
            in_k = offs_h * 0 + k0 < K
            xm = mask_m[:, None] & in_k[None, :]
            x_lo = tl.load(x_ptr + offs_m[:, None] * stride_xm + k_lo[None, :], mask=xm, other=0.0)
            x_hi = tl.load(x_ptr + offs_m[:, None] * stride_xm + k_lo[None, :] + HG, mask=xm,
                           other=0.0)
            packed = tl.load(w_ptr + offs_n[:, None] * stride_wn + (byte0 + offs_h)[None, :],
                             mask=mask_n[:, None] & in_k[None, :], other=0)
            sb_mask = mask_n & (offs_n * 0 + k0 < K)
            s = tl.load(s_ptr + offs_n * stride_sn + group, mask=sb_mask, other=0.0)
            b = tl.load(b_ptr + offs_n * stride_sn + group, mask=sb_mask, other=0.0)
            s = s.to(tl.float32)[:, None]
            b = b.to(tl.float32)[:, None]
            w_lo = _nibble(packed & 0xF) * s + b
            w_hi = _nibble(packed >> 4) * s + b
            acc += tl.dot(x_lo, tl.trans(w_lo.to(x_dtype)))
            acc += tl.dot(x_hi, tl.trans(w_hi.to(x_dtype)))
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
            acc += tl.dot(xt, tl.trans(wt.to(x_dtype)))
    return acc


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
    x_dtype = x_ptr.dtype.element_ty
    if USE_DOT:
        acc = _dot_tiles(x_ptr, w_ptr, s_ptr, b_ptr, offs_m, offs_n, mask_m, mask_n, K, k_begin,
                         k_end, stride_xm, stride_wn, stride_sn, x_dtype, FORMAT, GROUP,
                         BLOCK_M, BLOCK_N, BLOCK_K)
    elif FORMAT == 3:
        acc = _int4_gemv(x_ptr, w_ptr, s_ptr, b_ptr, offs_m, offs_n, mask_m, mask_n, K, k_begin,
                         k_end, stride_xm, stride_wn, stride_sn, GROUP, BLOCK_M, BLOCK_N, BLOCK_K)
    else:
        acc = _gemv(x_ptr, w_ptr, offs_m, offs_n, mask_m, mask_n, K, k_begin, k_end, stride_xm,
                    stride_wn, FORMAT, BLOCK_M, BLOCK_N, BLOCK_K)
    if FORMAT == 1 or FORMAT == 2:
        s = tl.load(s_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc = acc * s[None, :]
    out = out_ptr + pid_k * stride_os + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
