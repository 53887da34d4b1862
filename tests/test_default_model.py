"""The real bundled model (SmolLM2-135M) through the real CLI, prompts from the real corpus."""

import pytest

from conftest import export_json, quantbench

pytestmark = pytest.mark.slow


def test_default_model_end_to_end(workdir):
    proc = quantbench("run", "--schemes", "fp32,torchao-int8wo", "--prompt-tokens", "32",
                      "--new-tokens", "8", "--warmup", "1", "--runs", "3", "--eval-tokens", "256",
                      "--eval-context", "128", "--eval-stride", "64", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SmolLM2-135M-Instruct" in proc.stdout
    records = export_json(workdir)
    fp32, int8, again = records
    # The baseline measured again at the end, for speed only: the run's drift check.
    assert again["scheme"] == "fp32" and again["role"] == "baseline-repeat" and not again["quality"]
    assert again["vs_baseline"]["baseline_drift"]["ratio"] > 0
    assert not fp32["random_weights"] and "dequantized" in fp32["model_label"]
    assert "jargon" in fp32["prompt_source"]
    assert fp32["info"]["parameters"] == pytest.approx(134.5e6, rel=0.01)
    # fp32: 4 bytes a parameter (tied embeddings once); int8 linears bring it well under half.
    assert fp32["memory"]["weights_bytes"] == pytest.approx(4 * 134.5e6, rel=0.01)
    assert int8["vs_baseline"]["weights_reduction_pct"] > 50
    assert all(r["status"] == "ok" for r in records)
    assert len(fp32["info"]["output_ids"][0]) == 8
    # Quality is on by default for a real model, and shows in the run table.
    assert fp32["quality"]["kl_mean"] == 0 and int8["quality"]["kl_mean"] > 0
    assert "KL ± SE" in proc.stdout
    # One line per objective, each with its figure: in the terminal and in the log's summary.
    bits = int8["bits_per_weight"]["model"]
    log = (workdir / "experiments" / "LOG.md").read_text()
    for text in (proc.stdout, log):
        flat = " ".join(text.split())
        assert "Fastest: " in flat
        assert (f"Smallest: torchao-int8wo, {int8['memory']['weights_bytes'] / 1e6:,.1f} MB of "
                f"weights ({bits:.2f} bits per weight)") in flat
        assert f"Closest to fp32: torchao-int8wo, KL {int8['quality']['kl_mean']:.4f}" in flat
        assert "Quality per bit (none has both fewer bits and less drift): torchao-int8wo" in flat


def test_every_cpu_scheme_runs_on_the_bundled_model(workdir):
    import json

    listed = json.loads(quantbench("schemes", "--json", cwd=workdir).stdout)
    # Calibrated schemes on a token calibration set: their own test weighs their quality.
    # (`checkpoint` runs a pre-quantized model folder: test_calibrated.py measures one.)
    cpu = [s["name"] + (":length=32:samples=2" if s["calibrated"] else "")
           for s in listed if s["available"] and s["name"] != "checkpoint"]
    assert len(cpu) >= 16 and "gptq-int4:length=32:samples=2" in cpu, cpu
    proc = quantbench("run", "--schemes", ",".join(cpu), "--prompt-tokens", "16", "--new-tokens",
                      "3", "--warmup", "0", "--runs", "1", "--log", "", "--no-quality",
                      "--no-repeat-baseline", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = export_json(workdir)
    assert [r["scheme"] for r in records] == cpu
    base = records[0]["memory"]["weights_bytes"]
    for r in records:
        assert r["status"] == "ok", (r["scheme"], r["error"])
        assert r["info"]["quantize_s"] >= 0 and r["memory"]["weights_bytes"] > 0
        if r["scheme"] not in ("fp32", "gguf-f32"):
            assert r["memory"]["weights_bytes"] < base, r["scheme"]  # every scheme shrinks it
    # Bits per weight from the stored bytes, scales included: the layers between the tables
    # hold what the scheme's name says, or the record says they do not.
    bits = {r["scheme"]: r["bits_per_weight"] for r in records}
    assert bits["fp32"]["layers"] == pytest.approx(32, abs=0.01)
    assert bits["bf16"]["layers"] == pytest.approx(16, abs=0.01)
    assert 8 < bits["torchao-int8wo"]["layers"] < 8.5  # + one fp32 scale per row of 576
    assert 4 < bits["bnb-nf4"]["layers"] < 4.6  # + absmax per block of 64
    assert bits["gguf-q4_0"]["layers"] == pytest.approx(4.5, abs=0.05)  # 18 bytes per 32
    assert bits["fp32"]["model"] > bits["bnb-nf4"]["model"] > bits["bnb-nf4"]["layers"]
    # torchao's int4 on the CPU keeps each 4-bit value in an int8 byte: flagged, not hidden.
    assert bits["torchao-int4wo"]["layers"] > 8 and "4-bit scheme storing" in bits[
        "torchao-int4wo"]["container_note"]
    # A calibrated int4 stores what RTN int4 stores, to the byte.
    assert bits["gptq-int4:length=32:samples=2"] == bits["torchao-int4wo"]
    assert not any("container_note" in bits[n] for n in ("torchao-int8wo", "bnb-nf4", "gguf-q4_0"))
