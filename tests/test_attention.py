"""quantbench's decode attention (kernels/attention.py, runtimes/attention.py, the compiled-qb
runtime). The Triton kernel runs on the CPU through Triton's interpreter (a real subprocess, as in
test_kernels.py) and is lowered for sm_90 here; the GPU runs it for real under `pytest -m gpu`."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import export_json, quantbench

torch = pytest.importorskip("torch")


def _interpreted(script: str) -> dict:
    pytest.importorskip("triton")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sdpa(q, k, v, pos, scale):
    """What the reference must equal: SDPA with K/V expanded to the query heads and the causal
    mask of a decode step (positions 0..pos)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    mask = torch.arange(k.shape[2]) <= pos.reshape(-1, 1, 1, 1)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.transpose(1, 2)


def test_the_reference_is_sdpa_with_the_causal_mask_of_a_decode_step():
    from quantbench.kernels import attention

    torch.manual_seed(0)
    for batch, q_heads, kv_heads, dim, length, pos in ((1, 8, 2, 16, 40, [[17]]),
                                                        (3, 6, 6, 32, 70, [[0], [33], [69]])):
        q = torch.randn(batch, q_heads, 1, dim)
        k, v = torch.randn(2, batch, kv_heads, length, dim)
        k[..., max(max(p) for p in pos) + 1:, :] = 1e4  # unwritten positions must not count
        pos = torch.tensor(pos)
        got = attention.reference(q, k, v, pos, dim ** -0.5)
        assert got.shape == (batch, 1, q_heads, dim)
        assert torch.allclose(got, _sdpa(q, k, v, pos, dim ** -0.5), atol=1e-5)


def test_plans_fill_the_gpu_and_never_split_below_one_block():
    from quantbench.kernels.attention import BLOCK_N, MIN_CHUNK, plan

    # 1B preset, batch 1, 128 + 128 tokens: 17 splits wanted for 132 SMs, 8 programs unsplit
    # leave most idle, so one block (64 positions) a split: 5
    assert plan(batch=1, kv_heads=8, max_len=264, sms=132) == plan(1, 8, 264, 132, splits=5)
    assert plan(batch=1, kv_heads=8, max_len=264, sms=132).chunk == BLOCK_N
    assert plan(batch=1, kv_heads=8, max_len=1024, sms=132).splits == 16
    # batch 8: 64 programs unsplit busy half the GPU, so no split is shorter than MIN_CHUNK
    # (264 positions: none, no combine kernel)
    assert plan(batch=8, kv_heads=8, max_len=264, sms=132).splits == 1
    assert plan(batch=8, kv_heads=8, max_len=1024, sms=132).splits == 3  # 132 SMs / 64
    assert plan(batch=8, kv_heads=8, max_len=512, sms=132).splits == 512 // MIN_CHUNK
    assert plan(batch=32, kv_heads=8, max_len=4096, sms=132).splits == 1  # 256 programs already
    long = plan(batch=1, kv_heads=8, max_len=32768, sms=132)
    assert long.splits == 17 and long.splits * long.chunk >= 32768
    assert long.chunk % BLOCK_N == 0 and (long.splits - 1) * long.chunk < 32768
    forced = plan(batch=1, kv_heads=8, max_len=264, sms=132, splits=5)  # benchmarks force
    assert forced.splits == 5 and forced.chunk == BLOCK_N


def test_the_kernel_matches_its_reference_for_every_split_group_and_position():
    """Grouped queries (1, 4 and 6 heads a KV head), head sizes 16-128, one position to the
    whole cache, a position per sequence, splits that end past the current token, fp32 and
    fp16 (the interpreter's bf16 is numpy's fp32 in disguise; bf16 runs under -m gpu)."""
    out = _interpreted("""
        import json, torch
        from quantbench.kernels import attention
        torch.manual_seed(0)
        worst = {}
        cases = ((1, 32, 8, 64, 264, [[0]]), (1, 32, 8, 64, 264, [[130]]),
                 (1, 32, 8, 64, 264, [[263]]), (3, 4, 4, 16, 100, [[5], [64], [99]]),
                 (2, 12, 2, 128, 72, [[40]]))
        for dtype in (torch.float32, torch.float16):
            for batch, q_heads, kv_heads, dim, length, pos in cases:
                q = torch.randn(batch, q_heads, 1, dim, dtype=dtype)
                k, v = torch.randn(2, batch, kv_heads, length, dim, dtype=dtype)
                k[..., max(max(p) for p in pos) + 1:, :] = 100  # unwritten: never read
                v[..., max(max(p) for p in pos) + 1:, :] = float("nan")
                pos = torch.tensor(pos)
                ref = attention.reference(q.float(), k.float(), v.float(), pos, dim ** -0.5)
                for splits in (1, 3, None):
                    plan = attention.plan(batch, kv_heads, length, sms=4, splits=splits)
                    got = attention.decode_attention(q, k, v, pos, dim ** -0.5, plan)
                    assert got.shape == (batch, 1, q_heads, dim) and got.dtype == dtype
                    err = float((got.float() - ref).abs().max())
                    key = f"{dtype}".split(".")[-1]
                    worst[key] = float(torch.tensor([worst.get(key, 0.0), err]).max())  # NaN stays
        # a query whose heads are not contiguous (the model's transpose of a view)
        q = torch.randn(2, 1, 8, 64).transpose(1, 2)
        k, v = torch.randn(2, 2, 2, 50, 64)
        pos = torch.tensor([[49]])
        got = attention.decode_attention(q, k, v, pos, 0.125, attention.plan(2, 2, 50, 4))
        worst["strided"] = float((got - attention.reference(q, k, v, pos, 0.125)).abs().max())
        print(json.dumps(worst))
    """)
    assert out["float32"] < 1e-5, out
    assert out["fp16" if "fp16" in out else "float16"] < 2e-3, out
    assert out["strided"] < 1e-5, out


def test_the_folded_kernel_rotates_writes_and_attends_as_transformers_would():
    """Folded, the kernel takes the step's q, key and value before RoPE: its output and the
    cache it leaves must be transformers' (apply_rotary_pos_emb, the cache write at pos, then
    attention), for a position per sequence, splits that own the new token or not, and cos/sin
    shared by the batch or per sequence; the torch reference leaves the very same cache."""
    out = _interpreted("""
        import json, torch
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
        from quantbench.kernels import attention
        torch.manual_seed(0)
        worst = {"same_cache_as_reference": True}
        cases = ((1, 32, 8, 64, 264, [[0]]), (1, 32, 8, 64, 264, [[130]]),
                 (3, 4, 4, 16, 100, [[5], [64], [99]]), (2, 12, 2, 128, 72, [[40]]))
        for dtype in (torch.float32, torch.float16):
            for batch, q_heads, kv_heads, dim, length, pos in cases:
                q = torch.randn(batch, q_heads, 1, dim, dtype=dtype)
                new_k, new_v = torch.randn(2, batch, kv_heads, 1, dim, dtype=dtype)
                angle = torch.rand(len(pos), 1, dim // 2) * 6
                angle = torch.cat((angle, angle), dim=-1)
                cos, sin = angle.cos().to(dtype), angle.sin().to(dtype)
                k, v = torch.randn(2, batch, kv_heads, length, dim, dtype=dtype)
                at = [pos[b if len(pos) > 1 else 0][0] for b in range(batch)]
                for b in range(batch):  # the new token's slot and beyond: never read as stored
                    k[b, :, at[b]:], v[b, :, at[b]:] = 100, float("nan")
                pos_t = torch.tensor(pos)
                # the positions a sequence holds after the step (NaN beyond, on both sides)
                held = (torch.arange(length) <= torch.tensor(at)[:, None])[:, None, :, None]
                q_rot, k_rot = apply_rotary_pos_emb(q.float(), new_k.float(), cos.float(),
                                                    sin.float())
                k_want, v_want = k.float().clone(), v.float().clone()
                for b in range(batch):
                    k_want[b, :, at[b]] = k_rot[b, :, 0]
                    v_want[b, :, at[b]] = new_v.float()[b, :, 0]
                want = attention.reference(q_rot, k_want, v_want, pos_t, dim ** -0.5)
                key = f"{dtype}".split(".")[-1]
                for splits in (1, 3, None):
                    k_got, v_got, k_ref, v_ref = k.clone(), v.clone(), k.clone(), v.clone()
                    plan = attention.plan(batch, kv_heads, length, sms=4, splits=splits)
                    got = attention.decode_attention_folded(q, new_k, new_v, cos, sin, k_got,
                                                            v_got, pos_t, dim ** -0.5, plan)
                    ref = attention.reference_folded(q, new_k, new_v, cos, sin, k_ref, v_ref,
                                                     pos_t, dim ** -0.5)
                    def kept(t):
                        return torch.where(held, t.float(), 0.0)

                    errs = {key: (got.float() - want).abs().max(),
                            key + " reference": (ref.float() - want).abs().max(),
                            key + " keys": (kept(k_got) - kept(k_want)).abs().max(),
                            key + " values": (kept(v_got) - kept(v_want)).abs().max()}
                    for name, err in errs.items():  # (a NaN stays)
                        worst[name] = float(torch.tensor([worst.get(name, 0.0), err]).max())
                    worst["same_cache_as_reference"] &= bool(
                        torch.equal(kept(k_got), kept(k_ref))
                        and torch.equal(kept(v_got), kept(v_ref)))
        print(json.dumps(worst))
    """)
    assert out["same_cache_as_reference"], out
    for dtype, bound in (("float32", 1e-5), ("float16", 2e-3)):
        for part in ("", " reference", " keys", " values"):
            assert out[dtype + part] < bound, (dtype + part, out)
    assert out["float32 values"] == 0 and out["float16 values"] == 0, out


def test_the_code_a_traced_decode_step_runs_imports_nothing():
    """torch 2.11's Dynamo (the GPU image's) fails a traced import whose result is not exactly a
    module ("Bad import result"), and transformers' package is a lazy module: an import in the
    mask function sent every compiled-qb cell to eager kernels on the H100. torch 2.13 here
    accepts it, so the bytecode is what this suite can check."""
    import dis

    from quantbench.kernels import attention
    from quantbench.runtimes import attention as glue

    folded_forward = glue._folded_forward(None, None, None)
    for fn in (glue._mask, glue.DecodeAttention.__call__, glue.DecodeAttention._plan,
               glue.DecodeAttention.folded, folded_forward, glue._rope_once(None),
               attention.rope_table, attention.decode_attention,
               attention.decode_attention_folded, attention.reference,
               attention.reference_folded, attention.rotate):
        imports = [i.argval for i in dis.get_instructions(fn) if i.opname == "IMPORT_NAME"]
        assert not imports, (fn.__qualname__, imports)


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("splits", [1, 4])
@pytest.mark.parametrize("dim", [64, 128])
def test_the_kernel_compiles_for_hopper_with_16_byte_loads(dim, splits, fold):
    """Lowered for sm_90 on the CPU (kernels.asm): the K and V tiles of the position loop are
    pipelined as 16-byte asynchronous copies, no tile changes layout inside the loop, and the
    products run on tensor cores; folded (RoPE and the cache write inside) the same."""
    pytest.importorskip("triton")
    from quantbench.kernels import attention

    lowered = attention.lower(dim, group=4, splits=splits, fold=fold)
    copies = lowered.async_copies()
    # K and V: BLOCK_N x dim bf16 each over 128 threads, 16 bytes a copy, and nothing narrower
    assert set(copies) == {16} and copies[16] >= 2 * attention.BLOCK_N * dim * 2 / (128 * 16), \
        copies
    assert lowered.loop_conversions() == 0, lowered.ttgir
    assert "mma.sync" in lowered.ptx or "wgmma" in lowered.ptx


def _decode_logits(model, cache_len, prompt, steps, caches=None):
    from transformers import StaticCache

    from quantbench.runtimes.eager import _cache_arg

    cache = {_cache_arg(model): StaticCache(config=model.config, max_cache_len=cache_len)}
    if caches is not None:
        caches.extend(cache.values())
    ids = torch.tensor([prompt])
    out = model(input_ids=ids, use_cache=True, position_ids=torch.arange(len(prompt)).unsqueeze(0),
                **cache)
    logits = [out.logits[:, -1]]
    for i in range(steps):
        nxt = logits[-1].argmax(-1, keepdim=True)
        out = model(input_ids=nxt, use_cache=True, position_ids=torch.tensor([[len(prompt) + i]]),
                    **cache)
        logits.append(out.logits[:, -1])
    return torch.cat(logits)


@pytest.mark.parametrize("fold", [False, True])
def test_a_model_decodes_the_same_logits_through_it_as_through_sdpa(fold):
    """The transformers glue: registered, the mask of a decode step skipped (the kernel masks by
    position), the prefill still SDPA's; folded, each Llama attention's decode step rotates and
    writes the cache itself, and the cache holds what transformers would have written."""
    from quantbench import models
    from quantbench.runtimes.attention import NAME, install

    spec = models.resolve("random:tiny").to_dict()
    plain = models.load(spec, torch.float32, "cpu")
    ours = models.load(spec, torch.float32, "cpu")
    record = install(ours, "cpu", fold=fold)
    assert ours.config._attn_implementation == NAME
    assert record["decode"].startswith("reference") and record["prefill"] == "transformers SDPA"
    layers = ours.config.num_hidden_layers
    if fold:
        assert record["rope_and_cache_write"]["layers"] == layers
        assert "not_folded" not in record["rope_and_cache_write"]
    else:
        assert "rope_and_cache_write" not in record
    folded_calls = _decodes_as_transformers(plain, ours, steps=8)
    # every decode step of every layer took the folded path (the prefill never does)
    assert folded_calls == (8 * layers if fold else 0)


def _decodes_as_transformers(plain, ours, steps: int) -> int:
    """`ours` (attention installed) decodes the logits `plain` does and leaves the same static
    cache; returns how many layer-steps took the folded path."""
    from transformers import AttentionInterface

    from quantbench.runtimes.attention import NAME

    prompt = list(range(3, 19))
    caches = []
    with torch.no_grad():
        want = _decode_logits(plain, 40, prompt, steps, caches)
        got = _decode_logits(ours, 40, prompt, steps, caches)
    assert torch.allclose(got, want, atol=1e-4, rtol=0), (got - want).abs().max()
    for theirs, mine in zip(caches[0].layers, caches[1].layers):
        # (layers past the first read the other path's attention output, within rounding)
        assert torch.allclose(mine.keys, theirs.keys, atol=1e-5)
        assert torch.allclose(mine.values, theirs.values, atol=1e-5)
        assert int(mine.cumulative_length) == int(theirs.cumulative_length) == len(prompt) + steps
    return AttentionInterface._global_mapping[NAME].folded_calls


def _tiny_qwen2(**config):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      attn_implementation="sdpa", **config)
    return Qwen2ForCausalLM(cfg).eval()


def test_qwen2_attention_folds_too_and_keeps_its_own_forward_where_it_slides():
    """Qwen2's attention is Llama's plus q/k/v biases and an optional sliding window: folded
    where the window is off, with the logits and the cache transformers gives; a sliding layer
    keeps its own forward and the record says why."""
    from quantbench.runtimes.attention import install

    plain, ours = _tiny_qwen2(), _tiny_qwen2()
    assert plain.model.layers[0].self_attn.q_proj.bias is not None
    record = install(ours, "cpu", fold=True)
    assert record["rope_and_cache_write"]["layers"] == 2
    assert "not_folded" not in record["rope_and_cache_write"]
    assert _decodes_as_transformers(plain, ours, steps=6) == 6 * 2

    sliding = _tiny_qwen2(use_sliding_window=True, sliding_window=8, max_window_layers=0)
    assert sliding.model.layers[0].self_attn.sliding_window == 8
    record = install(sliding, "cpu", fold=True)
    assert record["rope_and_cache_write"]["layers"] == 0
    assert record["rope_and_cache_write"]["not_folded"].startswith(
        "Qwen2Attention with a sliding window: quantbench folds only"), record
    assert all("forward" not in vars(m) for m in sliding.modules())


def test_compiled_qb_fold_folds_llama_attention_into_a_native_cache_only():
    """An fp8 KV cache stores its own format (the folded kernel writes the model's dtype), so
    compiled-qb-fold keeps the model's RoPE and cache update there and says why; compiled-qb
    never folds."""
    from quantbench import kvcache, models
    from quantbench.runtimes import get

    spec = models.resolve("random:tiny").to_dict()
    fold = get("compiled-qb-fold")
    record = fold.install_attention(models.load(spec, torch.float32, "cpu"), "cpu",
                                    kvcache.get("auto"))
    assert record["rope_and_cache_write"]["layers"] == 2
    model = models.load(spec, torch.float32, "cpu")
    record = fold.install_attention(model, "cpu", kvcache.get("fp8"))
    assert record["rope_and_cache_write"] == {
        "layers": 0, "not_folded": "the fp8 KV cache writes its own format"}
    assert all("forward" not in vars(m) for m in model.modules())  # no forward replaced
    record = get("compiled-qb").install_attention(model, "cpu", kvcache.get("auto"))
    assert "rope_and_cache_write" not in record


def test_the_kernel_decodes_a_models_logits_under_the_interpreter():
    out = _interpreted("""
        import json, torch
        from quantbench import models
        from transformers import AttentionInterface
        from quantbench.runtimes.attention import install
        import test_attention as t
        spec = models.resolve("random:tiny").to_dict()
        plain = models.load(spec, torch.float32, "cpu")
        out = {}
        for fold in (False, True):
            ours = models.load(spec, torch.float32, "cpu")
            record = install(ours, "cpu", fold=fold)
            prompt = list(range(3, 19))
            caches = []
            with torch.no_grad():
                want = t._decode_logits(plain, 200, prompt, 4, caches)
                got = t._decode_logits(ours, 200, prompt, 4, caches)
            keys = max(float((a.keys - b.keys).abs().max())
                       for a, b in zip(caches[0].layers, caches[1].layers))
            function = AttentionInterface._global_mapping["quantbench_decode"]
            out[str(fold)] = {"err": float((got - want).abs().max()), "keys": keys,
                              "record": record, "folded_calls": function.folded_calls}
        print(json.dumps(out))
    """.replace("import test_attention as t",
                f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
                "import test_attention as t"))
    for fold in ("False", "True"):
        assert out[fold]["err"] < 1e-4 and out[fold]["keys"] < 1e-5, out
        record = out[fold]["record"]
        assert record["decode"].startswith("quantbench Triton")
        # tiny: 2 KV heads of 2 query heads each; a cache of 200 positions is one split's worth
        assert record["launches"] == {"B1 Hq4 Hkv2 L200 D16": "splits1 chunk256 n64 w4"}
    assert out["True"]["record"]["rope_and_cache_write"]["layers"] == 2
    assert out["True"]["folded_calls"] == 4 * 2 and out["False"]["folded_calls"] == 0


def test_every_folded_layer_reads_the_steps_one_cos_sin_in_the_compiled_step():
    """Inductor copies an input it left unrealized at every call of an opaque operator: the
    folded attention's cos/sin were recomputed for each layer (H100 profiles, 2026-12-06: ~100
    small kernels a token at 8B batch 8). Through quantbench::rope_table every layer's call
    reads the same two buffers. Checked in inductor's own generated code for the tiny model's
    compiled step, the kernels run by Triton's interpreter; without rope_table the two layers'
    calls read four different buffers."""
    out = _interpreted("""
        import json, re, torch
        from torch._inductor.utils import run_and_get_code
        from quantbench import kvcache, models
        from quantbench.runtimes import get
        from quantbench.runtimes.static_decoder import CompiledDecoder
        model = models.load(models.resolve("random:tiny").to_dict(), torch.float32, "cpu")
        record = get("compiled-qb-fold").install_attention(model, "cpu", kvcache.get("auto"))
        decoder = CompiledDecoder(model, "cpu", batch=1, prompt_tokens=12, new_tokens=4)
        _, codes = run_and_get_code(decoder.prepare, [list(range(3, 15))])
        calls = [line.split("decode_attention_folded.default(", 1)[1] for code in codes
                 for line in code.splitlines() if "decode_attention_folded.default(" in line]
        # arguments: q, new_k, new_v, cos, sin, ...: the buffers the 4th and 5th are views of
        tables = [re.findall(r"\\b(buf\\d+|arg\\d+_\\d+)\\b", call)[3:5] for call in calls]
        print(json.dumps({"tables": tables, "record": record["rope_and_cache_write"],
                          "graphs": decoder.info["compile"].get("graphs")}))
    """)
    assert out["record"]["layers"] == 2 and "rope_table" in out["record"], out
    assert out["graphs"] == 1, out
    tables = out["tables"]
    assert len(tables) == 2 and all(len(t) == 2 for t in tables), out
    assert tables[0] == tables[1] and tables[0][0] != tables[0][1], tables


def test_compiled_qb_runs_beside_compiled_fused_with_the_same_tokens(workdir):
    # The bundled model (real weights, where attention decides the tokens), two sequences.
    proc = quantbench("run", "--runtime", "compiled-fused,compiled-qb,compiled-qb-fold",
                      "--schemes", "fp32",
                      "--batch-size", "2", "--prompt-tokens", "32", "--new-tokens", "12",
                      "--warmup", "1", "--runs", "3", "--no-repeat-baseline", "--no-quality",
                      "--cell-timeout", "300", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    by = {r["runtime"]: r for r in export_json(workdir)}
    qb, fused = by["compiled-qb"], by["compiled-fused"]
    assert qb["status"] == "ok", qb["error"]
    assert qb["info"]["attention"]["decode"].startswith("reference")
    assert "attention" not in fused["info"]
    compile_ = qb["info"]["compiled"]["compile"]  # the glue traces as one graph
    assert compile_["graphs"] == 1 and compile_["graph_breaks"] == 0, compile_
    assert qb["info"]["output_ids"] == fused["info"]["output_ids"]
    assert len(qb["info"]["output_ids"]) == 2 and len(qb["info"]["output_ids"][0]) == 12
    # SDPA reads the whole static cache; the kernel only the positions written
    assert fused["info"]["kv_positions_read"] == 32 + 12 + 8
    assert "kv_positions_read" not in qb["info"]
    assert qb["info"]["fusion"]["fused"] == fused["info"]["fusion"]["fused"]
    # Folded: RoPE and the cache write inside the attention, traced as one graph all the same,
    # the same tokens; every one of the model's 30 attention layers folded.
    fold = by["compiled-qb-fold"]
    assert fold["status"] == "ok", fold["error"]
    assert fold["info"]["attention"]["rope_and_cache_write"]["layers"] == 30
    assert "rope_table" in fold["info"]["attention"]["rope_and_cache_write"]
    assert "rope_and_cache_write" not in qb["info"]["attention"]
    compile_ = fold["info"]["compiled"]["compile"]
    assert compile_["graphs"] == 1 and compile_["graph_breaks"] == 0, compile_
    assert fold["info"]["output_ids"] == fused["info"]["output_ids"]
