import sqlite3

import pytest

from quantbench.errors import UsageError
from quantbench.store import SCHEMA_VERSION, Store

CELL = {"cell_id": "abc", "model": {"name": "m"}, "scheme": "fp32", "runtime": "eager",
        "device": "cpu", "baseline": True, "prompt": {"source": "s", "sha256": "h", "ids": [[1]]}}


def _store_with_cell(path):
    store = Store(path)
    env = store.add_env({"cpu": "x"})
    store.begin_run("r1", {"k": 1}, "purpose", "quantbench run", env)
    row = store.add_cell("r1", 0, CELL, {"status": "ok", "metrics": {"decode_tok_s": [1.0, 2.0]},
                                         "memory": {"weights_bytes": 4}, "info": {}},
                         env, "t", 1.0)
    return store, row


def test_cells_and_samples_round_trip_through_a_real_file(tmp_path):
    store, row = _store_with_cell(tmp_path / "r.db")
    store.end_run("r1", 1, 0, 2.0)
    store.close()
    with Store(tmp_path / "r.db", create=False) as again:  # closed when the block ends
        cells = again.cells("r1")
        assert again.run("r1")["cells_ok"] == 1
        assert again.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert len(cells) == 1 and cells[0]["cell_row"] == row
    assert cells[0]["samples"] == {"decode_tok_s": [1.0, 2.0]}
    assert "ids" not in cells[0]["config"]["prompt"]  # kept once, in the run's config
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        again.cells("r1")


@pytest.mark.parametrize("sql", ["UPDATE cells SET status='failed'", "DELETE FROM samples",
                                 "UPDATE samples SET value=0", "DELETE FROM runs"])
def test_measurements_cannot_be_overwritten_or_dropped(tmp_path, sql):
    store, _ = _store_with_cell(tmp_path / "r.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute(sql)


def test_a_failed_write_leaves_nothing_half_written(tmp_path):
    store, _ = _store_with_cell(tmp_path / "r.db")
    bad = {"status": "ok", "metrics": {"decode_tok_s": [1.0, "not a number"]}, "memory": {}, "info": {}}
    with pytest.raises(ValueError):
        store.add_cell("r1", 1, CELL, bad, None, "t", 1.0)
    assert store.db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 1
    assert store.db.execute("SELECT COUNT(*) FROM run_cells").fetchone()[0] == 1


def test_reuse_finds_only_successful_measurements(tmp_path):
    store, row = _store_with_cell(tmp_path / "r.db")
    assert store.find_measured("abc") == (row, "r1")
    failed = dict(CELL, cell_id="def")
    store.add_cell("r1", 1, failed, {"status": "failed", "error": "x"}, None, "t", 1.0)
    assert store.find_measured("def") is None


def test_unusable_paths_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="writable --db"):
        Store(tmp_path)  # a directory
    with pytest.raises(UsageError, match="no results database"):
        Store(tmp_path / "missing.db", create=False)


def test_an_unfinished_run_is_found_under_any_of_its_plan_ids(tmp_path):
    """Runs begun before 2026-11-30 hashed their output paths into the plan id: the same command
    must still resume them, found by that older id, and never a finished run."""
    store = Store(tmp_path / "r.db")
    env = store.add_env({"cpu": "x"})
    store.begin_run("old", {"plan_id": "with-outputs"}, "p", "quantbench run", env)
    store.begin_run("done", {"plan_id": "cells-only"}, "p", "quantbench run", env)
    store.end_run("done", 0, 0, 1.0)
    assert store.resumable_run("cells-only") is None
    assert store.resumable_run("cells-only", "with-outputs") == "old"
    assert store.resumable_run("other") is None
