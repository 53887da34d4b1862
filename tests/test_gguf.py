"""GGUF through llama.cpp: quantbench's own export, llama.cpp's quantizer and runtime, compared
like with like (speed against llama.cpp's own F32) on the same prompt token ids."""

import json

import numpy as np
import pytest

from conftest import TINY, export_json, quantbench

llama_cpp = pytest.importorskip("llama_cpp", reason="the gguf extra (llama-cpp-python) is part "
                                "of the test install; without it this module cannot run")


def _tiny_model(config_class, **extra):
    import torch

    config = config_class(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                          max_position_embeddings=512, **extra)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # biases start at zero: give them values so a lost bias shows
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)
    return model


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


@pytest.mark.parametrize("arch,extra", [
    ("llama", {"tie_word_embeddings": True}),
    ("llama", {"tie_word_embeddings": False}),
    ("llama", {"tie_word_embeddings": True, "rope_parameters": LLAMA3_ROPE}),
    ("qwen2", {"tie_word_embeddings": True}),
])
def test_exported_f32_gguf_gives_the_torch_logits(tmp_path, arch, extra):
    """The export is right if llama.cpp computes the same logits as transformers from it
    (Q/K permutation, tied output, llama3 RoPE factors and Qwen2 biases all matter)."""
    import torch
    from transformers import LlamaConfig, Qwen2Config

    from quantbench import gguf_export
    from quantbench.runtimes.llamacpp import LlamaCppModel

    model = _tiny_model(LlamaConfig if arch == "llama" else Qwen2Config, **extra)
    path = tmp_path / "F32.gguf"
    gguf_export.export_f32(model, path)
    ids = list(range(5, 200, 3))
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    engine = LlamaCppModel(path, 256, 2, gpu=False, logits_all=True)
    got = engine.logits(ids)
    engine.close()
    scale = np.abs(expected).max()
    assert np.abs(expected - got).max() < 1e-3 * scale
    # The wrong answer is far off: the test can fail.
    assert np.abs(expected[1:] - got[:-1]).max() > 0.1 * scale


def test_gguf_file_facts_are_read_once_per_file_and_give_the_models_cache_shape(tmp_path,
                                                                               monkeypatch):
    """A cell's GGUF facts (tensor bytes, and the KV cache's shape from the file's metadata)
    are parsed once per file and taken from the cache after; a rewritten file is read again."""
    import os

    from transformers import LlamaConfig

    from quantbench import gguf_export
    from quantbench.runtimes import llamacpp

    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))
    model = _tiny_model(LlamaConfig, tie_word_embeddings=False)
    path = tmp_path / "F32.gguf"
    gguf_export.export_f32(model, path)
    reads = []
    real = llamacpp._read_file_facts
    monkeypatch.setattr(llamacpp, "_read_file_facts", lambda p: reads.append(p) or real(p))
    first = llamacpp.file_facts(path)
    assert llamacpp.file_facts(path) == first and len(reads) == 1
    # 2 layers, 2 KV heads of 64 / 4 = 16: what the model's own config says.
    assert first["kv_shape"] == {"layers": 2, "kv_heads": 2, "head_dim": 16}
    assert first["weights_bytes"] == sum(4 * p.numel() for p in model.parameters())
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert llamacpp.file_facts(path) == first and len(reads) == 2


def test_gguf_schemes_on_a_random_model_against_llama_cpp_f32(workdir, tmp_path):
    env_cache = {"QUANTBENCH_CACHE": str(tmp_path / "cache")}
    from conftest import cli_env

    env = cli_env(**env_cache)
    proc = quantbench("run", *TINY, "--schemes", "fp32,gguf-q8_0,gguf-q4_0", "--log", "",
                      cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "added gguf-f32" in proc.stdout
    records = export_json(workdir)
    assert [r["scheme"] for r in records] == ["fp32", "gguf-f32", "gguf-q8_0", "gguf-q4_0"]
    fp32, f32, q8, q4 = records
    assert fp32["runtime"] == "eager" and {r["runtime"] for r in records[1:]} == {"llama.cpp"}
    assert all(r["status"] == "ok" for r in records)
    # Speed like with like: every GGUF scheme against llama.cpp's own F32 run.
    assert q8["vs_baseline"]["speed_reference"] == "gguf-f32"
    assert "decode_speedup" in q4["vs_baseline"]
    # Exact bytes from the file's tensors: F32 holds what torch holds (less torch's rotary
    # inv_freq buffers, which llama.cpp computes), Q8_0 and Q4_0 less.
    assert f32["memory"]["weights_bytes"] == pytest.approx(fp32["memory"]["weights_bytes"], rel=1e-3)
    assert q4["memory"]["weights_bytes"] < q8["memory"]["weights_bytes"] < f32["memory"]["weights_bytes"]
    assert q8["info"]["gguf_tensor_types"]["Q8_0"] > 0
    assert q8["info"]["quantize_s"] > 0 and q8["info"]["gguf_quantize"]["cached"] is False
    assert len(q4["info"]["output_ids"][0]) == 6
    # The files are cached and reused by the next run, which says so; timings are new.
    proc = quantbench("run", *TINY, "--schemes", "fp32,gguf-q8_0", "--force", "--log", "",
                      cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    again = export_json(workdir)
    assert again[2]["info"]["gguf_cached"] is True
    assert again[2]["info"]["quantize_s"] == pytest.approx(q8["info"]["quantize_s"])


def test_gguf_refuses_batches_and_gguf_file_needs_a_gguf_model(workdir):
    proc = quantbench("run", *TINY, "--schemes", "fp32,gguf-q8_0", "--batch-size", "2", cwd=workdir)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--batch-size 1" in proc.stderr
    proc = quantbench("run", *TINY, "--schemes", "gguf-file", cwd=workdir)
    assert proc.returncode == 2 and "gguf-file" in proc.stderr and "Traceback" not in proc.stderr
    assert not (workdir / "quantbench.db").exists()


def test_gguf_schemes_listed(workdir):
    listed = {s["name"]: s for s in json.loads(quantbench("schemes", "--json", cwd=workdir).stdout)}
    for name in ("gguf-f32", "gguf-f16", "gguf-q8_0", "gguf-q4_0", "gguf-q4_k_m", "gguf-q5_k_m",
                 "gguf-q6_k", "gguf-file"):
        assert listed[name]["backend"] == "llama.cpp"
        assert listed[name]["available"], listed[name]["reason"]
    assert listed["gguf-q4_k_m"]["settings"]["ggml_type"] == "Q4_K_M"


@pytest.mark.slow
def test_bundled_model_gguf_matches_torch_and_runs_its_own_file(workdir):
    """The real model: llama.cpp's F32 run of quantbench's export decodes the same greedy
    tokens as torch fp32; the package's own Q4_1 file runs as it is."""
    proc = quantbench("run", "--schemes", "fp32,gguf-q4_k_m,gguf-file", "--prompt-tokens", "64",
                      "--new-tokens", "24", "--warmup", "1", "--runs", "3", "--log", "", "--no-quality",
                      "--no-repeat-baseline",
                      cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fp32, f32, q4km, own = export_json(workdir)
    assert f32["scheme"] == "gguf-f32"
    assert f32["info"]["output_ids"] == fp32["info"]["output_ids"]
    assert "Q4_1" in own["info"]["gguf_tensor_types"]
    assert own["info"]["gguf_file"].endswith(".gguf")
    assert {"Q4_K", "Q6_K"} <= set(q4km["info"]["gguf_tensor_types"])
    assert q4km["memory"]["weights_bytes"] < 0.3 * fp32["memory"]["weights_bytes"]
