"""KV-cache formats: `--kv-cache` and `scheme:kv=...` on the bundled model and random presets,
through the real CLI; the caches themselves on the bundled model, in process."""

from __future__ import annotations

import math

import pytest

from conftest import TINY, export_json, quantbench


def test_kv_names_settings_and_refusals(workdir):
    from quantbench.errors import UsageError
    from quantbench.schemes import get

    int4 = get("fp32:kv=INT4")
    assert int4.name == "fp32:kv=int4" and int4.compute_dtype("cpu") == "float32"
    assert int4.settings("cpu")["kv_cache"]["backend"] == "quanto"
    assert not int4.reference  # a KV variant is never another scheme's speed yardstick
    assert get("fp32:kv=auto") is get("fp32")  # the default, typed out, is the same scheme
    assert "kv_cache" not in get("fp32").settings("cpu")  # old cells keep their identity
    assert get("gguf-q4_k_m:kv=int8").settings("cpu")["kv_cache"]["type_k"] == "Q8_0"
    with pytest.raises(UsageError, match="unknown KV-cache format 'int3'"):
        get("fp32:kv=int3")

    for args, message in (
            (["--kv-cache", "int3"], "unknown KV-cache format 'int3'"),
            (["--schemes", "fp32:kv=int4", "--runtime", "compiled"],
             "compiled runtime has no int4 KV cache"),
            (["--schemes", "fp32,gguf-q8_0:kv=int2"], "llama.cpp runtime has no int2 KV cache")):
        proc = quantbench("run", *TINY, *args, cwd=workdir)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert message in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (workdir / "quantbench.db").exists()


def test_kv_axis_plans_each_scheme_per_format_beside_one_baseline(workdir):
    proc = quantbench("run", *TINY, "--schemes", "fp32,torchao-int8wo,gguf-q8_0", "--kv-cache",
                      "int4,int2", "--dry-run", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = [line.split()[0] for line in proc.stdout.splitlines()
               if line.strip().startswith(("fp32", "torchao", "gguf"))]
    for name in ("fp32", "fp32:kv=int4", "fp32:kv=int2", "torchao-int8wo:kv=int4",
                 "torchao-int8wo:kv=int2", "gguf-f32", "gguf-q8_0:kv=int4"):
        assert name in proc.stdout, (name, proc.stdout)
    assert "gguf-q8_0:kv=int2 not measured" in proc.stdout  # llama.cpp has no int2: said, skipped
    assert "torchao-int8wo " not in " ".join(planned) + " "  # auto not asked for: not planned


def test_llama_cpp_kv_needs_heads_of_its_block_size(workdir, tmp_path):
    """random:tiny has heads of 16 values; llama.cpp's q4_0 cache needs multiples of 32: the
    cell fails with that reason, the others are measured."""
    from conftest import cli_env

    env = cli_env(QUANTBENCH_CACHE=str(tmp_path / "cache"))
    proc = quantbench("run", *TINY, "--schemes", "fp32,gguf-q8_0:kv=int4", "--log", "",
                      cwd=workdir, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    records = {r["scheme"]: r for r in export_json(workdir)}
    assert records["gguf-f32"]["status"] == "ok"
    assert "blocks of 32 values along each head" in records["gguf-q8_0:kv=int4"]["error"]


@pytest.mark.slow
def test_int4_kv_at_long_context_stores_a_fraction_of_the_bytes_with_kl(workdir):
    """The bundled model at 1,024 + 8 positions: the int4 cache (optimum-quanto, groups of 64,
    the newest 128 positions in fp32) holds ~5 bits a value against the fp32 cache's 32, and its
    drift is measured through the cache on 1,024-token windows."""
    proc = quantbench("run", "--schemes", "fp32,gguf-q8_0:kv=int4", "--kv-cache", "auto,int4",
                      "--prompt-tokens",
                      "1024", "--new-tokens", "8", "--warmup", "0", "--runs", "2",
                      "--no-repeat-baseline", "--eval-tokens", "1536", "--eval-context", "1024",
                      "--eval-stride", "512", "--log", "", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = {r["scheme"]: r for r in export_json(workdir)}
    assert set(records) == {"fp32", "fp32:kv=int4", "gguf-f32", "gguf-q8_0:kv=int4"}
    base, kv = records["fp32"], records["fp32:kv=int4"]
    held, small = base["info"]["kv_cache"], kv["info"]["kv_cache"]
    assert held["positions"] == small["positions"] == 1024 + 8 - 1
    # 30 layers x 3 KV heads x 64 channels x K and V, 4 bytes each in fp32.
    values = 30 * 3 * 64 * 2 * held["positions"]
    assert held["stored_bytes"] == 4 * values
    bits = 8 * small["stored_bytes"] / values
    assert 4.5 < bits < 6.5, bits  # 4 bits + an fp32 scale and zero per 64, the fp32 residual
    assert held["stored_bytes"] / small["stored_bytes"] > 4.5
    assert "Smallest KV cache: gguf-q8_0:kv=int4" in proc.stdout  # llama.cpp's, computed
    q = kv["quality"]
    assert q["tokens_scored"] == 1535 and q["context"] == 1024
    assert 0 < q["kl_mean"] < 0.2 and math.isfinite(q["ppl"]), q  # drift measured, not ruin
    assert base["quality"]["kl_mean"] == 0
    assert "scored through the int4 cache" in small["quality"]
    # The roofline counts the cache it measured.
    assert kv["info"]["kv_bytes_per_position"] == pytest.approx(small["bytes_per_position"])
    assert kv["roofline"]["kv_bytes_per_step"] < base["roofline"]["kv_bytes_per_step"] / 4
    # llama.cpp's own q4_0 cache: 18 bytes per 32 values against its f16 cache's 64, drift
    # measured through it (llama.cpp stores a batch's keys before attending to them).
    q8, q8kv = records["gguf-f32"], records["gguf-q8_0:kv=int4"]
    assert "Q4_0" in q8kv["info"]["kv_cache"]["implementation"]
    assert q8kv["vs_baseline"]["speed_reference"] == "gguf-f32"
    ratio = q8["info"]["kv_bytes_per_position"] / q8kv["info"]["kv_bytes_per_position"]
    assert ratio == pytest.approx(64 / 18)
    assert q8kv["quality"]["kl_mean"] > q8["quality"]["kl_mean"] > 0


@pytest.fixture(scope="module")
def bundled():
    import torch

    from quantbench import models

    resolved = models.resolve("default")
    model = models.load(resolved.to_dict(), torch.float32, "cpu", 0)
    ids = list(range(1000, 1000 + 96))
    return model, ids


def test_fp8_fallback_layer_is_transformers_fp8_cache(bundled):
    """quantbench's fp8 layer (for transformers without one, like the GPU image's 5.17) scores
    exactly as transformers' own fp8 cache where both exist."""
    from transformers.cache_utils import Cache, QuantizedCache

    from quantbench.kvcache import layers
    from quantbench.runtimes.eager import _logits_through_cache

    if not layers._has_native_fp8():
        pytest.skip("this transformers has no fp8 cache to compare with")
    model, ids = bundled
    n = model.config.num_hidden_layers
    ours = _logits_through_cache(model, "cpu", lambda: Cache(layers=[layers.Fp8DynamicLayer()
                                                                     for _ in range(n)]), ids)
    theirs = _logits_through_cache(model, "cpu", lambda: QuantizedCache("fp8", model.config), ids)
    exact = _logits_through_cache(model, "cpu", lambda: None, ids)
    assert abs(ours - theirs).max() < 1e-4
    assert abs(ours - exact).max() > 1e-3  # and fp8 does change the logits: the test can fail


def test_fp8_static_layer_stores_bytes_and_reads_what_the_dynamic_one_does(bundled):
    """The compiled runtime's fp8 static cache, run eager: one byte a value, and decode steps
    that see the same stored values as the eager fp8 cache."""
    import torch
    from transformers.cache_utils import Cache

    from quantbench import kvcache
    from quantbench.kvcache import layers

    model, ids = bundled
    n = model.config.num_hidden_layers
    static = layers.static_cache(kvcache.get("fp8"), model.config, max_cache_len=128)
    dynamic = Cache(layers=[layers.Fp8DynamicLayer() for _ in range(n)])
    prompt = torch.tensor([ids[:64]])
    steps = []
    with torch.no_grad():
        for cache in (static, dynamic):
            out = model(input_ids=prompt, past_key_values=cache, use_cache=True,
                        position_ids=torch.arange(64).unsqueeze(0))
            logits = []
            for i in range(8):  # the same tokens into both
                out = model(input_ids=torch.tensor([[ids[64 + i]]]), past_key_values=cache,
                            use_cache=True, position_ids=torch.tensor([[64 + i]]))
                logits.append(out.logits[0, -1])
            steps.append(torch.stack(logits))
    assert layers.stored_bytes(static) == n * 2 * 3 * 128 * 64 + n * 2 * 4  # fp8 + scales
    # The first layer's K and V come from the same embeddings: the same scales, the same bytes.
    first_static, first_dynamic = static.layers[0], dynamic.layers[0]
    assert first_static.k_scale == first_dynamic._quantized_keys[1]
    for stored, held in ((first_static.keys, first_dynamic._quantized_keys[0]),
                         (first_static.values, first_dynamic._quantized_values[0])):
        assert torch.equal(stored[:, :, :72].view(torch.uint8), held.view(torch.uint8))
    # Later layers differ by the prefill's rounding: the static prefill attended to its own fp8
    # values, the dynamic one to the full ones. That moves the logits by about as much as fp8
    # itself does (4.3% of their range with 2 threads, 5.7% with 1: CPU matmuls sum in another
    # order per thread count, and fp8 rounding amplifies it), far less than a wrong position
    # or scale would.
    scale = steps[1].abs().max().item()
    assert (steps[0] - steps[1]).abs().max().item() < 0.08 * scale
    exact = Cache(layers=[layers.DynamicLayer() for _ in range(n)])
    with torch.no_grad():
        model(input_ids=prompt, past_key_values=exact, use_cache=True)
        out = model(input_ids=torch.tensor([[ids[64]]]), past_key_values=exact, use_cache=True)
    assert (out.logits[0, -1] - steps[1][0]).abs().max().item() > 1e-3  # fp8 changes logits
