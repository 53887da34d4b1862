"""`quantbench quantize` writes a checkpoint transformers loads quantized; `--model DIR
--baseline-model SPEC` measures it as shipped (test_calibrated.py measures a GPTQ checkpoint
beside the same scheme applied in place)."""

import pytest

from conftest import TINY, export_json, quantbench

pytestmark = pytest.mark.slow

def test_a_checkpoint_is_never_written_over_nor_measured_without_its_float_model(workdir):
    (workdir / "taken").mkdir()
    (workdir / "taken" / "keep.txt").write_text("measured")
    proc = quantbench("quantize", "--scheme", "torchao-int8wo", "--out", workdir / "taken",
                      cwd=workdir)
    assert proc.returncode != 0 and "never overwrites" in proc.stderr
    assert (workdir / "taken" / "keep.txt").read_text() == "measured"
    proc = quantbench("quantize", "--scheme", "bnb-nf4", "--out", workdir / "x", cwd=workdir)
    assert proc.returncode != 0 and "torchao-int4wo" in proc.stderr
    assert "Traceback" not in proc.stderr
    made = quantbench("quantize", "--model", "random:tiny", "--scheme", "torchao-int8wo",
                      "--out", workdir / "tiny-int8", cwd=workdir)
    assert made.returncode == 0, made.stdout + made.stderr
    for args, says in (
        ([], "--baseline-model SPEC"),
        (["--baseline-model", "default"], "tokens"),  # SmolLM2's vocabulary is not tiny's
        (["--baseline-model", workdir / "tiny-int8"], "is itself quantized"),
    ):
        proc = quantbench("run", "--model", workdir / "tiny-int8", *args, *TINY[2:], cwd=workdir)
        assert proc.returncode != 0 and says in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = quantbench("run", *TINY, "--baseline-model", "default", cwd=workdir)
    assert proc.returncode != 0 and "drop --baseline-model" in proc.stderr
    # Against its own random preset (same seed, same weights): measured as shipped.
    proc = quantbench("run", "--model", workdir / "tiny-int8", "--baseline-model", "random:tiny",
                      "--schemes", "fp32,torchao-int8wo", *TINY[2:], cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = {r["scheme"]: r for r in export_json(workdir)}
    assert records["checkpoint"]["status"] == "ok", records["checkpoint"]["error"]
    assert (records["checkpoint"]["memory"]["weights_bytes"]
            == records["torchao-int8wo"]["memory"]["weights_bytes"])
    assert records["checkpoint"]["info"]["output_ids"] == records["torchao-int8wo"]["info"]["output_ids"]
