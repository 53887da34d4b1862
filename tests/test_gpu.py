"""GPU paths, run on a lent H100/H200 with `pytest -m gpu -n 0` (deselected elsewhere; one at a
time: they share the GPU). The kernels' GPU tests (qb, gemlite, decode attention) are in
test_gpu_kernels.py."""

import json
import os
import shutil

import pytest

from conftest import export_json, quantbench

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")


def test_default_run_on_gpu_uses_bf16_baseline_and_gpu_memory(workdir):
    proc = quantbench("run", "--model", "random:gpt2-124m", "--prompt-tokens", "64",
                      "--new-tokens", "16", "--warmup", "1", "--runs", "3", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = export_json(workdir)
    assert records[0]["scheme"] == "bf16" and records[0]["baseline"]
    assert [r["scheme"] for r in records][:2] == ["bf16", "fp16"]
    for r in records:
        assert r["status"] == "ok", r["error"]
        assert r["device"] in ("cuda:0", "cuda")  # cuda: the pool of a machine's GPUs
        assert r["memory"]["peak_allocated_bytes"] >= r["memory"]["weights_bytes"] * 0.9
        assert r["memory"]["peak_reserved_bytes"] >= r["memory"]["peak_allocated_bytes"]
        assert r["metrics"]["decode_tok_s"]["median"] > 0
        assert r["env"]["gpus"][0]["name"]


# gpt2-124m preset: 85 M parameters in linears, 38.6 M in the (tied, unquantized) embedding,
# so 8-bit linears leave ~0.66 of the bf16 bytes and 4-bit ones ~0.48, scales included.
GPU_SCHEMES = {
    "torchao-int8wo": 0.70, "torchao-int8dq": 0.70, "torchao-int4wo": 0.55,
    "torchao-float8wo": 0.70, "torchao-float8dq": 0.70,
    "bnb-int8": 0.70, "bnb-int8:threshold=0.0": 0.70, "bnb-nf4": 0.55, "bnb-nf4-dq": 0.55,
    "bnb-fp4": 0.55, "quanto-int8": 0.70, "quanto-int4": 0.55, "hqq-int8": 0.70, "hqq-int4": 0.55,
}


@pytest.fixture(scope="module")
def every_gpu_scheme(tmp_path_factory):
    """One run with every GPU scheme (one process per cell, as always): a failing scheme is a
    recorded failed cell, which its own test below reports."""
    root = tmp_path_factory.mktemp("gpu-schemes")
    proc = quantbench("run", "--model", "random:gpt2-124m", "--schemes",
                      "bf16," + ",".join(GPU_SCHEMES), "--prompt-tokens", "32", "--new-tokens",
                      "8", "--warmup", "1", "--runs", "2", "--cell-timeout", "300", cwd=root)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    keep = os.environ.get("QUANTBENCH_KEEP_DB")  # the device tool copies it back for docs/results
    if keep:
        shutil.copy(root / "quantbench.db", keep)
    return {r["scheme"]: r for r in export_json(root)}


@pytest.mark.parametrize("scheme", list(GPU_SCHEMES))
def test_gpu_schemes_run_and_shrink_the_weights(every_gpu_scheme, scheme):
    base, quant = every_gpu_scheme["bf16"], every_gpu_scheme[scheme]
    assert quant["status"] == "ok", quant["error"]
    assert quant["device"] == "cuda:0"
    assert quant["memory"]["weights_bytes"] < GPU_SCHEMES[scheme] * base["memory"]["weights_bytes"]
    assert quant["info"]["quantize_s"] > 0
    # bitsandbytes schemes compute in fp16 (quantbench picks its kernels' dtype), the rest in bf16.
    expected = "float16" if scheme.startswith("bnb-") else "bfloat16"
    assert quant["scheme_settings"]["compute_dtype"] == expected
    assert len(quant["info"]["output_ids"][0]) == 8


def test_gguf_on_a_gpu_needs_a_cuda_build_of_llama_cpp(workdir):
    """Where llama-cpp-python is absent or a CPU build, a GGUF scheme on the GPU is refused in
    one line that names the fix, before anything is measured."""
    import importlib.util

    proc = quantbench("run", "--model", "random:tiny", "--schemes", "bf16,gguf-q8_0", cwd=workdir)
    if importlib.util.find_spec("llama_cpp") is not None:
        import llama_cpp

        if llama_cpp.llama_supports_gpu_offload():
            assert proc.returncode == 0, proc.stderr
            return
        assert "GGML_CUDA=on" in proc.stderr
    else:
        assert "quantbench[gguf]" in proc.stderr
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert not (workdir / "quantbench.db").exists()


def test_roofline_telemetry_and_energy_on_the_gpu(workdir):
    """The device is profiled (copy bandwidth, bf16 matmul), each cell placed against its
    ceiling, and NVML sampled during the timed runs with energy from the counter."""
    proc = quantbench("run", "--model", "random:llama-3.2-1b", "--schemes", "bf16,torchao-int8wo",
                      "--prompt-tokens", "128", "--new-tokens", "64", "--warmup", "1", "--runs",
                      "5", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = export_json(workdir)
    profile = records[0]["env"]["hardware"]
    assert profile["copy_bandwidth_Bps"] > 1e12 and profile["matmul_flops"] > 1e14
    assert profile["datasheet"]["memory_bandwidth_Bps"] >= 2e12  # an H100 or H200
    for r in records:
        roof = r["roofline"]
        assert 0 < roof["achieved_pct"] < 100 and roof["kv_counted"]
        assert roof["bytes_per_token"] > r["memory"]["weights_bytes"]
        assert 0 <= r["metrics"]["gpu_util_pct"]["median"] <= 100
        assert r["metrics"]["gpu_power_w"]["median"] > 10
        energy = r["info"]["energy"]
        assert energy.get("j_per_token", 0) > 0 or "too short" in energy.get("reason", ""), energy
    hw = quantbench("hardware", cwd=workdir)
    assert hw.returncode == 0 and "GB/s" in hw.stdout


COMPILED_SCHEMES = ["bf16", "torchao-int8wo", "torchao-int4wo", "torchao-float8wo", "bnb-nf4"]


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("compiled")
    proc = quantbench("run", "--model", "random:gpt2-124m", "--runtime", "compiled", "--schemes",
                      ",".join(COMPILED_SCHEMES), "--prompt-tokens", "32", "--new-tokens", "24",
                      "--warmup", "1", "--runs", "3", "--cell-timeout", "600", cwd=root)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return {r["scheme"]: r for r in export_json(root)}


def test_compiled_bf16_replays_one_checked_graph_per_token(compiled_run):
    r = compiled_run["bf16"]
    assert r["status"] == "ok", r["error"]
    c = r["info"]["compiled"]
    assert c["compile"]["graph_breaks"] == 0 and c["compile"]["seconds"] > 0
    assert c["cuda_graph"]["captured"] is True, c["cuda_graph"]
    assert c["cuda_graph"]["replays_per_token"] == 1
    check = c["cuda_graph"]["check"]
    assert check["steps"] == 16 and (check["identical"] or check["within_tolerance"]), check
    profile = c["profile"]
    assert profile["kernels_per_token"] >= 12 * 4  # at least a few kernels a layer
    assert sum(k["us_per_token"] for k in profile["by_kind"].values()) == pytest.approx(
        profile["kernel_us_per_token"], rel=1e-6)
    assert r["metrics"]["decode_tok_s"]["median"] > 0
    assert len(r["info"]["output_ids"][0]) == 24
    assert r["info"]["kv_positions_read"] == 32 + 24 + 8


def test_every_scheme_of_a_comparison_compiles_with_the_same_settings(compiled_run):
    """torchao's quantize_ would tune its own cells' kernels and not bf16's: the runtime sets
    the compiler's options, and every cell records the same ones."""
    import json

    settings = {json.dumps(r["info"]["compiled"]["compile"].get("inductor"), sort_keys=True)
                for r in compiled_run.values() if r["status"] == "ok"}
    assert len(settings) == 1 and '"coordinate_descent_tuning": true' in settings.pop()


def test_a_repeat_cell_reuses_its_first_processs_tuning_picks(workdir):
    """Coordinate-descent tuning picks launch configs by timing them, a draw per process. The
    baseline's repeat (a second process, the same graph) must load the first one's picks with
    the graph instead of tuning again: otherwise the repeat measures other kernels."""
    import sqlite3

    from conftest import cli_env

    env = cli_env(TORCHINDUCTOR_CACHE_DIR=str(workdir / "inductor"))  # the first compile is cold
    proc = quantbench("run", "--model", "random:gpt2-124m", "--runtime", "compiled", "--schemes",
                      "bf16", "--prompt-tokens", "32", "--new-tokens", "24", "--warmup", "1",
                      "--runs", "3", cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = sqlite3.connect(workdir / "quantbench.db").execute(
        "SELECT info FROM cells ORDER BY cell_row").fetchall()
    first, repeat = (json.loads(info)["compiled"]["compile"] for (info,) in rows)
    assert first["fx_graph_cache"] == {"hits": 0, "misses": 1}
    assert repeat["fx_graph_cache"] == {"hits": 1, "misses": 0}
    assert first["tuning_s"] > 1.0, first["phases_s"]  # it did tune: the check below means something
    assert repeat["tuning_s"] < 0.25 * first["tuning_s"], (first["tuning_s"], repeat["tuning_s"])


@pytest.mark.parametrize("scheme", COMPILED_SCHEMES[1:])
def test_compiled_quantized_schemes_say_whether_a_graph_covered_the_step(compiled_run, scheme):
    r = compiled_run[scheme]
    assert r["status"] == "ok", r["error"]
    graph = r["info"]["compiled"]["cuda_graph"]
    if graph["captured"]:
        assert graph["check"]["identical"] or graph["check"]["within_tolerance"], graph["check"]
        assert r["info"]["compiled"]["profile"]["kernels_per_token"] > 0
    else:  # a fall-back is allowed only with its reason on the record
        assert graph["reason"] and graph["consequence"]


def test_a_gpu_run_is_judged_against_its_own_noise(workdir):
    """Adaptive runs, the baseline measured again at the end, verdicts with the noise floor,
    the peak window named, the head's storage recorded, ceilings per matmul dtype."""
    proc = quantbench("run", "--model", "random:gpt2-124m", "--schemes", "bf16,fp16,torchao-int8wo",
                      "--prompt-tokens", "64", "--new-tokens", "32", "--max-seconds", "5",
                      "--log", "", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = export_json(workdir)
    assert [(r["scheme"], r["role"]) for r in records] == [
        ("bf16", "measure"), ("fp16", "measure"), ("torchao-int8wo", "measure"),
        ("bf16", "baseline-repeat")]
    drift = records[3]["vs_baseline"]["baseline_drift"]
    for r in records:
        assert r["status"] == "ok", r["error"]
        assert r["info"]["timed_runs"]["runs"] >= 5 and r["info"]["warmup"]["done"] >= 2
        assert r["memory"]["peak_scope"] == "torch peak allocated during the timed runs"
        assert r["info"]["tables"]["lm_head"]["dtype"] == ("float16" if r["scheme"] == "fp16"
                                                            else "bfloat16")
    for r in records[1:3]:
        speed = r["vs_baseline"]["decode_speedup"]
        assert speed["verdict"] in ("faster", "slower", "equivalent", "inconclusive")
        assert speed["threshold"] == pytest.approx(max(0.02, r["vs_baseline"]["noise_floor"]))
        assert r["vs_baseline"]["noise_floor"] >= abs(drift["ratio"] - 1)
    profile = records[0]["env"]["hardware"]
    assert profile["matmul"]["bfloat16"]["flops"] > 1e14
    major, minor = torch.cuda.get_device_capability(0)
    if (major, minor) >= (8, 9):
        assert profile["matmul"]["int8"]["flops"] > 0 and profile["matmul"]["float8"]["flops"] > 0
    assert records[0]["roofline"]["compute_source"] == "measured bfloat16 matmul"


def test_a_cuda_oom_is_recorded_and_the_next_cell_runs_clean(workdir):
    """A real CUDA out-of-memory error ends its own cell, names the allocation that failed, and
    the next cell starts on a clean device (its own process)."""
    from conftest import cli_env

    proc = quantbench("run", "--model", "random:gpt2-124m", "--schemes", "bf16,test-cuda-oom,fp16",
                      "--prompt-tokens", "32", "--new-tokens", "8", "--warmup", "1", "--runs", "3",
                      "--no-repeat-baseline", "--log", "", cwd=workdir,
                      env=cli_env(QUANTBENCH_PLUGINS="qb_test_plugins"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    records = {r["scheme"]: r for r in export_json(workdir)}
    oom = records["test-cuda-oom"]
    assert oom["status"] == "failed" and oom["error"].startswith("CUDA out of memory"), oom["error"]
    assert "Tried to allocate" in oom["error"]
    after = records["fp16"]
    assert after["status"] == "ok"
    # Clean device: the next cell's peak is its own model's, not the failed cell's leftovers.
    assert after["memory"]["peak_reserved_bytes"] < 4 * 2**30
    assert not after["info"]["contention"]["contended"], after["info"]["contention"]


def test_another_process_on_the_gpu_flags_the_cell(workdir):
    """A process computing on the same GPU (not a quantbench run: no lock stops it) during a
    cell's timed runs is recorded with its pid, and the cell is flagged contended; the device
    lock is keyed by the GPU's UUID."""
    import subprocess
    import sys
    import time

    from quantbench import devicelock

    assert devicelock.device_key("cuda:0").startswith("cuda-")
    assert devicelock.device_key("cuda:0") != "cuda-0"  # the UUID, not the index
    hog = subprocess.Popen([sys.executable, "-c",
                            "import torch, time\n"
                            "x = torch.randn(4096, 4096, device='cuda')\n"
                            "end = time.time() + 240\n"
                            "while time.time() < end:\n"
                            "    y = x @ x\n"
                            "    torch.cuda.synchronize()\n"])
    try:
        time.sleep(8)  # its CUDA context is up
        proc = quantbench("run", "--model", "random:gpt2-124m", "--schemes", "bf16",
                          "--prompt-tokens", "32", "--new-tokens", "16", "--warmup", "1",
                          "--runs", "10", "--no-repeat-baseline", "--log", "", cwd=workdir)
    finally:
        hog.kill()
        hog.wait()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    load = export_json(workdir)[0]["info"]["contention"]
    assert load["contended"] and load["gpu_other_pids"], load
    clean = quantbench("run", "--model", "random:gpt2-124m", "--schemes", "bf16",
                       "--prompt-tokens", "32", "--new-tokens", "16", "--warmup", "1",
                       "--runs", "10", "--no-repeat-baseline", "--log", "", cwd=workdir)
    assert clean.returncode == 0, clean.stderr
    record = export_json(workdir)[0]
    # Alone on the card: neither the worker nor its run is taken for another process.
    assert record["info"]["contention"]["gpu_other_pids"] == [], record["info"]["contention"]


def test_two_gpus_measure_two_comparisons_side_by_side_each_on_one_gpu(workdir):
    """--device cuda on a machine with two GPUs: each comparison on one GPU (its baseline, its
    schemes, its baseline again), the two comparisons at the same time."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs (device kind nvidia-h200-x2)")
    proc = quantbench("run", "--model", "random:gpt2-124m", "--schemes", "bf16,fp16",
                      "--batch-size", "1,4", "--device", "cuda", "--prompt-tokens", "64",
                      "--new-tokens", "64", "--warmup", "1", "--runs", "10", "--log", "",
                      cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 devices (cuda:0, cuda:1)" in proc.stderr
    records = export_json(workdir)
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    placed = {}
    for r in records:
        assert r["device"] == "cuda"
        placed.setdefault(r["comparison"], set()).add(r["info"]["placed_on"])
        assert "gpu_util_pct" in r["metrics"]  # NVML found the GPU the cell ran on
    assert all(len(gpus) == 1 for gpus in placed.values()), placed
    assert set.union(*placed.values()) == {"cuda:0", "cuda:1"}
    from datetime import datetime

    spans = {}
    for r in records:
        start = datetime.fromisoformat(r["started_at"]).timestamp()
        lo, hi = spans.get(r["comparison"], (start, start + r["wall_s"]))
        spans[r["comparison"]] = (min(lo, start), max(hi, start + r["wall_s"]))
    (a0, a1), (b0, b1) = spans.values()
    assert min(a1, b1) - max(a0, b0) > 0  # they overlapped in time


def test_a_batch_of_16_captures_one_graph_checked_within_rounding(workdir):
    """Random weights at batch 16: argmax ties can flip between kernels; the graph check holds
    the graph's tokens to the logits (within rounding) and keeps the graph."""
    proc = quantbench("run", "--model", "random:llama-3.2-1b", "--schemes", "bf16",
                      "--runtime", "compiled", "--batch-size", "16", "--device", "cuda:0",
                      "--prompt-tokens", "128", "--new-tokens", "32", "--warmup", "1",
                      "--runs", "3", "--no-repeat-baseline", "--log", "", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = export_json(workdir)
    graph = record["info"]["compiled"]["cuda_graph"]
    assert graph["captured"], graph
    check = graph["check"]
    assert check["identical"] or check["within_tolerance"], check


def test_gptq_and_awq_store_rtns_tinygemm_tensors_and_drift_less(workdir):
    """The bundled model (real weights: quality means something) on the GPU: the calibrated
    schemes store tinygemm's int4 tensors in the same layers as RTN (so the same kernels run),
    RTN's bytes to the byte, and drift less from bf16. Their compiled speed is a benchmark's
    (docs/results), not a test's."""
    # Group 64: SmolLM2's 576-wide layers take no group of 128, and torchao then leaves them in
    # bf16 (so do the calibrated schemes, to stay like with like: `float_linears`).
    calibrated = ["gptq-int4:group=64", "awq-int4:group=64"]
    proc = quantbench("run", "--device", "cuda", "--schemes",
                      ",".join(["bf16", "torchao-int4wo:group=64", *calibrated]),
                      "--prompt-tokens", "32", "--new-tokens", "16", "--warmup", "1", "--runs",
                      "3", "--eval-tokens", "2048", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(proc.stderr)  # the cells' times, for whoever reads the log
    records = {r["scheme"]: r for r in export_json(workdir)}
    rtn = records["torchao-int4wo:group=64"]
    assert rtn["info"]["weight_kinds"]["Linear/Int4TilePackedTo4dTensor"] == 30 * 7
    for name in calibrated:
        r = records[name]
        assert r["status"] == "ok", r["error"]
        assert r["scheme_settings"]["packing"] == "tile_packed_to_4d"
        assert r["info"]["weight_kinds"] == rtn["info"]["weight_kinds"]
        assert r["memory"]["weights_bytes"] == rtn["memory"]["weights_bytes"]
        assert r["quality"]["kl_mean"] < 0.9 * rtn["quality"]["kl_mean"], (name, r["quality"],
                                                                           rtn["quality"])
        assert r["info"]["calibration"]["calibrated_linears"] == 30 * 7


def test_kv_formats_on_the_gpu_eager_and_a_captured_fp8_static_cache(workdir):
    """Every eager KV format runs on the GPU (transformers 5.17 there: fp8 is quantbench's own
    layer); the compiled runtime captures its fp8 static cache in one checked graph, and it
    holds half the bf16 cache's bytes."""
    common = ["--model", "random:gpt2-124m", "--prompt-tokens", "512", "--new-tokens", "16",
              "--warmup", "1", "--runs", "3", "--no-repeat-baseline", "--log", "",
              "--device", "cuda:0", "--schemes", "bf16"]
    proc = quantbench("run", *common, "--kv-cache", "auto,fp8,int8,int4,int2", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    eager = {r["scheme"]: r for r in export_json(workdir)}
    held = {name: r["info"]["kv_cache"]["stored_bytes"] for name, r in eager.items()}
    assert held["bf16:kv=fp8"] < 0.55 * held["bf16"]
    assert held["bf16:kv=int2"] < held["bf16:kv=int4"] < held["bf16:kv=int8"] < held["bf16"]
    proc = quantbench("run", *common, "--kv-cache", "auto,fp8", "--runtime", "compiled",
                      "--db", "compiled.db", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    compiled = {r["scheme"]: r for r in export_json(workdir, db="compiled.db")}
    fp8, bf16 = compiled["bf16:kv=fp8"], compiled["bf16"]
    graph = fp8["info"]["compiled"]["cuda_graph"]
    assert graph["captured"] and (graph["check"]["identical"] or graph["check"]["within_tolerance"])
    assert fp8["info"]["kv_cache"]["implementation"] == "quantbench Fp8StaticLayer"
    ratio = fp8["info"]["kv_cache"]["stored_bytes"] / bf16["info"]["kv_cache"]["stored_bytes"]
    assert 0.49 < ratio < 0.51
