"""Sweeps: every axis a list, sweep files with exclude rules and groups, --dry-run, a killed
sweep resumed by the same command, each comparison against its own baseline, crossovers in
words, and a real local Ray cluster measuring through --executor ray."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import cli_env, export_json, quantbench

QUICK = ["--prompt-tokens", "16", "--new-tokens", "6", "--warmup", "1", "--max-warmup", "1",
         "--runs", "3"]


def _refusal(proc, needle):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def _main(args, monkeypatch, capsys, cwd):
    """The CLI's entry point in this process (its error handling included): cheaper than an
    interpreter per refusal; the sweep runs below use real processes."""
    from quantbench import cli
    from quantbench.errors import FROM_CLI

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["quantbench", *args])
    token = FROM_CLI.set(False)
    try:
        with pytest.raises(SystemExit) as code:
            cli.main()
    finally:  # the API's messages name parameters again in the tests after this one
        FROM_CLI.reset(token)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code.value.code, out.out, out.err)


@pytest.mark.parametrize("text,needle", [
    ("model: random:tiny\nbatch: [1, 2]\n", "sweep.yaml:2: batch: unknown key (did you mean batch_size?)"),
    ("model: random:tiny\nbatch_size: [1, two]\n", "sweep.yaml:2: batch_size: --batch-size takes positive integers, got 'two'"),
    ("model: random:tiny\nnew_tokens: 0\n", "sweep.yaml:2: new_tokens: --new-tokens must be a positive integer"),
    ("model: random:tiny\nexclude:\n  - {batch: 2}\n", "sweep.yaml:3: batch: not a key of exclude rules"),
    ("model: random:tiny\nexclude:\n  - {}\n", "sweep.yaml:3: an empty exclude rule"),
    ("model: random:tiny\ngroups:\n  a: {margin: 0.1}\n", "sweep.yaml:3: margin: not a key of groups"),
    ("model: random:tiny\nforce: maybe\n", "sweep.yaml:2: force: --force is true or false"),
    ("model: [random:tiny\n", "sweep.yaml:2: not valid YAML"),
    ("- random:tiny\n", "a sweep file is a mapping"),
    ("", "the file is empty"),
    ("model: random:tiny\nbatch_size: [1, 2]\nexclude:\n  - {batch_size: [1, 2]}\n",
     "every point of the sweep is excluded"),
    ("model: random:tiny\nschemes: [fp32, bf16]\nruntime: [eager, fast]\n",
     "--runtime 'fast' is not available"),
])
def test_a_bad_sweep_file_is_refused_naming_file_line_and_key(workdir, text, needle, monkeypatch,
                                                              capsys):
    (workdir / "sweep.yaml").write_text(text)
    proc = _main(["sweep", "sweep.yaml", "--dry-run"], monkeypatch, capsys, workdir)
    _refusal(proc, needle)
    assert not (workdir / "quantbench.db").exists()


def test_dry_run_lists_the_product_less_the_excluded_with_groups_merged(workdir, monkeypatch,
                                                                         capsys):
    (workdir / "sweep.yaml").write_text(
        "model: random:tiny\nschemes: [fp32, bf16, torchao-int8wo]\ndevice: cpu\n"
        "runtime: [eager, compiled]\nbatch_size: [1, 2]\nprompt_tokens: 16\nnew_tokens: 6\n"
        "exclude:\n"
        "  - {runtime: compiled, batch_size: 2}\n"          # a whole point
        "  - {batch_size: 2, schemes: [torchao-int8wo]}\n"  # one scheme at a point
        "groups:\n"
        "  base: {}\n"
        "  long: {runtime: eager, batch_size: 1, prompt_tokens: [16, 32]}\n")
    proc = _main(["sweep", "sweep.yaml", "--dry-run", "--db", "s.db"], monkeypatch, capsys, workdir)
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("│")]
    points = [r.split("│")[2].strip() for r in rows]
    # eager b1 16, eager b2 16 (no int8), compiled b1 16, and the group's eager b1 32; eager b1
    # 16 appears in both groups and is measured once
    assert len(set(points)) == 4, points
    assert sum("batch 2" in p for p in set(points)) == 1
    b2 = [r for r in rows if "batch 2" in r]
    assert not any("torchao-int8wo" in r for r in b2) and len(b2) == 3  # fp32, bf16, fp32 again
    assert sum("compiled" in p for p in set(points)) == 1
    assert "15 cells in 4 comparison(s)" in proc.stdout
    assert not (workdir / "s.db").exists()  # a dry run writes nothing


def test_every_axis_is_a_list_and_each_point_has_its_own_baseline(workdir):
    proc = quantbench("run", "--model", "random:tiny", "--schemes", "fp32,bf16",
                      "--batch-size", "1,2", *QUICK, "--device", "cpu", "--log", "LOG.md",
                      cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "batch 1" in proc.stdout and "batch 2" in proc.stdout
    assert "bf16 vs fp32 along batch size" in proc.stdout  # the crossover, in words
    records = export_json(workdir)
    assert len(records) == 6 and len({r["comparison"] for r in records}) == 2
    from quantbench.measure.stats import ratio_of_medians

    for r in records:
        if r["scheme"] == "bf16":
            base = next(b for b in records if b["baseline"] and b["role"] == "measure"
                        and b["workload"] == r["workload"])
            assert base["comparison"] == r["comparison"]
            ratio = ratio_of_medians(r["metrics"]["decode_tok_s"]["samples"],
                                     base["metrics"]["decode_tok_s"]["samples"])["ratio"]
            assert r["vs_baseline"]["decode_speedup"]["ratio"] == pytest.approx(ratio)
    log = (workdir / "LOG.md").read_text()
    assert "a sweep of 2 comparisons" in log and "### Crossovers" in log
    assert log.count("#### random:tiny · eager · batch") == 2
    report = quantbench("report", "--out", "rep", cwd=workdir)
    assert report.returncode == 0, report.stderr
    page = next((workdir / "rep").glob("*.html")).read_text()
    assert "panel-crossover_batch_size" in page and "panel-pareto_batch" in page
    assert "bf16 vs fp32 along batch size" in page


def test_the_api_takes_a_run_config(workdir):
    from quantbench.api import LLMBenchmark
    from quantbench.runconfig import RunConfig

    config = RunConfig.from_flat({"model": "random:tiny", "schemes": "fp32,bf16",
                                  "prompt_tokens": [16, 32], "device": "cpu",
                                  "db": str(workdir / "c.db")})
    assert config.axes.prompt_tokens == [16, 32] and config.outputs.db.endswith("c.db")
    comparisons = LLMBenchmark(config).plan()
    assert [c.cells[0].workload.prompt_tokens for c in comparisons] == [16, 32]
    assert LLMBenchmark(config, batch_size="1,4").config.axes.batch_size == [1, 4]
    from quantbench.errors import UsageError

    with pytest.raises(UsageError, match="unknown setting 'batchsize' \\(did you mean batch_size"):
        RunConfig.from_flat({"batchsize": 2})
    with pytest.raises(UsageError, match="^prompt_tokens must be a positive integer"):
        LLMBenchmark(model="random:tiny", prompt_tokens=[16, 0]).plan()


def _cells_stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_killed_sweep_resumes_with_the_same_command_and_reports_while_it_runs(workdir):
    (workdir / "sweep.yaml").write_text(
        "model: random:tiny\nschemes: [fp32, bf16]\ndevice: cpu\nbatch_size: [1, 2, 3, 4, 5, 6]\n"
        "prompt_tokens: 16\nnew_tokens: 6\nwarmup: 1\nmax_warmup: 1\nruns: 3\n"
        "repeat_baseline: false\nlog: LOG.md\n")
    command = [sys.executable, "-m", "quantbench", "sweep", "sweep.yaml"]
    proc = subprocess.Popen(command, cwd=workdir, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while _cells_stored(workdir / "quantbench.db") < 3 and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    # the sweep runs: its log and dashboard are there to read
    log = quantbench("log", "--out", "running.md", cwd=workdir)
    assert log.returncode == 0, log.stderr
    assert "unfinished" in (workdir / "running.md").read_text()
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its cell's worker, without warning
    proc.communicate()
    kept = _cells_stored(workdir / "quantbench.db")
    assert 3 <= kept < 12  # forked cells of a tiny model take seconds: 12 leave room to kill
    again = quantbench("sweep", "sweep.yaml", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert "resumed run" in again.stdout
    records = export_json(workdir)
    assert len(records) == 12 and len({r["run_id"] for r in records}) == 1
    assert _cells_stored(workdir / "quantbench.db") == 12  # none measured twice, none lost
    assert sorted((r["workload"]["batch_size"], r["scheme"]) for r in records) == sorted(
        (b, s) for b in range(1, 7) for s in ("fp32", "bf16"))


# ---- Ray: a real local cluster (a head and a worker node over loopback) --------------------

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """`ray start --head` and a second node joining it, as on two machines; the plugins and a
    marker folder for the lost-worker schemes reach every worker through the nodes' env."""
    port = 6400 + os.getpid() % 500
    # Short: Ray's socket paths under it must fit AF_UNIX's 107 bytes (a pytest-xdist worker's
    # tmp_path is longer than that allows).
    temp = Path(tempfile.mkdtemp(prefix="qbray"))
    markers = tmp_path_factory.mktemp("markers")
    env = cli_env(QUANTBENCH_PLUGINS="qb_test_plugins", QB_TEST_MARKERS=str(markers),
                  RAY_USAGE_STATS_ENABLED="0")
    common = ["--num-cpus", "1", "--object-store-memory", str(80 * 2**20), "--disable-usage-stats"]
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]  # the ray of this interpreter
    subprocess.run([*ray_cli, "start", "--head", "--port", str(port), "--include-dashboard=false",
                    "--temp-dir", str(temp), *common], env=env, check=True, capture_output=True,
                   timeout=120)
    try:
        subprocess.run([*ray_cli, "start", "--address", f"127.0.0.1:{port}", *common], env=env,
                       check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}", markers
    finally:
        subprocess.run([*ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_sweep_runs_through_a_ray_cluster_and_only_the_driver_writes(workdir, ray_cluster):
    address, _ = ray_cluster
    env = cli_env(QUANTBENCH_PLUGINS="qb_test_plugins")
    proc = quantbench("run", "--executor", "ray", "--address", address, "--model", "random:tiny",
                      "--schemes", "fp32,bf16", "--batch-size", "1,2", *QUICK, "--device", "cpu",
                      "--log", "", cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    records = export_json(workdir)
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    assert all(r["info"]["ray"]["node_id"] for r in records)
    for comparison in {r["comparison"] for r in records}:  # a comparison never spans nodes
        assert len({r["info"]["ray"]["node_id"] for r in records
                    if r["comparison"] == comparison}) == 1
    assert all((r.get("roofline") or {}).get("ceiling_tok_s") for r in records)  # node's own


def test_a_ray_worker_lost_mid_cell_is_retried_once_then_recorded_failed(workdir, ray_cluster):
    address, markers = ray_cluster
    env = cli_env(QUANTBENCH_PLUGINS="qb_test_plugins")
    proc = quantbench("run", "--executor", "ray", "--address", address, "--model", "random:tiny",
                      "--schemes", "fp32,test-lost-once,test-lost-always,bf16", *QUICK,
                      "--device", "cpu", "--log", "", "--no-repeat-baseline", cwd=workdir, env=env)
    assert proc.returncode == 1, proc.stderr  # one cell failed
    records = {r["scheme"]: r for r in export_json(workdir)}
    assert records["test-lost-once"]["status"] == "ok"  # lost once, measured on its retry
    assert (markers / "test-lost-once").exists()
    lost = records["test-lost-always"]
    assert lost["status"] == "failed" and "lost twice" in lost["error"]
    assert records["bf16"]["status"] == "ok"  # the comparison went on


def test_ray_passes_over_pinned_comparisons_already_measured_and_refuses_the_rest():
    """A sweep with pinned groups measured by --executor local may be resumed on Ray (the
    seed table was, on the H200s): only a pinned comparison with cells still to measure is
    refused, since Ray hands each task whichever GPU is free."""
    from types import SimpleNamespace

    from quantbench.errors import UsageError
    from quantbench.executors.ray_cluster import PINNED, _refuse_pinned

    pinned = SimpleNamespace(lanes=[PINNED], device="cuda:1")
    pooled = SimpleNamespace(lanes=["ray"], device="cuda")
    spans = [(pinned, 0, 3), (pooled, 3, 6)]
    _refuse_pinned(spans, done={0, 1, 2})  # the pinned one finished: the pool's cells go on
    with pytest.raises(UsageError, match="--device cuda:1 with --executor ray"):
        _refuse_pinned(spans, done={0, 1})
