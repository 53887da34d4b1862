"""`quantbench run` end to end on a tiny random model: real processes, a real SQLite file."""

import csv
import json
import sqlite3

from conftest import TINY, cli_env, export_json, quantbench


def test_run_measures_stores_and_exports(workdir):
    proc = quantbench("run", *TINY, "--schemes", "fp32,bf16,torchao-int8wo", "--purpose",
                      "e2e test", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "speedup" in proc.stdout and "random weights: speed/memory only" in proc.stdout
    records = export_json(workdir)
    assert [r["scheme"] for r in records] == ["fp32", "bf16", "torchao-int8wo"]
    assert [r["baseline"] for r in records] == [True, False, False]
    pids = set()
    for r in records:
        assert r["status"] == "ok" and r["error"] is None
        assert r["random_weights"] and r["model_label"] == "random weights: speed/memory only"
        for metric in ("decode_tok_s", "prefill_tok_s", "ttft_ms", "e2e_tok_s", "decode_ms_per_token"):
            s = r["metrics"][metric]
            assert s["n"] == 3 and len(s["samples"]) == 3
            assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
            assert s["min"] <= s["median"] <= s["max"] and s["min"] > 0
        assert r["metrics"]["token_latency_ms"]["n"] == 3 * 5  # (new tokens - 1) per run
        assert len(r["info"]["output_ids"][0]) == 6  # fixed length: EOS ignored
        assert r["memory"]["weights_bytes"] > 0 and r["memory"]["peak_bytes"] > 0
        assert r["env"]["libraries"]["torch"] and r["env"]["cpu"]
        pids.add(r["info"]["pid"])
    assert len(pids) == 3  # one process per cell
    bf16 = records[1]
    assert bf16["vs_baseline"]["weights_reduction_pct"] > 45
    assert bf16["vs_baseline"]["decode_speedup"]["ratio"] > 0
    # The run's own files: JSON equal to the export, CSV one row per cell.
    files = sorted((workdir / "quantbench-results").iterdir())
    assert [f.suffix for f in files] == [".csv", ".json"]
    assert json.loads(files[1].read_text()) == records
    rows = list(csv.DictReader(files[0].open()))
    assert [row["scheme"] for row in rows] == ["fp32", "bf16", "torchao-int8wo"]
    assert float(rows[0]["decode_tok_s_median"]) == records[0]["metrics"]["decode_tok_s"]["median"]
    # The database holds the raw samples the statistics came from.
    db = sqlite3.connect(workdir / "quantbench.db")
    assert db.execute("SELECT COUNT(*) FROM samples WHERE metric='decode_tok_s'").fetchone()[0] == 9
    assert db.execute("SELECT purpose FROM runs").fetchone()[0] == "e2e test"


def test_second_run_reuses_and_force_measures_again_keeping_both(workdir, reuse_expected):
    args = ["run", *TINY, "--schemes", "fp32,torchao-int4wo"]
    assert quantbench(*args, cwd=workdir).returncode == 0
    again = quantbench(*args, cwd=workdir)
    assert again.returncode == 0 and "reused" in again.stderr
    db = sqlite3.connect(workdir / "quantbench.db")
    # The baseline is measured in every run that compares against it; the scheme is reused.
    assert db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 3
    forced = quantbench(*args, "--force", cwd=workdir)
    assert forced.returncode == 0
    assert db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 5
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 3
    first, second, third = (export_json(workdir, run=r) for r in
                            [x[0] for x in db.execute("SELECT run_id FROM runs ORDER BY rowid")])
    assert [r["reused"] for r in second] == [False, True]
    assert [r["cell_id"] for r in second] == [r["cell_id"] for r in first]
    assert third[0]["metrics"]["decode_tok_s"]["samples"] != first[0]["metrics"]["decode_tok_s"]["samples"]


def test_failing_cells_are_recorded_and_the_rest_still_run(workdir):
    env = cli_env(QUANTBENCH_PLUGINS="qb_test_plugins")
    proc = quantbench("run", *TINY, "--schemes", "fp32,test-raises,test-killed,test-hangs,bf16",
                      "--cell-timeout", "20", cwd=workdir, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout
    records = export_json(workdir)
    status = {r["scheme"]: (r["status"], r["error"]) for r in records}
    assert status["fp32"] == ("ok", None) and status["bf16"] == ("ok", None)
    assert status["test-raises"] == ("failed", "RuntimeError: this scheme fails on purpose")
    assert status["test-killed"][0] == "failed" and "SIGKILL" in status["test-killed"][1]
    assert status["test-hangs"][0] == "failed" and "timed out after 20 s" in status["test-hangs"][1]
    assert "traceback" in records[1]["info"]
    # A failed cell is measured again next time (it is never 'reused').
    again = quantbench("run", *TINY, "--schemes", "fp32,test-raises", cwd=workdir, env=env)
    assert again.returncode == 1
    assert [r["reused"] for r in export_json(workdir)] == [False, False]


def test_python_api_returns_a_dataframe(workdir):
    import os

    from quantbench import LLMBenchmark

    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        result = LLMBenchmark(model="random:tiny", schemes=["fp32", "bnb-nf4"], prompt_tokens=8,
                              new_tokens=4, warmup=0, runs=2, out=None).run()
    finally:
        os.chdir(cwd)
    frame = result.to_dataframe()
    # The baseline again at the end: the run's drift check.
    assert list(frame["scheme"]) == ["fp32", "bnb-nf4", "fp32"]
    assert list(frame["role"]) == ["measure", "measure", "baseline-repeat"]
    assert (frame["decode_tok_s_n"] == 2).all()
    assert frame.loc[1, "weights_reduction_pct"] > 0
    assert result.cells[1].scheme == "bnb-nf4" and result.failed == 0


def test_interrupting_a_run_kills_its_cell_and_keeps_what_was_measured(workdir):
    import subprocess
    import sys
    import time

    import psutil

    env = cli_env(QUANTBENCH_PLUGINS="qb_test_plugins")
    parent = subprocess.Popen([sys.executable, "-m", "quantbench", "run", *TINY, "--schemes",
                               "fp32,test-hangs"], cwd=workdir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    db_path = workdir / "quantbench.db"
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline:
        time.sleep(0.5)
        if db_path.exists():
            done = sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            workers = psutil.Process(parent.pid).children(recursive=True)
            if done == 1 and workers:
                break
    assert workers, "the hanging cell never started"
    parent.terminate()
    stdout, stderr = parent.communicate(timeout=30)
    assert parent.returncode == 130 and "Traceback" not in stderr, stderr
    assert "interrupted" in stderr
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "the worker outlived the interrupted run"
    # An interrupted run is not "latest" (test_hardening.py); by its id it shows what it kept.
    records = export_json(workdir, run="2")
    assert [(r["scheme"], r["status"], r["run_state"]) for r in records] == [("fp32", "ok", "interrupted")]


def test_compiled_runtime_records_a_compile_it_could_not_do_and_still_measures(workdir):
    """A step torch.compile cannot take whole (a host read in forward) falls back to the eager
    kernels, and the cell says so: error, consequence, no graph on the CPU, same tokens."""
    env = cli_env(QUANTBENCH_PLUGINS="qb_test_plugins")
    proc = quantbench("run", *TINY, "--runtime", "compiled", "--schemes", "fp32,test-graph-break",
                      "--device", "cpu", cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = {r["scheme"]: r for r in export_json(workdir)}
    broken = records["test-graph-break"]["info"]["compiled"]
    assert broken["compile"]["error"] and "eager kernels" in broken["compile"]["consequence"]
    assert broken["cuda_graph"]["captured"] is False
    clean = records["fp32"]["info"]["compiled"]["compile"]
    assert clean["graph_breaks"] == 0 and "error" not in clean
    # The same weights (seeded) decode the same tokens, compiled or not.
    assert records["test-graph-break"]["info"]["output_ids"] == records["fp32"]["info"]["output_ids"]
    assert all(r["runtime"] == "compiled" for r in records.values())
    with open(next((workdir / "quantbench-results").glob("*.csv"))) as fh:
        rows = {row["scheme"]: row for row in csv.DictReader(fh)}
    assert rows["test-graph-break"]["cuda_graph"] == "False"
    assert rows["fp32"]["compile_s"] and rows["fp32"]["cuda_graph_reason"].startswith("CUDA graphs need")
