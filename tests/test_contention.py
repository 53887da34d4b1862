"""Contention: a cell measured while other processes used the CPU is flagged in every output and
never reused; the CPU time of the run's declared group (QUANTBENCH_CONTENTION_GROUP, as the
suite's two xdist workers are) is the run's own, also that of members that end mid-window.
These tests share one file so that they never run beside each other's busy loops."""

import json
import os
import subprocess
import sys
import time

from conftest import TINY, cli_env, export_json, quantbench


def test_a_cell_measured_under_load_is_flagged_and_never_reused(workdir):
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
