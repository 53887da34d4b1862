"""The kernels on a GPU: quantbench's weight-only kernel (qb-*), gemlite's (gemlite-*) and
quantbench's decode attention (compiled-qb), each against its reference and inside a checked
CUDA graph. Run on a lent H100/H200 with `pytest -m gpu -n 0` (deselected elsewhere)."""

import json

import pytest

from conftest import export_json, quantbench

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")


# ---- quantbench's own kernel (qb-* schemes) ------------------------------------------------------

def test_qb_kernel_matches_its_reference_on_the_gpu_and_keeps_its_tuned_configs(tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path))
    from quantbench.kernels import formats, tuning
    from quantbench.kernels.layers import QbLinear

    torch.manual_seed(0)
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    for fmt in ("bf16", "int8", "fp8", "int4"):
        linear = torch.nn.Linear(2048, 2560, bias=False, device=device, dtype=torch.bfloat16)
        layer = QbLinear.from_linear(linear, fmt, 128)
        ref_w = formats.dequantize(layer.packed(), torch.float32)
        for m in (1, 2, 8, 16, 32, 128):
            x = torch.randn(m, 2048, device=device, dtype=torch.bfloat16)
            y = layer(x)
            ref = x.float() @ ref_w.T
            err = float((y.float() - ref).abs().max() / ref.abs().max())
            assert err < 1e-2, (fmt, m, err)  # the bf16 rounding of the output, nothing more
        launches = layer.launches
        prefill = launches.pop(f"{fmt} 2560x2048 rows=128")
        assert prefill["chosen"] == "default (more than 32 rows: not timed)", prefill
        assert {e["chosen"] for e in launches.values()} == {"tuned"}, launches
    table = json.loads(tuning.cache_path(name).read_text())
    assert len(table) == 4 * 5 and all(e["us"] > 0 and e["candidates"] > 1 for e in table.values())
    fresh = QbLinear.from_linear(linear, "int4", 128)  # a new layer of a tuned shape: no timing
    fresh(torch.randn(1, 2048, device=device, dtype=torch.bfloat16))
    assert {e["chosen"] for e in fresh.launches.values()} == {"cached"}


QB_SCHEMES = ["bf16", "qb-bf16", "qb-int8", "qb-int4", "qb-fp8"]


def test_qb_schemes_compile_into_one_checked_graph_with_fused_projections(workdir):
    proc = quantbench("run", "--model", "random:gpt2-124m", "--runtime", "compiled-fused", "--schemes",
                      ",".join(QB_SCHEMES), "--prompt-tokens", "32", "--new-tokens", "24",
                      "--warmup", "1", "--runs", "3", "--cell-timeout", "600", cwd=workdir)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    by = {r["scheme"]: r for r in export_json(workdir)}
    for scheme in QB_SCHEMES:
        r = by[scheme]
        assert r["status"] == "ok", r["error"]
        c = r["info"]["compiled"]
        assert c["compile"]["graph_breaks"] == 0, c["compile"]
        assert c["cuda_graph"]["captured"] is True, c["cuda_graph"]
        assert r["info"]["fusion"]["fused"] == {"q_proj+k_proj+v_proj": 12, "gate_proj+up_proj": 12}
        if scheme.startswith("qb-"):
            kernel = r["info"]["qb_kernel"]
            assert kernel["path"].startswith("quantbench Triton") and kernel["layers"] == 48
            decode = [e for k, e in kernel["launches"].items() if k.endswith("rows=1")]
            assert decode and all(e["chosen"] in ("tuned", "cached") for e in decode), kernel
            names = " ".join(t["name"] for t in c["profile"]["top"])
            assert "wo_matmul" in names, c["profile"]["top"]
    weights = {s: by[s]["memory"]["weights_bytes"] for s in QB_SCHEMES}
    assert weights["qb-int8"] == weights["qb-fp8"]  # a byte a weight, a scale a row
    assert weights["qb-int4"] < weights["qb-int8"] < weights["bf16"]


# ---- gemlite (gemlite-* schemes) ------------------------------------------------------------------

def test_gemlite_layers_multiply_quantbenchs_formats_within_their_reference():
    """gemlite packs the weights quantbench rounded: its product is the dequantized reference's
    at every row count it dispatches differently (GEMV 1-4, split-K GEMM 5-63, GEMM 64+)."""
    pytest.importorskip("gemlite")
    from quantbench.kernels import formats, gemlite_layers

    torch.manual_seed(0)
    wrong = {}  # every format and row count, so one GPU run shows all that is off
    for fmt in ("int8", "fp8", "int4"):
        linear = torch.nn.Linear(2048, 2560, bias=False, device="cuda", dtype=torch.bfloat16)
        ref_w = formats.dequantize(formats.quantize(linear.weight.data, fmt, 128), torch.float32)
        try:
            layer = gemlite_layers.from_linear(linear, fmt, 128)
        except Exception as exc:
            wrong[fmt] = f"{type(exc).__name__}: {exc}"
            continue
        for m in (1, 2, 8, 16, 32, 128):
            x = torch.randn(m, 2048, device="cuda", dtype=torch.bfloat16)
            try:
                y = layer(x)
            except Exception as exc:
                wrong[f"{fmt} m={m}"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                continue
            ref = x.float() @ ref_w.T
            err = float((y.float() - ref).abs().max() / ref.abs().max())
            # gemlite's GEMV splits K and adds the partial sums atomically into the bf16
            # output, each add rounding to bf16: on an H100, int4 at 1-2 rows came to 2.6%
            # of the largest output (2026-12-06); the GEMMs accumulate in fp32 and stayed under 1%
            allowed = 5e-2 if m <= 4 else 1e-2
            print(f"{fmt} m={m}: {err:.2e}")
            if y.shape != (m, 2560) or not err < allowed:
                wrong[f"{fmt} m={m}"] = f"shape {tuple(y.shape)}, error {err:.3g}"
    assert not wrong, wrong


def test_a_gemlite_scheme_gives_its_qb_twins_logits_on_the_gpu():
    """The same rounded weights through two kernel libraries: a 128-token prefill (gemlite's
    GEMM path) and a one-token step (its GEMV) must agree to bf16 rounding, far closer than
    either is to the float model."""
    pytest.importorskip("gemlite")
    from quantbench import models
    from quantbench.schemes import get

    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (1, 128), device="cuda")
    out = {}
    for spec in ("bf16", "qb-int4", "gemlite-int4", "qb-int8", "gemlite-int8"):
        model = models.load({"kind": "random", "preset": "gpt2-124m"}, torch.bfloat16, "cuda", 0)
        model = get(spec).apply(model, "cuda")
        with torch.no_grad():
            out[spec] = [model(input_ids=ids).logits.float(),
                         model(input_ids=ids[:, :1]).logits.float()]
        del model
    far = {}
    for fmt in ("int4", "int8"):
        for step, (ours, theirs, ref) in enumerate(zip(out[f"qb-{fmt}"], out[f"gemlite-{fmt}"],
                                                       out["bf16"])):
            apart = float((ours - theirs).norm() / ours.norm())
            quantized = float((ours - ref).norm() / ours.norm())
            far[f"{fmt} {'prefill' if step == 0 else 'step'}"] = (apart, quantized)
    assert all(apart < 0.02 for apart, _ in far.values()), far
    assert all(apart < 0.3 * quantized for key, (apart, quantized) in far.items()
               if key.startswith("int4")), far


GEMLITE_SCHEMES = ["bf16", "gemlite-int4", "gemlite-int8"]


def test_gemlite_schemes_compile_into_one_checked_graph(workdir):
    pytest.importorskip("gemlite")
    from conftest import cli_env

    cache = workdir / "cache"  # no launch configs saved yet
    proc = quantbench("run", "--model", "random:gpt2-124m", "--runtime", "compiled-fused",
                      "--schemes", ",".join(GEMLITE_SCHEMES), "--prompt-tokens", "32",
                      "--new-tokens", "24", "--warmup", "1", "--runs", "3", "--cell-timeout",
                      "600", "--no-repeat-baseline", cwd=workdir,
                      env=cli_env(QUANTBENCH_CACHE=str(cache)))
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    by = {r["scheme"]: r for r in export_json(workdir)}
    for scheme in GEMLITE_SCHEMES:
        r = by[scheme]
        assert r["status"] == "ok", r["error"]
        c = r["info"]["compiled"]
        assert c["compile"]["graph_breaks"] == 0, c["compile"]
        assert c["cuda_graph"]["captured"] is True, c["cuda_graph"]
        if scheme.startswith("gemlite-"):
            assert r["info"]["gemlite"]["layers"] == 48, r["info"]["gemlite"]  # fused: 4 a layer
            assert r["info"]["gemlite"]["output_ring"] == {"slots": 256, "rows": 1}
            assert r["scheme_settings"]["kernel"] == "gemlite (Triton)"
            names = " ".join(t["name"] for t in c["profile"]["top"])
            assert "gemv" in names.lower(), c["profile"]["top"]
    # With gemlite's output ring a step zeroes each output width once, not each GEMV's output:
    # on the 1B preset without it gemlite-int4 ran 64 kernels a token more than torchao-int4wo
    # (one zeroing a matmul), and torchao-int4wo 16 more than bf16 (the norms inductor fuses
    # into bf16's matmuls run apart from an opaque kernel: one a layer). Here 12 layers, 48
    # matmuls: about 12 + 4 more than bf16 with the ring, 12 + 48 without.
    kernels = {s: by[s]["info"]["compiled"]["profile"]["kernels_per_token"]
               for s in GEMLITE_SCHEMES}
    assert kernels["gemlite-int4"] - kernels["bf16"] < 24, kernels
    # gemlite's picks outlive the cell's process: the first gemlite cell tuned (or took
    # gemlite's shipped table), the later ones loaded what it saved
    sources = [by[s]["info"]["gemlite"]["launch_configs"]["source"] for s in GEMLITE_SCHEMES[1:]]
    assert not sources[0].startswith("saved") and all(s.startswith("saved") for s in sources[1:])
    saved = json.loads(next((cache / "kernels").glob("gemlite*.json")).read_text())
    assert saved["GEMV_REVSPLITK"] and saved["GEMV_SPLITK"], saved.keys()
    weights = {s: by[s]["memory"]["weights_bytes"] for s in GEMLITE_SCHEMES}
    assert weights["gemlite-int4"] < weights["gemlite-int8"] < weights["bf16"]


# ---- quantbench's decode attention (compiled-qb) ------------------------------------------------

def test_decode_attention_kernel_matches_its_reference_on_the_gpu():
    """bf16 on the real presets' head layouts (1B and 8B: 32 query heads on 8 KV heads; qwen2:
    14 on 2, a group of 7), batches 1-32, short and long caches, the default plan and one split."""
    from quantbench.kernels import attention

    torch.manual_seed(0)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    failures, worst = [], 0.0
    for q_heads, kv_heads, dim in ((32, 8, 64), (32, 8, 128), (14, 2, 64)):
        for batch, length, pos in ((1, 264, 200), (8, 264, 131), (32, 264, 263), (1, 4096, 3000)):
            q = torch.randn(batch, q_heads, 1, dim, device="cuda", dtype=torch.bfloat16)
            k, v = torch.randn(2, batch, kv_heads, length, dim, device="cuda",
                               dtype=torch.bfloat16)
            v[..., pos + 1:, :] = float("nan")  # unwritten positions are never read
            p = torch.tensor([[pos]], device="cuda")
            ref = attention.reference(q.float(), k.float(), v.float(), p, dim ** -0.5).float()
            for splits in (None, 1):
                chosen = attention.plan(batch, kv_heads, length, sms, splits)
                got = attention.decode_attention(q, k, v, p, dim ** -0.5, chosen).float()
                err = float((got - ref).abs().max())
                worst = max(worst, err)
                if not err < 2e-2:
                    failures.append(f"{q_heads}/{kv_heads}x{dim} B{batch} L{length} "
                                    f"{chosen.short()}: {err}")
    assert not failures, failures
    print(f"worst abs error against fp32: {worst:.2e}")


def test_folded_decode_attention_rotates_writes_and_attends_on_the_gpu():
    """The folded kernel in bf16 against transformers' RoPE, the cache write and attention in
    fp32, on the presets' head layouts; the keys it writes within bf16 rounding of RoPE's,
    the values exactly the step's."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from quantbench.kernels import attention

    torch.manual_seed(0)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    bf16 = dict(device="cuda", dtype=torch.bfloat16)
    failures, worst = [], {"out": 0.0, "keys": 0.0}
    for q_heads, kv_heads, dim in ((32, 8, 64), (32, 8, 128), (14, 2, 64)):
        for batch, length, pos in ((1, 264, 200), (8, 264, 131), (32, 264, 263), (1, 4096, 3000)):
            q = torch.randn(batch, q_heads, 1, dim, **bf16)
            new_k, new_v = torch.randn(2, batch, kv_heads, 1, dim, **bf16)
            angle = torch.rand(1, 1, dim // 2, device="cuda") * 6
            angle = torch.cat((angle, angle), dim=-1)
            cos, sin = angle.cos().to(torch.bfloat16), angle.sin().to(torch.bfloat16)
            k, v = torch.randn(2, batch, kv_heads, length, dim, **bf16)
            k[..., pos:, :], v[..., pos:, :] = 100, float("nan")
            p = torch.tensor([[pos]], device="cuda")
            q_rot, k_rot = apply_rotary_pos_emb(q.float(), new_k.float(), cos.float(), sin.float())
            k_want, v_want = k.float(), v.float()
            k_want[:, :, pos], v_want[:, :, pos] = k_rot[:, :, 0], new_v.float()[:, :, 0]
            ref = attention.reference(q_rot, k_want, v_want, p, dim ** -0.5).float()
            for splits in (None, 1):
                chosen = attention.plan(batch, kv_heads, length, sms, splits)
                k_got, v_got = k.clone(), v.clone()
                got = attention.decode_attention_folded(q, new_k, new_v, cos, sin, k_got, v_got,
                                                        p, dim ** -0.5, chosen).float()
                err = float((got - ref).abs().max())
                keys = float((k_got[:, :, :pos + 1].float() - k_want[:, :, :pos + 1]).abs().max())
                same_values = torch.equal(v_got[:, :, :pos + 1].float(), v_want[:, :, :pos + 1])
                worst = {"out": max(worst["out"], err), "keys": max(worst["keys"], keys)}
                if not (err < 2e-2 and keys < 4e-2 and same_values):
                    failures.append(f"{q_heads}/{kv_heads}x{dim} B{batch} L{length} "
                                    f"{chosen.short()}: out {err}, keys {keys}, "
                                    f"values {'ok' if same_values else 'differ'}")
    assert not failures, failures
    print(f"worst abs error against fp32: {worst}")


def test_compiled_qb_captures_one_checked_graph_with_its_attention_kernel(workdir):
    """compiled-qb and compiled-qb-fold: one checked graph each, the attention kernel in it;
    folded, fewer kernels a token than compiled-qb where the projections are quantbench's
    opaque matmul (qb-int4). In bf16 inductor fuses RoPE into the projections' own reduction
    kernels, so folding does not lower the count: 199 against 203 on an H100 (2026-12-06,
    this test's first GPU run, which asserted it for bf16 too and failed there).
    (compiled-fused is left to the benchmarks: its two cells took this test past a GPU call's
    step limit, 2026-12-06.)"""
    from quantbench.kernels.attention import plan

    schemes = ["bf16", "qb-int4"]
    proc = quantbench("run", "--model", "random:llama-3.2-1b", "--runtime",
                      "compiled-qb,compiled-qb-fold", "--schemes", ",".join(schemes),
                      "--prompt-tokens", "128", "--new-tokens", "64", "--warmup", "1",
                      "--runs", "3", "--cell-timeout", "600", "--no-repeat-baseline",
                      cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    by = {(r["runtime"], r["scheme"]): r for r in export_json(workdir)}
    for scheme in schemes:
        for runtime in ("compiled-qb", "compiled-qb-fold"):
            qb = by[(runtime, scheme)]
            assert qb["status"] == "ok", qb["error"]
            c = qb["info"]["compiled"]
            assert "error" not in c["compile"] and c["compile"]["graph_breaks"] == 0, c["compile"]
            assert c["cuda_graph"]["captured"] is True, c["cuda_graph"]
            attn = qb["info"]["attention"]
            assert attn["decode"].startswith("quantbench Triton"), attn
            sms = torch.cuda.get_device_properties(0).multi_processor_count
            # 1B preset: 8 KV heads, a static cache of 128 + 64 + 8 positions
            assert attn["launches"] == {"B1 Hq32 Hkv8 L200 D64": plan(1, 8, 200, sms).short()}
            names = " ".join(t["name"] for t in c["profile"]["top"])
            assert "qb_decode_attention" in names, c["profile"]["top"]
        qb, fold = by[("compiled-qb", scheme)], by[("compiled-qb-fold", scheme)]
        assert fold["info"]["attention"]["rope_and_cache_write"]["layers"] == 16
        kernels = [r["info"]["compiled"]["profile"]["kernels_per_token"] for r in (qb, fold)]
        if scheme != "bf16":
            # after an opaque matmul, RoPE and the cache write were kernels of their own in
            # each of the 16 layers
            assert kernels[1] < kernels[0], kernels
        print(scheme, "kernels/token (qb, qb-fold):", kernels, "decode tok/s:",
              [r["metrics"]["decode_tok_s"]["median"] for r in (qb, fold)])
