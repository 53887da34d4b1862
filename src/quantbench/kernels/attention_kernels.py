"""The Triton kernels of quantbench's decode attention (kernels/attention.py holds the plan,
the reference and the operator). At module level, as Triton's JIT resolves a kernel's names in
its module's globals; named for the profiler's tables, where a kernel is known by its name."""

import triton
import triton.language as tl


@triton.jit
def qb_decode_attention(q_ptr, k_ptr, v_ptr, pos_ptr, out_ptr, part_ptr, lse_ptr,
                        new_k_ptr, new_v_ptr, cos_ptr, sin_ptr,
                        stride_qb, stride_qh, stride_kb, stride_kh, stride_kn,
                        stride_vb, stride_vh, stride_vn, stride_pb, stride_ob, stride_oh,
                        stride_nkb, stride_nkh, stride_nvb, stride_nvh, stride_cb, stride_sb,
                        scale_log2,
                        KV_HEADS: tl.constexpr, GROUP: tl.constexpr, BLOCK_G: tl.constexpr,
                        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                        CHUNK: tl.constexpr, SPLITS: tl.constexpr, FOLD: tl.constexpr):
    """FOLD: q, new_k and new_v are the step's projections before RoPE and before the cache
    holds them: the kernel rotates q and the new key (cos/sin of the step's position, the
    rotate-half convention of Llama-family models), writes the new key and value into the
    cache at `pos`, and attends to the new token from registers (the two kernels a layer
    spends on RoPE and the cache write become part of this one)."""
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // KV_HEADS
    kv_head = pid % KV_HEADS
    pos = tl.load(pos_ptr + b * stride_pb).to(tl.int32)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    heads = kv_head * GROUP + g
    g_ok = g < GROUP
    d_ok = d < HEAD_DIM
    q_rows = q_ptr + b * stride_qb + heads[:, None] * stride_qh
    q_mask = g_ok[:, None] & d_ok[None, :]
    # The query group padded to BLOCK_G rows (tl.dot wants 16): zero rows cost no reads.
    q = tl.load(q_rows + d[None, :], mask=q_mask, other=0.0)
    start = split * CHUNK
    k_base = k_ptr + b * stride_kb + kv_head * stride_kh
    v_base = v_ptr + b * stride_vb + kv_head * stride_vh
    if FOLD:
        # rotate_half: the first half's partner is the second half, negated
        half = HEAD_DIM // 2
        partner = tl.where(d < half, d + half, d - half)
        sign = tl.where(d < half, -1.0, 1.0)
        cos = tl.load(cos_ptr + b * stride_cb + d, mask=d_ok, other=0.0).to(tl.float32)
        sin = tl.load(sin_ptr + b * stride_sb + d, mask=d_ok, other=0.0).to(tl.float32)
        q_pair = tl.load(q_rows + partner[None, :], mask=q_mask, other=0.0).to(tl.float32)
        q = (q.to(tl.float32) * cos[None, :]
             + sign[None, :] * q_pair * sin[None, :]).to(q_ptr.dtype.element_ty)
        k_row = new_k_ptr + b * stride_nkb + kv_head * stride_nkh
        k_new = tl.load(k_row + d, mask=d_ok, other=0.0).to(tl.float32)
        k_pair = tl.load(k_row + partner, mask=d_ok, other=0.0).to(tl.float32)
        # rounded as the cache stores it: a later step reads these very values back
        k_new = (k_new * cos + sign * k_pair * sin).to(k_ptr.dtype.element_ty)
        v_new = tl.load(new_v_ptr + b * stride_nvb + kv_head * stride_nvh + d, mask=d_ok,
                        other=0.0).to(v_ptr.dtype.element_ty)
        owner = (pos >= start) & (pos < start + CHUNK)
        if owner:  # one program per KV head writes; no program reads position pos from memory
            tl.store(k_base + pos * stride_kn + d, k_new, mask=d_ok)
            tl.store(v_base + pos * stride_vn + d, v_new, mask=d_ok)
        length = pos  # the new token comes from registers, after the loop
    else:
        length = pos + 1
    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    end = tl.minimum(start + CHUNK, length)
    # Only written positions are read: the loop ends at the current token, whatever the
    # cache's size (a split past it reads nothing and leaves m = -inf, l = 0).
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_ok = n < end
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + n[:, None] * stride_kn + d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale_log2
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[:, None])
        l = l * alpha + tl.sum(p, 1)
        v = tl.load(v_base + n[:, None] * stride_vn + d[None, :], mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    if FOLD:
        if owner:
            s_new = tl.sum(q.to(tl.float32) * k_new.to(tl.float32)[None, :], 1) * scale_log2
            m_new = tl.maximum(m, s_new)
            alpha = tl.exp2(m - m_new)
            p_new = tl.exp2(s_new - m_new)
            l = l * alpha + p_new
            acc = acc * alpha[:, None] + p_new[:, None] * v_new.to(tl.float32)[None, :]
            m = m_new
    safe_l = tl.where(l > 0, l, 1.0)
    if SPLITS == 1:
        out = acc / safe_l[:, None]
        tl.store(out_ptr + b * stride_ob + heads[:, None] * stride_oh + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=g_ok[:, None] & d_ok[None, :])
    else:
        row = (b * KV_HEADS * GROUP + heads) * SPLITS + split
        tl.store(part_ptr + row[:, None] * HEAD_DIM + d[None, :], acc / safe_l[:, None],
                 mask=g_ok[:, None] & d_ok[None, :])
        lse = tl.where(l > 0, m + tl.log2(safe_l), float("-inf"))
        tl.store(lse_ptr + row, lse, mask=g_ok)

@triton.jit
def qb_decode_attention_combine(part_ptr, lse_ptr, out_ptr, stride_ob, stride_oh,
                                Q_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                                BLOCK_D: tl.constexpr, SPLITS: tl.constexpr,
                                BLOCK_S: tl.constexpr):
    pid = tl.program_id(0)
    b = pid // Q_HEADS
    head = pid % Q_HEADS
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    s_ok = s < SPLITS
    d_ok = d < HEAD_DIM
    lse = tl.load(lse_ptr + pid * SPLITS + s, mask=s_ok, other=float("-inf"))
    # The first split always holds position 0, so the maximum is finite.
    weight = tl.exp2(lse - tl.max(lse, 0))
    part = tl.load(part_ptr + (pid * SPLITS + s[:, None]) * HEAD_DIM + d[None, :],
                   mask=s_ok[:, None] & d_ok[None, :], other=0.0)
    out = tl.sum(weight[:, None] * part, 0) / tl.sum(weight, 0)
    tl.store(out_ptr + b * stride_ob + head * stride_oh + d, out.to(out_ptr.dtype.element_ty),
             mask=d_ok)
