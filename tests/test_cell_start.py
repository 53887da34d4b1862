"""How cells' processes start: CPU cells forked from one preloaded server per run (no import of
torch per cell), each still a process of its own; QUANTBENCH_CELL_START=exec starts each with a
fresh interpreter, and the two are different environments."""

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
