"""quantbench's decode attention (kernels/attention.py, what compiled-qb runs) against SDPA as
the compiled runtimes run it, one decode step's attention for one layer: time per call in a
CUDA graph (triton.testing.do_bench_cudagraph), and the KV bytes that call had to read per
second (positions 0..pos, K and V).

    PYTHONPATH=src python benchmarks/decode_attention.py --out attention.json \
        [--models 1b,8b] [--batch 1,8,32] [--cache 264,4096,32768]

Competitors, each on the same bf16 tensors (q [B, 32, 1, D], a static cache [B, 8, L, D], the
token at the cache's last position, so every position counts):
  sdpa-expand   torch.compile'd: K/V repeated to the query heads, a boolean mask, SDPA (what
                transformers does in the compiled runtimes' step)
  sdpa-gqa      torch.compile'd SDPA with enable_gqa=True and the mask (no copies)
  qb            quantbench's kernel with its default plan (splits from the SM count)
  qb-splitsN    the same kernel forced to N splits: 1 (no combine kernel), twice the default,
                and one block of 64 positions a split (the most programs)
  qb+rope-write torch.compile'd: RoPE of q and of the step's key (transformers'
                apply_rotary_pos_emb), the cache write of key and value (index_copy_, as
                StaticLayer.update), then qb: compiled-qb's attention from the projections on
  qb-fold       the folded kernel from the same projections (compiled-qb-fold): RoPE and the
                cache write inside qb's split kernel
Each cycles through enough caches (twice the L2) that no call finds its K/V in L2, as a step
does after reading the layer's weights.
"""

from __future__ import annotations

import argparse
import json
import time

HEADS = {"1b": (32, 8, 64), "8b": (32, 8, 128)}  # query heads, KV heads, head size


def competitors(torch, q, caches, pos, scale, sms, batch, kv_heads, length):
    from quantbench.kernels import attention

    group = q.shape[1] // kv_heads

    def expand(q, k, v, mask):
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=scale).transpose(1, 2)  # as the kernel returns it

    def gqa(q, k, v, mask):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=scale, enable_gqa=True).transpose(1, 2)

    mask = torch.arange(length, device=q.device) <= pos.reshape(-1, 1, 1, 1)
    out = {}
    torch._dynamo.reset()  # a shape per call: past 8, Dynamo's recompile limit fails fullgraph
    for name, fn in (("sdpa-expand", expand), ("sdpa-gqa", gqa)):
        compiled = torch.compile(fn, fullgraph=True, dynamic=False)
        out[name] = [lambda k=k, v=v, c=compiled: c(q, k, v, mask) for k, v in caches]
    plans = {"qb": attention.plan(batch, kv_heads, length, sms)}
    for splits in (1, 2 * plans["qb"].splits, -(-length // attention.BLOCK_N)):
        forced = attention.plan(batch, kv_heads, length, sms, splits)
        if forced != plans["qb"]:
            plans[f"qb-splits{forced.splits}"] = forced
    for name, chosen in plans.items():
        out[name] = [lambda k=k, v=v, p=chosen: attention.decode_attention(q, k, v, pos, scale, p)
                     for k, v in caches]
    new_k, new_v, cos, sin = step_inputs(torch, q, kv_heads)
    chosen = plans["qb"]

    def rope_write(q, new_k, new_v, k, v):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        q, new_k = apply_rotary_pos_emb(q, new_k, cos, sin)
        k.index_copy_(2, pos.reshape(-1), new_k)
        v.index_copy_(2, pos.reshape(-1), new_v)
        return attention.decode_attention(q, k, v, pos, scale, chosen)

    attention.register()  # traced, decode_attention only looks the operator up
    unfolded = torch.compile(rope_write, fullgraph=True, dynamic=False)
    out["qb+rope-write"] = [lambda k=k, v=v: unfolded(q, new_k, new_v, k, v) for k, v in caches]
    out["qb-fold"] = [lambda k=k, v=v: attention.decode_attention_folded(
        q, new_k, new_v, cos, sin, k, v, pos, scale, chosen) for k, v in caches]
    plans["qb+rope-write"] = plans["qb-fold"] = chosen
    return out, {name: p.short() for name, p in plans.items()}


def step_inputs(torch, q, kv_heads):
    """The step's key and value before RoPE, and the rotary cos/sin of its position (seeded:
    every competitor and the reference get the same)."""
    generator = torch.Generator(device=q.device).manual_seed(1)
    batch, _, _, dim = q.shape
    new_k, new_v = torch.randn(2, batch, kv_heads, 1, dim, device=q.device, dtype=q.dtype,
                               generator=generator)
    angle = torch.rand(1, 1, dim // 2, device=q.device, generator=generator) * 6
    angle = torch.cat((angle, angle), dim=-1)
    return new_k, new_v, angle.cos().to(q.dtype), angle.sin().to(q.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", default="1b,8b")
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--cache", default="264,4096,32768",
                        help="static cache sizes (positions); the token is at the last one")
    args = parser.parse_args()

    import torch

    from gemv import bench, copies_for  # this folder is the script's first import path
    from quantbench.hardware.profile import measure
    from quantbench.kernels import attention

    torch.manual_seed(0)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    copy = measure(f"cuda:{torch.cuda.current_device()}")["copy_bandwidth_Bps"]
    rows = []
    for model in args.models.split(","):
        q_heads, kv_heads, dim = HEADS[model]
        for batch in map(int, args.batch.split(",")):
            for length in map(int, args.cache.split(",")):
                kv_bytes = 2 * batch * kv_heads * length * dim * 2
                if kv_bytes > 4e9:
                    continue  # not a decode step anyone runs on one GPU (8B, B32, 32K: 8.6 GB)
                copies = copies_for(torch, kv_bytes, "auto")
                q = torch.randn(batch, q_heads, 1, dim, device="cuda", dtype=torch.bfloat16)
                caches = [tuple(torch.randn(2, batch, kv_heads, length, dim, device="cuda",
                                            dtype=torch.bfloat16)) for _ in range(copies)]
                pos = torch.tensor([[length - 1]], device="cuda")
                ref = attention.reference(q.float(), *(t.float() for t in caches[0]), pos,
                                          dim ** -0.5)
                # from the projections: RoPE, the write at pos, attention (on copies)
                folded_ref = attention.reference_folded(
                    q.float(), *(t.float() for t in step_inputs(torch, q, kv_heads)),
                    *(t.float() for t in caches[0]), pos, dim ** -0.5)
                fns, plans = competitors(torch, q, caches, pos, dim ** -0.5, sms, batch,
                                         kv_heads, length)
                for name, calls in fns.items():
                    row = {"model": model, "batch": batch, "cache": length, "competitor": name,
                           "plan": plans.get(name), "kv_bytes": kv_bytes, "copies": copies}
                    try:
                        with torch.no_grad():
                            first = calls[0]()
                            want = folded_ref if name in ("qb+rope-write", "qb-fold") else ref
                            if first.shape != want.shape:
                                raise ValueError(f"output {tuple(first.shape)}, reference "
                                                 f"{tuple(want.shape)}")
                            row["max_abs_err"] = float((first.float() - want).abs().max())
                            for call in calls:
                                call()  # compile outside the timing
                            row["us"] = bench(lambda calls=calls: [c() for c in calls]) / copies
                        row["GBps"] = kv_bytes / (row["us"] * 1e-6) / 1e9
                        row["pct_copy_bw"] = 100 * row["GBps"] * 1e9 / copy
                    except Exception as exc:
                        row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                del caches
                torch.cuda.empty_cache()
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    result = {"gpu": torch.cuda.get_device_name(), "copy_bandwidth_Bps": copy,
              "l2_bytes": props.L2_cache_size, "sms": sms, "torch": torch.__version__,
              "when": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
