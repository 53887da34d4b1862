"""quantbench's weight-only matmul kernel, in Triton: y[M, N] = x[M, K] @ dequant(w)[N, K]^T for
the small M of decoding (1-32 rows; larger M, the prefill, runs the same kernel on tensor cores).

One kernel for four weight formats, chosen at compile time (FORMAT):
  bf16  the plain weight (a split-K GEMV for comparison with cuBLAS),
  int8  symmetric, one fp32 scale per output row:           w = q * s[n]
  fp8   e4m3, one fp32 scale per output row:                w = q * s[n]
  int4  asymmetric, a scale and an offset per group of K:   w = q * s[n, g] + b[n, g]
        two values a byte: byte j of a group holds its positions j (low nibble) and j + G/2
        (high). A K tile lies in one group, so a row's scale and offset are one value a tile.

Two paths: up to 8 rows on CUDA cores (_gemv for bf16/fp8; _int8_gemv and _int4_gemv, which
read the weight as 32-bit words against fp32 activations laid out in planes by ops.prepare, and
take each code's constant and scale out once per row or group, not per weight), 16 rows and more
on tensor cores (_dot_tiles). `python -m quantbench.kernels.asm` shows how a launch config
lowers for a GPU, on any machine, down to the K loop's machine instructions.

Split-K: with few output rows (a 2048-wide layer is 64 tiles of 32 rows, on a 132-SM H200) one
program per tile leaves the GPU half empty, so SPLIT_K programs share a row tile's K range and
write fp32 partials that the caller sums (deterministic, no atomics, no zero-filled buffer).
"""

from __future__ import annotations

import triton
import triton.language as tl

FORMATS = {"bf16": 0, "int8": 1, "fp8": 2, "int4": 3}


# Integers to floats without the conversion instruction (a quarter of the FMA rate on recent
# GPUs) and without the subtraction a 2^23 "magic number" needs: a code placed in the top
# mantissa bits of 1.0 is a float in [1, 2) (one shift and one three-input logic op), and the
# constant it carries is taken out once per group or output row, not per weight. Counted on
# the CPU: `python -m quantbench.kernels.asm` prints the K loop's machine instructions.
_ONE = tl.constexpr(0x3F800000)  # the bits of 1.0
_NIBBLE_BITS = tl.constexpr(0x780000)  # mantissa bits 19-22, the top four: 1 + q/16
# int8: a signed byte shifted into the top eight mantissa bits with its sign bit flipped
# (q + 128) as 1.0's bits are set: (b << 15) & _BYTE_BITS ^ _ONE_FLIPPED is 1 + (q + 128)/256.
_BYTE_BITS = tl.constexpr(0x7F8000)
_ONE_FLIPPED = tl.constexpr(0x3FC00000)  # 1.0's bits with mantissa bit 22 set


@triton.jit
def _gemv(x_ptr, w_ptr, offs_m, offs_n, mask_m, mask_n, K, k_begin, k_end, stride_xm, stride_wn,
          FORMAT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
          BLOCK_K: tl.constexpr):
    """bf16/fp8 on CUDA cores, for a few rows: products accumulate element-wise in
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
        if FORMAT == 2:  # fp8 bytes, stored as uint8
            w = wt.to(tl.float8e4nv, bitcast=True).to(tl.float32)
        else:
            w = wt.to(tl.float32)
        acc += xt * w
    return tl.sum(acc, 2)


@triton.jit
def _int8_gemv(x_ptr, w_ptr, offs_m, offs_n, mask_m, mask_n, K, k_begin, k_end, plane,
               stride_xm, stride_wn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr):
    """int8 on CUDA cores, a 32-bit word (four weights) at a time: the activations arrive as
    four planes, plane b holding inputs 4i + b (ops.prepare, zero past K), so byte b of word i
    meets element i of plane b and one shift of the word puts the byte in place. Sums
    x * (1 + (q + 128)/256): the caller takes out the constant and scales."""
    W: tl.constexpr = BLOCK_K // 4
    m3 = tl.where(mask_m, offs_m, 0)[:, None, None]  # past the ends: row/output 0, not stored
    n3 = tl.where(mask_n, offs_n, 0)[None, :, None]
    i3 = tl.arange(0, W)[None, None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N, W), dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        word = tl.multiple_of(k0 // 4, W) + i3
        # Past K (a K that is not whole tiles) the planes are zero, the weight zero-filled
        u = tl.load(w_ptr + n3 * stride_wn + m3 * 0 + word, mask=word < K // 4, other=0)
        xp = x_ptr + m3 * stride_xm + n3 * 0 + word
        f0 = (((u << 15) & _BYTE_BITS) ^ _ONE_FLIPPED).to(tl.float32, bitcast=True)
        f1 = (((u << 7) & _BYTE_BITS) ^ _ONE_FLIPPED).to(tl.float32, bitcast=True)
        f2 = (((u >> 1) & _BYTE_BITS) ^ _ONE_FLIPPED).to(tl.float32, bitcast=True)
        f3 = (((u >> 9) & _BYTE_BITS) ^ _ONE_FLIPPED).to(tl.float32, bitcast=True)
        acc += tl.load(xp) * f0
        acc += tl.load(xp + plane) * f1
        acc += tl.load(xp + 2 * plane) * f2
        acc += tl.load(xp + 3 * plane) * f3
    return tl.sum(acc, 2)


@triton.jit
def _int4_gemv(x_ptr, w_ptr, s_ptr, b_ptr, xs_ptr, offs_m, offs_n, mask_m, mask_n, k_begin,
               k_end, stride_xm, stride_wn, stride_sn, stride_xsm, GROUP: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """int4 on CUDA cores. A nibble q in the top mantissa bits of 1.0 is f = 1 + q/16, so
    w = q*s + b = (16 s) f + (b - 16 s), and over a group sum x w = 16 s * sum(x f) +
    (b - 16 s) * sum(x): a weight costs a shift, a logic op and a multiply-add; the scale and
    offset are applied once a tile, and sum(x) per group comes with the activations
    (ops.prepare). A tile lies inside one group (BLOCK_K divides GROUP: the tuner gives more
    rows instead of wider tiles). Every operand is addressed in the [rows, outputs, words]
    shape the products take (as in _gemv), the per-tile values in [rows, outputs, 1], so
    nothing changes layout in the loop at one or two rows."""
    W: tl.constexpr = BLOCK_K // 8  # 32-bit words of a row in the tile: 8 nibbles each
    PLANE: tl.constexpr = GROUP // 8
    # No masks: rows and outputs past the ends read row/output 0 (their results are not
    # stored) and every tile lies inside K (wo_matmul_kernel ends the K range at K), so no
    # load zero-fills registers first.
    m3 = tl.where(mask_m, offs_m, 0)[:, None, None]
    n3 = tl.where(mask_n, offs_n, 0)[None, :, None]
    i3 = tl.arange(0, W)[None, None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N, 1), dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        group = k0 // GROUP
        word = tl.multiple_of(k0 // 8, W)  # the tile's first word of the row
        u = tl.load(w_ptr + n3 * stride_wn + m3 * 0 + word + i3)
        # Nibble h of byte b of a word is input b + 4i (+ GROUP/2 for h = 1) of its group:
        # element i of plane 4h + b (ops.prepare), and one shift puts it in bits 19-22.
        xp = x_ptr + m3 * stride_xm + n3 * 0 + group * GROUP + (word - group * PLANE) + i3
        t = tl.load(xp) * (((u << 19) & _NIBBLE_BITS) | _ONE).to(tl.float32, bitcast=True)
        t += tl.load(xp + PLANE) * (((u << 11) & _NIBBLE_BITS) | _ONE).to(tl.float32,
                                                                          bitcast=True)
        t += tl.load(xp + 2 * PLANE) * (((u << 3) & _NIBBLE_BITS) | _ONE).to(tl.float32,
                                                                             bitcast=True)
        t += tl.load(xp + 3 * PLANE) * (((u >> 5) & _NIBBLE_BITS) | _ONE).to(tl.float32,
                                                                             bitcast=True)
        t += tl.load(xp + 4 * PLANE) * (((u << 15) & _NIBBLE_BITS) | _ONE).to(tl.float32,
                                                                              bitcast=True)
        t += tl.load(xp + 5 * PLANE) * (((u << 7) & _NIBBLE_BITS) | _ONE).to(tl.float32,
                                                                             bitcast=True)
        t += tl.load(xp + 6 * PLANE) * (((u >> 1) & _NIBBLE_BITS) | _ONE).to(tl.float32,
                                                                             bitcast=True)
        t += tl.load(xp + 7 * PLANE) * (((u >> 9) & _NIBBLE_BITS) | _ONE).to(tl.float32,
                                                                             bitcast=True)
        xf = tl.sum(t, 2, keep_dims=True)  # [rows, outputs, 1]
        sb = n3 * stride_sn + group  # [1, BLOCK_N, 1]
        s = tl.load(s_ptr + sb).to(tl.float32) * 16.0
        b = tl.load(b_ptr + sb).to(tl.float32) - s
        # The offset meets the group's whole sum of inputs: once, with the group's first tile
        # (a group may span tiles, and split-K programs).
        xs = tl.load(xs_ptr + m3 * stride_xsm + n3 * 0 + group)
        acc += s * xf + tl.where(k0 % GROUP == 0, b * xs, 0.0)
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
            s = s.to(tl.float32)[:, None] * 16.0
            b = b.to(tl.float32)[:, None] - s
            p = packed.to(tl.int32)  # as in _int4_gemv: 1 + q/16, so w = 16 s f + (b - 16 s)
            w_lo = (((p << 19) & _NIBBLE_BITS) | _ONE).to(tl.float32, bitcast=True) * s + b
            w_hi = (((p << 15) & _NIBBLE_BITS) | _ONE).to(tl.float32, bitcast=True) * s + b
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
def wo_matmul_kernel(x_ptr, w_ptr, s_ptr, b_ptr, xs_ptr, out_ptr,
                     M, N, K, stride_xm, stride_wn, stride_sn, stride_xsm, stride_os, stride_om,
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
    k_end = tl.minimum(k_begin + k_span, K)  # the last share may be short, or empty
    x_dtype = x_ptr.dtype.element_ty
    if USE_DOT:
        acc = _dot_tiles(x_ptr, w_ptr, s_ptr, b_ptr, offs_m, offs_n, mask_m, mask_n, K, k_begin,
                         k_end, stride_xm, stride_wn, stride_sn, x_dtype, FORMAT, GROUP,
                         BLOCK_M, BLOCK_N, BLOCK_K)
    elif FORMAT == 1:
        # the planes: this program's K share padded to whole tiles, for every program
        plane = k_span * SPLIT_K // 4
        acc = _int8_gemv(x_ptr, w_ptr, offs_m, offs_n, mask_m, mask_n, K, k_begin, k_end, plane,
                         stride_xm, stride_wn, BLOCK_M, BLOCK_N, BLOCK_K)
        # That summed x * (1 + u/256), u = q + 128, so x * q = 256 * it - 384 * x: the
        # activations' sum over this program's share of K comes with them (ops.prepare)
        xs = tl.load(xs_ptr + offs_m * stride_xsm + pid_k, mask=mask_m, other=0.0)
        acc = acc * 256.0 - 384.0 * xs[:, None]
    elif FORMAT == 3:
        acc = _int4_gemv(x_ptr, w_ptr, s_ptr, b_ptr, xs_ptr, offs_m, offs_n, mask_m, mask_n,
                         k_begin, k_end, stride_xm, stride_wn, stride_sn, stride_xsm, GROUP,
                         BLOCK_M, BLOCK_N, BLOCK_K)
    else:
        acc = _gemv(x_ptr, w_ptr, offs_m, offs_n, mask_m, mask_n, K, k_begin, k_end, stride_xm,
                    stride_wn, FORMAT, BLOCK_M, BLOCK_N, BLOCK_K)
    if FORMAT == 1 or FORMAT == 2:
        s = tl.load(s_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc = acc * s[None, :]
    out = out_ptr + pid_k * stride_os + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
