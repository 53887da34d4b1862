"""GPTQ and AWQ int4: the same tensors as round-to-nearest, better values in them."""

import pytest
import torch

from conftest import TINY, export_json, quantbench
from quantbench.calibration import gptq, grids


def test_the_cpu_grid_rounds_and_packs_as_torchaos_own_int4():
    from torchao.quantization import IntxWeightOnlyConfig, PerGroup, quantize_

    torch.manual_seed(0)
    linear = torch.nn.Linear(576, 192, bias=False)
    weight = linear.weight.detach().clone()
    quantize_(linear, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(64)))
    grid = grids.IntxSymmetric(64)
    scale, zero = grid.qparams(weight)
    packed = grid.pack(grid.fake(weight, scale, zero), scale, zero)
    # Bit for bit what the RTN scheme stores: a calibrated scheme differs only in its values.
    assert type(packed) is type(linear.weight)
    for field in ("qdata", "scale", "zero_point"):
        assert torch.equal(getattr(packed, field), getattr(linear.weight, field)), field
    assert torch.equal(grid.rtn(weight), linear.weight.dequantize())


def test_gptq_lowers_the_output_error_on_correlated_inputs():
    torch.manual_seed(0)
    # Correlated inputs of low effective rank, as real activations are (with iid inputs there
    # is nothing to compensate through, and GPTQ gains a few percent only).
    x = torch.randn(4096, 32) @ torch.randn(32, 256) + 0.1 * torch.randn(4096, 256)
    weight = torch.randn(128, 256)
    hessian = 2 * x.T @ x / len(x)
    grid = grids.IntxSymmetric(64)
    rounded, scale, zero = gptq.quantize(weight, hessian, grid)

    def output_error(w):
        return float(((x @ (weight - w).T) ** 2).mean())

    assert output_error(rounded) < 0.3 * output_error(grid.rtn(weight))
    # Its weights lie on the grid its scales define: packing loses nothing.
    assert torch.allclose(grid.fake(rounded, scale, zero), rounded, atol=1e-6)
    assert torch.equal(grid.pack(rounded, scale, zero).dequantize(), grid.fake(rounded, scale, zero))


@pytest.mark.slow
def test_gptq_and_awq_drift_less_than_round_to_nearest_and_ship_as_checkpoints(workdir):
    """On the bundled model: the calibrated schemes beside RTN at the same group, and a GPTQ
    checkpoint written by `quantbench quantize`, measured as shipped, beside GPTQ applied in place
    (one run, so the suite pays for the model's cells once)."""
    import json

    calibrated = ["gptq-int4:samples=8", "awq-int4:samples=8"]
    made = quantbench("quantize", "--model", "default", "--scheme", calibrated[0], "--out",
                      workdir / "ckpt", cwd=workdir)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "measure it as shipped: quantbench run --model" in made.stdout
    config = json.loads((workdir / "ckpt" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "torchao"
    provenance = json.loads((workdir / "ckpt" / "quantbench.json").read_text())
    assert provenance["scheme"] == calibrated[0] and provenance["calibration"]["samples"] == 8
    proc = quantbench("run", "--model", workdir / "ckpt", "--baseline-model", "default",
                      "--schemes", ",".join(["fp32", "torchao-int4wo", *calibrated]),
                      "--prompt-tokens", "16", "--new-tokens", "3", "--warmup", "0", "--runs",
                      "1", "--eval-tokens", "512", "--eval-context", "256", "--eval-stride",
                      "128", "--log", "", "--no-repeat-baseline", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = {r["scheme"]: r for r in export_json(workdir)}
    assert list(records) == ["fp32", "torchao-int4wo", *calibrated, "checkpoint"]
    rtn = records["torchao-int4wo"]
    for name in calibrated:
        r = records[name]
        assert r["status"] == "ok", r["error"]
        # Same group, same tensors, same bytes: only the int4 values differ ...
        assert r["scheme_settings"]["group"] == rtn["scheme_settings"]["group"] == 64
        assert r["memory"]["weights_bytes"] == rtn["memory"]["weights_bytes"]
        assert r["info"]["weight_kinds"] == rtn["info"]["weight_kinds"] == {
            "Linear/IntxUnpackedToInt8Tensor": 210, "Linear/Tensor[float32]": 1}
        # ... and they are better ones: well below RTN's drift, intervals apart.
        q, q_rtn = r["quality"], rtn["quality"]
        assert q["kl_mean"] < 0.85 * q_rtn["kl_mean"], (name, q["kl_mean"], q_rtn["kl_mean"])
        assert q["kl_mean"] + 2 * q["kl_se"] < q_rtn["kl_mean"] - 2 * q_rtn["kl_se"]
        # Calibration is its own text and its own time, recorded apart from loading.
        c = r["info"]["calibration"]
        assert c["samples"] == 8 and c["length"] == 256 and "jargon" in c["source"]
        assert "@1000000" in c["source"] and "@200000" in q["source"]
        assert 0 < c["seconds"] <= r["info"]["quantize_s"]
        assert c["calibrated_linears"] == 30 * 7  # every linear of every decoder layer
    assert records["awq-int4:samples=8"]["info"]["calibration"]["awq_alpha"]["max"] > 0
    assert "calibrate" in proc.stdout
    # The checkpoint as shipped is GPTQ in place: same tensors, bytes and drift (the same
    # calibration ids make the same int4 values), nothing lost by writing and loading.
    shipped, in_place = records["checkpoint"], records[calibrated[0]]
    assert shipped["status"] == "ok", shipped["error"]
    assert shipped["model_spec"] == str(workdir / "ckpt") and in_place["model_spec"] == "default"
    assert shipped["info"]["weight_kinds"] == in_place["info"]["weight_kinds"]
    assert shipped["memory"]["weights_bytes"] == in_place["memory"]["weights_bytes"]
    assert shipped["quality"]["kl_mean"] == pytest.approx(in_place["quality"]["kl_mean"], abs=1e-6)
    for part in ("model", "layers"):  # (no nominal bits to hold a checkpoint's to)
        assert shipped["bits_per_weight"][part] == in_place["bits_per_weight"][part]


def test_a_calibrated_cell_is_its_own_cell_per_calibration_set(workdir):
    """Random-weight models calibrate on random ids (and say so); other calibration settings are
    another cell, the same ones are reused."""
    args = ["run", *TINY, "--schemes", "fp32,gptq-int4:samples=2:length=16"]
    proc = quantbench(*args, cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = export_json(workdir)[-1]
    assert first["status"] == "ok", first["error"]
    assert first["info"]["calibration"]["source"].startswith("random-ids")
    again = quantbench(*args, cwd=workdir)
    assert again.returncode == 0 and "reused gptq-int4:length=16:samples=2" in again.stderr
    # Another calibration set is another cell: the planner gives it other ids and identity.
    from quantbench.planner import Planner, points
    from quantbench.runconfig import RunConfig

    def cell(spec):
        config = RunConfig.from_flat({"model": ["random:tiny"], "schemes": ["fp32", spec],
                                      "device": ["cpu"]})
        comparison, = Planner(config, []).comparisons(points(config))
        return comparison.cells[1]

    two, three = cell("gptq-int4:samples=2:length=16"), cell("gptq-int4:samples=3:length=16")
    assert three.cell_id != two.cell_id and two.scheme_settings["samples"] == 2
    assert len(three.calibration["ids"]) == 3
    assert three.calibration["sha256"] != two.calibration["sha256"]


def test_a_calibrated_scheme_reports_bad_settings_in_one_line(workdir):
    proc = quantbench("run", *TINY, "--schemes", "gptq-int4:samples=0", cwd=workdir)
    assert proc.returncode != 0
    assert "samples must be >= 1" in proc.stderr and "Traceback" not in proc.stderr
