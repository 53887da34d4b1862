"""GPU paths, run on a lent H100/H200 with `pytest -m gpu` (deselected elsewhere)."""

import pytest

from conftest import export_json, quantbench

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.fail("pytest -m gpu was asked for, but no CUDA GPU is visible")


def test_default_run_on_gpu_uses_bf16_baseline_and_gpu_memory(workdir):
    proc = quantbench("run", "--model", "random:gpt2-124m", "--prompt-tokens", "64",
                      "--new-tokens", "16", "--warmup", "1", "--runs", "3", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = export_json(workdir)
    assert records[0]["scheme"] == "bf16" and records[0]["baseline"]
    assert [r["scheme"] for r in records][:2] == ["bf16", "fp16"]
    for r in records:
        assert r["status"] == "ok", r["error"]
        assert r["device"] == "cuda:0"
        assert r["memory"]["peak_allocated_bytes"] >= r["memory"]["weights_bytes"] * 0.9
        assert r["memory"]["peak_reserved_bytes"] >= r["memory"]["peak_allocated_bytes"]
        assert r["metrics"]["decode_tok_s"]["median"] > 0
        assert r["env"]["gpus"][0]["name"]


# gpt2-124m preset: 85 M parameters in linears, 38.6 M in the (tied, unquantized) embedding,
# so 8-bit linears leave ~0.66 of the bf16 bytes and 4-bit ones ~0.48, scales included.
@pytest.mark.parametrize("scheme,max_fraction", [
    ("torchao-int8wo", 0.70), ("torchao-int4wo", 0.55), ("torchao-float8wo", 0.70),
    ("bnb-int8", 0.70), ("bnb-nf4", 0.55)])
def test_gpu_schemes_run_and_shrink_the_weights(workdir, scheme, max_fraction):
    proc = quantbench("run", "--model", "random:gpt2-124m", "--schemes", f"bf16,{scheme}",
                      "--prompt-tokens", "32", "--new-tokens", "8", "--warmup", "1", "--runs", "2",
                      cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    base, quant = export_json(workdir)
    assert quant["status"] == "ok", quant["error"]
    assert quant["memory"]["weights_bytes"] < max_fraction * base["memory"]["weights_bytes"]
