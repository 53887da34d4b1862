"""First contact and faults: bad input refused in one line before anything runs, output paths
checked up front, one run per device, contention flagged, interrupted runs marked and resumed,
memory capped per cell, untrusted files refused, and a table that fits a real terminal."""

import io
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import TINY, cli_env, export_json, quantbench
from quantbench.errors import UsageError

def plugins_env(**extra):
    return cli_env(QUANTBENCH_PLUGINS="qb_test_plugins", **extra)


def _one_line_refusal(proc, needle, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


# ---- 1. nothing silently wrong -----------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--model", ""], "--model is empty"),
    (["--model", "   "], "--model is empty"),
    (["--schemes", " , "], "--schemes is empty"),
    (["--schemes", "fp32,,bf16"], "has an empty name"),
    (["--schemes", "fp32,"], "has an empty name"),
    (["--schemes", "fp32,bf16", "--baseline", "fp16"], "--baseline fp16 is not one of --schemes"),
    (["--baseline", ""], "--baseline is empty"),
    (["--device", ""], "--device is empty"),
    (["--schemes", "FP32"], "did you mean fp32?"),
    (["--runs", "5", "--max-runs", "20"], "--max-runs: for --runs auto only"),
    (["--no-quality", "--eval-tokens", "100"], "--eval-tokens: for quality"),
    (["--force", "--reuse-baseline"], "pass one of them"),
    (["--wait", "--allow-shared"], "pass one of them"),
    (["--lm-eval-limit", "3"], "apply to --lm-eval-tasks"),
    (["--cell-memory-limit", "12X"], "is not a size"),
    (["--cell-memory-limit", "1K"], "below 64 MiB"),
])
def test_ambiguous_or_empty_input_is_refused_before_anything_runs(workdir, args, needle,
                                                                 monkeypatch, capsys):
    # In this process (the CLI's own entry point, its error handling included): sixteen
    # interpreters starting torch would cost a minute; test_cli_errors.py runs real processes.
    args = args if "--model" in args else ["--model", "random:tiny", *args]
    monkeypatch.chdir(workdir)
    proc = _main_in_process(["run", *args], monkeypatch, capsys)
    _one_line_refusal(proc, needle)
    assert not (workdir / "quantbench.db").exists()


def _main_in_process(argv, monkeypatch, capsys):
    from quantbench import cli
    from quantbench.errors import FROM_CLI

    monkeypatch.setattr(sys, "argv", ["quantbench", *argv])
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)  # leave pytest's SIGTERM alone
    token = FROM_CLI.set(False)
    try:
        with pytest.raises(SystemExit) as stopped:
            cli.main()
    finally:
        FROM_CLI.reset(token)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, stopped.value.code, out.out, out.err)


@pytest.mark.parametrize("option,value,needle", [
    ("--out", "/proc/quantbench-x", "cannot be written"),
    ("--out", "afile/sub", "'afile' is a file"),
    ("--log", "/proc/LOG.md", "cannot be written"),
    ("--log", "afile/LOG.md", "'afile' is a file"),
    ("--db", "/proc/x.db", "cannot be written"),
    ("--db", ".", "is a folder"),
])
def test_every_output_path_is_checked_before_the_first_cell(workdir, option, value, needle):
    (workdir / "afile").write_text("a file, not a folder")
    start = time.perf_counter()
    proc = quantbench("run", *TINY, "--schemes", "fp32", option, value, cwd=workdir)
    _one_line_refusal(proc, needle)
    assert time.perf_counter() - start < 60  # refused at once, not after measuring
    assert not (workdir / "quantbench.db").exists() or option == "--db"


def test_report_and_export_targets_are_checked_first(workdir):
    proc = quantbench("run", *TINY, "--schemes", "fp32", "--log", "", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    _one_line_refusal(quantbench("report", "--out", "/proc/qb-report", cwd=workdir), "cannot be written")
    _one_line_refusal(quantbench("export", "--format", "csv", "--output", "/proc/x.csv", cwd=workdir),
                      "cannot be written")
    _one_line_refusal(quantbench("log", "--out", "/proc/LOG.md", cwd=workdir), "cannot be written")


def test_an_ambiguous_run_prefix_says_so(workdir):
    from quantbench.store import Store

    store = Store(workdir / "runs.db")
    for suffix in ("a", "b", "c"):
        store.begin_run(f"20261128-00000{suffix}", {"cells": []}, None, "", None)
    store.close()
    proc = quantbench("export", "--format", "json", "--db", "runs.db", "--run", "2026", cwd=workdir)
    _one_line_refusal(proc, "run prefix '2026' is ambiguous: it matches 3 runs")
    proc = quantbench("export", "--format", "json", "--db", "runs.db", "--run", "", cwd=workdir)
    _one_line_refusal(proc, "--run is empty")


def test_the_api_takes_lists_or_comma_strings_and_names_its_own_parameters(workdir):
    from quantbench.api import LLMBenchmark

    def planned(bench):
        (comparison,) = bench.plan()
        return [c.scheme for c in comparison.cells], comparison.baseline

    for schemes in ("fp32, bf16", ["fp32", "bf16"], ["fp32,bf16"]):
        bench = LLMBenchmark(model="random:tiny", schemes=schemes, device="cpu",
                             db=str(workdir / "api.db"))
        assert planned(bench) == (["fp32", "bf16"], "fp32")
    twice = LLMBenchmark(model="random:tiny", schemes="fp32,bf16,fp32", device="cpu",
                         db=str(workdir / "api.db"))
    assert planned(twice)[0] == ["fp32", "bf16"]
    assert any("listed twice" in n for n in twice.notes)  # a stated de-duplication
    for kwargs, needle in [({"batch_size": 0}, "batch_size must be a positive integer"),
                           ({"schemes": "fp32", "baseline": "bf16"}, "baseline bf16 is not one of schemes"),
                           ({"quality": False, "eval_text": "x.txt"}, "which quality=False turns off"),
                           ({"schemes": ""}, "schemes is empty"),
                           ({"runs": "lots"}, "runs must be a positive integer")]:
        with pytest.raises(UsageError) as caught:
            LLMBenchmark(model="random:tiny", db=str(workdir / "api.db"), **kwargs).run()
        assert needle in str(caught.value) and "--" not in str(caught.value), str(caught.value)
    assert not (workdir / "api.db").exists()


# ---- the parsers, driven by hypothesis -----------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

_SPEC_TEXT = st.text(alphabet=st.sampled_from(list("fpbq0123468:=,-_ .aeilnortuwxFTIG\t\n\u00e9")),
                     max_size=40)


def _outcome(fn, *args):
    """A result, or a UsageError of one line; anything else fails the property."""
    try:
        return fn(*args)
    except UsageError as exc:
        assert "\n" not in str(exc) and str(exc).strip(), repr(str(exc))
        return None


@settings(max_examples=300, deadline=None)
@given(_SPEC_TEXT)
def test_scheme_specs_parse_or_fail_in_one_line(text):
    from quantbench.config import parse_scheme_list
    from quantbench.schemes import get

    names = _outcome(parse_scheme_list, text)
    for name in names or []:
        scheme = _outcome(get, name)
        if scheme is not None:
            assert get(scheme.name).name == scheme.name  # canonical names are stable


@settings(max_examples=300, deadline=None)
@given(st.one_of(_SPEC_TEXT, st.sampled_from(["auto", "5", "-1", "1e3", "8G", "0.5GiB", "none"])))
def test_option_values_parse_or_fail_in_one_line(text):
    from quantbench.api import resolve_device
    from quantbench.config import Repetitions, parse_size

    _outcome(Repetitions.parse_runs, text)
    _outcome(parse_size, text)
    _outcome(resolve_device, text)


@settings(max_examples=60, deadline=None)
@given(schemes=_SPEC_TEXT, baseline=st.one_of(st.none(), _SPEC_TEXT), runs=_SPEC_TEXT,
       batch=st.integers(-2, 3), margin=st.one_of(st.floats(-1, 2), st.just(float("nan"))))
def test_api_arguments_validate_or_fail_in_one_line(schemes, baseline, runs, batch, margin):
    from quantbench.api import LLMBenchmark

    def check():
        bench = LLMBenchmark(model="random:tiny", schemes=schemes, baseline=baseline, runs=runs,
                             batch_size=batch, margin=margin, device="cpu")
        bench.plan()

    _outcome(check)


# ---- 3. one run per device, contention flagged -------------------------------------------

def _start(args, cwd, env=None):
    # Ctrl-C as from a terminal: a child inherits an ignored SIGINT (pytest-xdist's workers may
    # ignore it), and Python then installs no KeyboardInterrupt handler (the CI stack of
    # 2026-12-06: the run still polling its cell 60 s after SIGINT).
    return subprocess.Popen([sys.executable, "-m", "quantbench", "run", *map(str, args)], cwd=cwd,
                            env=env or plugins_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt(proc, timeout=60):
    """Ctrl-C a run and wait for it. One that does not stop is killed (so its device lock does
    not fail every later test of the worker) after printing every thread's stack (SIGUSR1)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the run did not stop {timeout} s after Ctrl-C; its threads:\n"
                             f"{err[-6000:]}") from None


def _wait_for_cells(db: Path, n: int, proc, timeout=120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if db.exists():
            try:
                done = sqlite3.connect(db).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            except sqlite3.Error:
                done = 0
            if done >= n:
                return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    raise AssertionError(f"{n} cell(s) not measured in {timeout} s")


def test_a_second_run_on_a_busy_device_is_refused_waits_or_is_flagged_shared(workdir):
    holder = _start([*TINY, "--schemes", "fp32,test-hangs", "--db", "a.db", "--log", ""], workdir)
    try:
        _wait_for_cells(workdir / "a.db", 1, holder)
        refused = quantbench("run", *TINY, "--schemes", "fp32", "--db", "b.db", cwd=workdir)
        _one_line_refusal(refused, "cpu is in use by another quantbench run", code=4)
        assert f"pid {holder.pid}" in refused.stderr and "--allow-shared" in refused.stderr
        shared = quantbench("run", *TINY, "--schemes", "fp32", "--db", "b.db", "--log", "",
                            "--allow-shared", cwd=workdir)
        assert shared.returncode == 0, shared.stderr
        record = export_json(workdir, db="b.db")[0]
        assert record["info"]["shared"] is True
        csv_text = quantbench("export", "--format", "csv", "--db", "b.db", cwd=workdir).stdout
        assert "measured with --allow-shared" in csv_text
        waiter = _start([*TINY, "--schemes", "fp32", "--db", "c.db", "--log", "", "--wait"], workdir)
        time.sleep(5)
        assert waiter.poll() is None  # queued behind the holder
    finally:
        _interrupt(holder)
    out, err = waiter.communicate(timeout=300)
    assert waiter.returncode == 0 and "waiting: cpu is in use" in err, err
    # Once the holder ended, the queued run measured alone: nothing flagged.
    assert not export_json(workdir, db="c.db")[0]["info"].get("shared")


def test_a_cell_measured_under_load_is_flagged_and_never_reused(workdir, stranger_load_alone):
    # A stranger to the suite's contention group (conftest.py), as another user's job would be.
    stranger = {k: v for k, v in os.environ.items() if k != "QUANTBENCH_CONTENTION_GROUP"}
    # One burner per core: the suite's other worker (its group) also wants the cores, and on a
    # 2-core CI machine a single burner could be left with less than the threshold (seen in CI).
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"], env=stranger)
               for _ in range(os.cpu_count() or 1)]
    # Enough tokens that the timed window (its CPU time counted in 10 ms ticks) can tell load.
    args = ["--model", "random:tiny", "--prompt-tokens", "16", "--new-tokens", "48", "--warmup",
            "1", "--max-warmup", "2", "--runs", "5", "--no-repeat-baseline", "--schemes",
            "fp32,bf16", "--log", ""]
    try:
        loaded = quantbench("run", *args, cwd=workdir)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert loaded.returncode == 0, loaded.stderr
    first = export_json(workdir)
    for r in first:
        load = r["info"]["contention"]
        assert load["contended"] and load["other_cpu_cores"] >= 0.3, load
    assert "contended: other processes used" in loaded.stdout.replace("\n", " ")
    clean = quantbench("run", *args, cwd=workdir)
    assert clean.returncode == 0, clean.stderr
    second = {r["scheme"]: r for r in export_json(workdir)}
    assert not second["bf16"]["reused"], "a contended cell was reused as clean"
    assert not second["bf16"]["info"]["contention"]["contended"], \
        json.dumps(second["bf16"]["info"]["contention"])
    csv_text = quantbench("export", "--format", "csv", "--run", first[0]["run_id"], cwd=workdir).stdout
    assert "contention_reason" in csv_text.splitlines()[0] and "other processes used" in csv_text
    # The same load from a process of the run's declared group (QUANTBENCH_CONTENTION_GROUP, as
    # the suite's parallel workers are) is the group's own: counted and recorded, not flagged.
    member = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        grouped = quantbench("run", *args, "--db", "grouped.db", cwd=workdir)
    finally:
        member.kill()
        member.wait()
    assert grouped.returncode == 0, grouped.stderr
    for r in export_json(workdir, db="grouped.db"):
        load = r["info"]["contention"]
        assert not load["contended"] and load["group_cpu_cores"] >= 0.3, load
        assert load["group"] == os.environ["QUANTBENCH_CONTENTION_GROUP"]


def test_a_whole_run_seen_from_outside_is_its_own_work_not_a_strangers(workdir):
    # What a group member's sampler relies on (the CI failure of 2026-12-06): a member's run that
    # starts and ends inside another's timed window hands its CPU time, its fork server's and
    # every forked cell's included, to its parent's children times. Were a process on the way
    # reaped by the kernel or by init, that time would count as a stranger's load.
    from quantbench.measure.contention import LoadSampler

    idle, member = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]), None
    command = " ".join([sys.executable, "-m", "quantbench", "run", *TINY, "--schemes",
                        "fp32,bf16,fp16", "--log", "''"])
    try:
        sampler = LoadSampler("cpu", run_pid=idle.pid)  # a run that does nothing itself
        with sampler:  # the member: a shell that runs quantbench, then stays (its parent lives)
            member = subprocess.Popen(["bash", "-c", f"{command} > out.txt 2>&1; touch done; "
                                       "sleep 600"], cwd=workdir, env=cli_env())
            deadline = time.monotonic() + 300
            while not (workdir / "done").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        for proc in (idle, member):
            if proc is not None:
                proc.kill()
                proc.wait()
    assert "fp16" in export_json(workdir)[-1]["scheme"], (workdir / "out.txt").read_text()
    load = sampler.result()
    assert not load["contended"] and load["group_cpu_cores"] >= 0.3, json.dumps(load)


def test_a_group_members_orphan_that_ends_mid_window_is_still_the_groups():
    # A killed run's fork server, a stopped Ray daemon: a member of the group whose parent is
    # gone ends inside the window and is reaped by init, which keeps no account of it. What it
    # used until the sampler last saw it is the group's, not a stranger's.
    from quantbench.measure.contention import LoadSampler

    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sampler = LoadSampler("cpu", run_pid=idle.pid)  # a run that does nothing itself
        with sampler:
            subprocess.run(["bash", "-c", f"{sys.executable} -c 'import time\nt = time.time()\n"
                            "while time.time() - t < 6: pass' &"], check=True)  # orphaned at once
            time.sleep(8)
    finally:
        idle.kill()
        idle.wait()
    load = sampler.result()
    assert not load["contended"] and load["group_cpu_cores"] * load["seconds"] >= 4, \
        json.dumps(load)


# ---- 4. interrupted runs -----------------------------------------------------------------

def test_an_interrupted_run_is_marked_never_latest_and_the_same_command_resumes_it(workdir):
    args = [*TINY, "--schemes", "fp32,test-hangs,bf16"]
    run = _start(args, workdir)
    _wait_for_cells(workdir / "quantbench.db", 1, run)
    time.sleep(3)  # the hanging cell's worker is up
    workers = psutil.Process(run.pid).children(recursive=True)
    assert workers
    out, err = _interrupt(run)  # Ctrl-C
    assert run.returncode == 130 and "Traceback" not in err, err
    assert "keeps the 1 of 3 cells" in err and "the same command resumes it" in err
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "a worker outlived the interrupted run"
    run_id = sqlite3.connect(workdir / "quantbench.db").execute("SELECT run_id FROM runs").fetchone()[0]

    # Not "latest": export, report and generations refuse instead of showing a part.
    _one_line_refusal(quantbench("export", "--format", "json", cwd=workdir), "no finished run")
    _one_line_refusal(quantbench("report", cwd=workdir), "no finished run")
    # Asked for by id, every output says it is interrupted.
    proc = quantbench("export", "--format", "json", "--run", run_id, cwd=workdir)
    assert proc.returncode == 0 and f"run {run_id} is interrupted" in proc.stderr
    assert [r["run_state"] for r in json.loads(proc.stdout)] == ["interrupted"]
    log = quantbench("log", cwd=workdir).stdout
    assert "interrupted: 1 of 3 cells measured" in log
    assert f"{run_id}.json" not in log and "written when the run ends" in log
    assert not (workdir / "quantbench-results").exists()

    # Where the reports go is not part of the plan: they are written when the run ends.
    resumed = quantbench("run", *args, "--out", "moved", cwd=workdir,
                         env=plugins_env(QB_TEST_NO_HANG="1"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed run {run_id}" in resumed.stdout.replace("\n", " ")
    assert (workdir / "moved" / f"{run_id}.json").exists()
    db = sqlite3.connect(workdir / "quantbench.db")
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    assert db.execute("SELECT scheme FROM cells ORDER BY cell_row").fetchall() == \
        [("fp32",), ("test-hangs",), ("bf16",)]  # none measured twice, none lost
    records = export_json(workdir)
    assert [r["run_state"] for r in records] == ["finished"] * 3
    assert "resumed after 1 interruption" in quantbench("log", cwd=workdir).stdout


def test_kill_9_of_a_run_takes_its_worker_with_it(workdir):
    run = _start([*TINY, "--schemes", "test-hangs", "--log", ""], workdir)
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and len(workers) < 3:
        time.sleep(0.5)
        workers = [p for p in psutil.Process(run.pid).children(recursive=True)
                   if "quantbench.worker" in " ".join(p.cmdline())]
    # The CPU cell's fork server, its waiter and the worker: all must go.
    assert any("--serve" in p.cmdline() for p in workers) and len(workers) == 3, \
        [p.cmdline() for p in workers]
    run.send_signal(signal.SIGUSR1)  # where a stuck run is: every thread's stack, and it goes on
    time.sleep(1)
    assert run.poll() is None
    run.kill()
    _, err = run.communicate()
    assert "Current thread" in err and "run_cell" in err, err[-3000:]
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, "the worker outlived a kill -9 of its run"
    proc = quantbench("export", "--format", "json", "--run", "2", cwd=workdir)
    assert "unfinished (killed, or still running)" in proc.stderr


# ---- 5. memory limits --------------------------------------------------------------------

def test_a_cell_over_its_memory_limit_fails_alone_and_the_run_goes_on(workdir):
    proc = quantbench("run", *TINY, "--schemes", "fp32,test-hog,bf16", "--cell-memory-limit", "1G",
                      "--log", "", cwd=workdir, env=plugins_env())
    assert proc.returncode == 1, proc.stderr
    records = {r["scheme"]: r for r in export_json(workdir)}
    assert records["test-hog"]["status"] == "failed"
    assert records["test-hog"]["error"].startswith("out of memory (limit 1.0 GB, --cell-memory-limit)")
    assert "3000000000 bytes" in records["test-hog"]["error"]  # the allocation that failed
    assert records["bf16"]["status"] == "ok" and records["fp32"]["status"] == "ok"
    config = sqlite3.connect(workdir / "quantbench.db").execute("SELECT config FROM runs").fetchone()[0]
    assert json.loads(config)["cell_memory_limit"] == 10**9


# ---- 6. untrusted files ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pickle_dir(tmp_path_factory):
    """A small real-text model saved the old way (pytorch_model.bin), tokenizer included."""
    import torch
    from transformers import AutoModelForCausalLM

    from quantbench import models
    from quantbench.presets import PRESETS, build_config

    tokenizer_from = Path(models.resolve("default").path)
    folder = tmp_path_factory.mktemp("pickle-model")
    config = build_config(PRESETS["tiny"])
    config.vocab_size = 49152
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    for f in tokenizer_from.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, folder)
    return folder


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['QB_PWNED']}",))


def test_a_pickle_that_runs_code_is_refused_and_its_code_never_runs(workdir, tiny_pickle_dir):
    import torch

    evil = workdir / "evil"
    shutil.copytree(tiny_pickle_dir, evil)
    state = torch.load(evil / "pytorch_model.bin", weights_only=True)
    os.environ["QB_PWNED"] = str(workdir / "PWNED")
    state["payload"] = _Payload()
    torch.save(state, evil / "pytorch_model.bin")
    proc = quantbench("run", "--model", str(evil), "--schemes", "fp32", cwd=workdir)
    _one_line_refusal(proc, "is a pickle checkpoint that does not load as plain tensors")
    assert "safetensors" in proc.stderr
    assert not (workdir / "PWNED").exists()


@pytest.mark.parametrize("header,needle", [
    (struct.pack("<IQQ", 3, 2**60, 1), "cannot fit in"),
    (struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62) + b"k", "a name of"),
    (struct.pack("<IQQ", 3, 1, 0) + struct.pack("<Q", 1) + b"t" + struct.pack("<IQQ", 2, 2**40, 2**40)
     + struct.pack("<IQ", 0, 0), "a tensor of shape"),
    (struct.pack("<IQQ", 99, 0, 0), "version 99"),
])
def test_a_gguf_with_an_impossible_header_is_refused_before_loading(workdir, header, needle):
    (workdir / "bad.gguf").write_bytes(b"GGUF" + header + b"\0" * 64)
    _one_line_refusal(quantbench("run", "--model", "bad.gguf", cwd=workdir), needle)


def test_remote_code_is_off_unless_asked_and_recorded_when_on(workdir, tiny_pickle_dir):
    from quantbench import models

    folder = workdir / "custom"
    shutil.copytree(tiny_pickle_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    _one_line_refusal(quantbench("run", "--model", str(folder), cwd=workdir),
                      "asks to run code from its folder")
    resolved = models.resolve(str(folder), trust_remote_code=True)
    assert resolved.trust_remote_code and resolved.to_dict()["trust_remote_code"] is True
    assert resolved.fingerprint != models.resolve(str(tiny_pickle_dir)).fingerprint


# ---- 2 and 7: a weights-only pickle model end to end, optional parts that fail, the table --

def test_optional_parts_that_fail_say_so_and_the_table_fits_80_and_120_columns(workdir, tiny_pickle_dir):
    """lm-eval's hellaswag cannot download offline: the run measures speed, memory and quality,
    then says what is missing on the terminal, in the record and in exit status 3."""
    proc = quantbench("run", "--model", str(tiny_pickle_dir), "--schemes", "fp32,bf16",
                      "--prompt-tokens", "16", "--new-tokens", "6", "--warmup", "1", "--runs", "3",
                      "--no-repeat-baseline", "--eval-tokens", "96", "--eval-context", "32",
                      "--eval-stride", "16", "--lm-eval-tasks", "hellaswag", "--lm-eval-limit", "2",
                      "--log", "", cwd=workdir, env=cli_env(HF_DATASETS_OFFLINE="1"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "not measured: lm-eval tasks of fp32" in proc.stderr
    records = export_json(workdir)
    assert all(r["lm_eval"]["error"] for r in records)
    assert records[0]["info"].get("tables")  # loaded, weights-only, and measured
    assert all("ppl" in r["quality"] for r in records)

    from rich.console import Console

    from quantbench.report.columns import cell_text, shown
    from quantbench.report.table import note_text, print_comparison

    for width in (80, 120):
        console = Console(width=width, file=io.StringIO(), record=True)
        print_comparison(console, records, "quantbench run X")
        text = console.export_text()
        assert max(len(line.rstrip()) for line in text.splitlines()) <= width, text
        flat = " ".join(text.split())
        for column in shown(records, brief=True):  # every column there, header and values whole
            for word in column.header.split():
                assert word in flat, (width, column.header)
            for r in records:
                assert cell_text(column, r) in text, (width, column.header, cell_text(column, r))
        for r in records:
            if note_text(r):
                assert " ".join(note_text(r).split())[:40] in flat
