"""Hardware ceilings measured once and cached, each cell placed against them, and telemetry
fields absent with a reason where there is no GPU."""

import json

import pytest

from conftest import TINY, cli_env, export_json, quantbench
from quantbench.analysis import roofline
from quantbench.hardware import datasheet


def test_hardware_is_measured_once_and_cached(workdir, tmp_path):
    env = cli_env(QUANTBENCH_CACHE=str(tmp_path / "cache"))
    first = quantbench("hardware", "--device", "cpu", "--json", cwd=workdir, env=env)
    assert first.returncode == 0, first.stderr
    profile = json.loads(first.stdout)
    assert profile["copy_bandwidth_Bps"] > 1e8 and profile["matmul_flops"] > 1e8
    again = json.loads(quantbench("hardware", "--device", "cpu", "--json", cwd=workdir, env=env).stdout)
    assert again["measured_at"] == profile["measured_at"]  # read back, not measured again
    table = quantbench("hardware", "--device", "cpu", "--refresh", cwd=workdir, env=env)
    assert table.returncode == 0 and "copy bandwidth" in table.stdout and "GB/s" in table.stdout


def test_every_cell_is_placed_against_the_measured_ceiling(workdir):
    proc = quantbench("run", *TINY, "--schemes", "fp32,bf16", "--log", "", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "% roofline" in proc.stdout
    for r in export_json(workdir):
        roof = r["roofline"]
        # On the CPU the ceiling is the read-dominated kernel's rate, the copy's beside it.
        bandwidth = r["env"]["hardware"]["read_bandwidth_Bps"]
        assert roof["bandwidth_source"].startswith("measured read (torch.sum")
        assert roof["copy_bandwidth_Bps"] == r["env"]["hardware"]["copy_bandwidth_Bps"]
        # tiny preset: 2 layers x 2 KV heads x 16 head dim x K and V x element size
        element = 4 if r["scheme"] == "fp32" else 2
        assert r["info"]["kv_bytes_per_position"] == 2 * 2 * 16 * 2 * element
        kv = r["info"]["kv_bytes_per_position"] * (16 + 6 / 2)
        assert roof["bytes_per_token"] == pytest.approx(r["memory"]["weights_bytes"] + kv)
        assert roof["ceiling_tok_s"] == pytest.approx(bandwidth / roof["bytes_per_token"])
        assert roof["achieved_pct"] == pytest.approx(
            100 * r["metrics"]["decode_tok_s"]["median"] / roof["ceiling_tok_s"])
        # No GPU: no NVML fields, and a reason instead of zeros.
        assert "gpu_util_pct" not in r["metrics"]
        assert r["info"]["energy"] == {"reason": "CPU run: no NVML energy counter"}
    md = quantbench("export", "--format", "md", cwd=workdir).stdout
    assert "Roofline (decode against the measured read (torch.sum over 256 MiB of float32) bandwidth" in md


def test_roofline_without_a_profile_says_why():
    record = {"status": "ok", "memory": {"weights_bytes": 100}, "info": {},
              "metrics": {"decode_tok_s": {"median": 1.0}},
              "workload": {"batch_size": 1, "prompt_tokens": 8, "new_tokens": 4}}
    assert roofline(record, {})["reason"] == "no hardware profile for this run"
    placed = roofline(record, {"copy_bandwidth_Bps": 1000.0})
    assert placed["ceiling_tok_s"] == 10.0 and placed["kv_counted"] is False


@pytest.mark.parametrize("name,expected", [("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
                                           ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
                                           ("NVIDIA H200", "NVIDIA H200"),
                                           ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB"),
                                           ("Tesla T4", "NVIDIA T4"), ("NVIDIA L40S", "NVIDIA L40S"),
                                           ("NVIDIA A10", "NVIDIA A10"), ("Some Other GPU", None)])
def test_datasheet_lookup(name, expected):
    spec = datasheet.lookup(name)
    assert (spec.name if spec else None) == expected
