"""How cells' processes start: CPU cells forked from one preloaded server per run (no import of
torch per cell), each still a process of its own; QUANTBENCH_CELL_START=exec starts each with a
fresh interpreter, and the two are different environments."""

import time

from conftest import TINY, cli_env, export_json, quantbench

SCHEMES = "fp32,test-marks-a,test-marks-b"


def _run(workdir, **env):
    proc = quantbench("run", *TINY, "--schemes", SCHEMES, "--log", "", cwd=workdir,
                      env=cli_env(QUANTBENCH_PLUGINS="qb_test_plugins", **env))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_cpu_cells_fork_from_one_server_yet_share_no_state(workdir):
    _run(workdir)
    records = export_json(workdir)
    assert [r["status"] for r in records] == ["ok"] * 3, [r["error"] for r in records]
    launches = [r["info"]["launch"] for r in records]
    assert {x["how"] for x in launches} == {"fork server"}
    # One process per cell, all started for the same run process, with torch already imported.
    assert len({r["info"]["pid"] for r in records}) == 3
    assert len({x["started_by"] for x in launches}) == 1
    assert all(x["torch_preloaded"] for x in launches)
    assert all(r["env"]["cpu_cell_start"] == "fork server" for r in records)
    env_table = quantbench("env", cwd=workdir).stdout
    assert "cpu_cell_start" in env_table and "fork server" in env_table

    # Fresh interpreters: another environment (a forked cell counts fewer library pages as
    # resident), so nothing is reused across the two, and the comparison says why.
    _run(workdir, QUANTBENCH_CELL_START="exec")
    records = export_json(workdir)
    assert [r["info"]["launch"]["how"] for r in records] == ["fresh interpreter"] * 3
    assert not any(r["info"]["launch"]["torch_preloaded"] for r in records)
    assert [r["reused"] for r in records] == [False] * 3
    assert all(r["env"]["cpu_cell_start"] == "fresh interpreter" for r in records)


def test_a_forked_cells_cpu_time_reaches_the_run_that_asked_for_it(workdir):
    # Contention sampling counts a finished cell's work as its run's only if every process on the
    # way was reaped by its parent: the worker by its waiter, the waiter by the server, the
    # server by the run. A server that let the kernel reap its waiters lost it (2026-12-06).
    import psutil

    from quantbench import executor, forkserver
    from quantbench.api import LLMBenchmark

    bench = LLMBenchmark(model="random:tiny", schemes="fp32", device="cpu", prompt_tokens=16,
                         new_tokens=6, runs=3, warmup=1, db=str(workdir / "unused.db"))
    cell = bench.plan()[0].cells[0]
    try:
        result, _ = executor.run_cell(cell.to_dict(), 300, None, None)
        assert result["status"] == "ok", result.get("error")
        assert result["info"]["launch"]["how"] == "fork server"
        server = psutil.Process(forkserver._server.proc.pid)

        def reaped() -> float:
            times = server.cpu_times()
            return times.children_user + times.children_system

        deadline = time.monotonic() + 10  # the waiter exits just after it reports the status
        while reaped() < 0.1 and time.monotonic() < deadline:
            time.sleep(0.1)
        # Building, warming and timing a model is CPU time; the server itself ran none of it.
        assert reaped() >= 0.1, server.cpu_times()
        server_total = sum(server.cpu_times()[:4])
    finally:
        before = psutil.Process().cpu_times()
        forkserver.shutdown()  # ends the server and reaps it: its time joins this process's
    after = psutil.Process().cpu_times()
    gained = (after.children_user + after.children_system
              - before.children_user - before.children_system)
    assert gained >= server_total - 0.05, (gained, server_total)
