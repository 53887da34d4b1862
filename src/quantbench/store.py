"""The results database: one SQLite file, append-only, every figure of every report comes from it.

Runs group cells; a cell row is one measurement and is never updated or deleted (triggers
enforce it). A run that reuses an earlier measurement links to it in run_cells.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from quantbench.config import stable_hash
from quantbench.errors import UsageError
from quantbench.measure.contention import contention_flag

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS environments (
    env_id TEXT PRIMARY KEY, data TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, purpose TEXT, command TEXT,
    config TEXT NOT NULL, env_id TEXT REFERENCES environments(env_id));
CREATE TABLE IF NOT EXISTS run_ends (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id), finished_at TEXT NOT NULL,
    cells_ok INTEGER NOT NULL, cells_failed INTEGER NOT NULL, wall_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    cell_row INTEGER PRIMARY KEY AUTOINCREMENT, cell_id TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs(run_id), model TEXT NOT NULL, scheme TEXT NOT NULL,
    runtime TEXT NOT NULL, device TEXT NOT NULL, baseline INTEGER NOT NULL,
    config TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('ok', 'failed')), error TEXT,
    memory TEXT NOT NULL, info TEXT NOT NULL, env_id TEXT REFERENCES environments(env_id),
    started_at TEXT NOT NULL, finished_at TEXT NOT NULL, wall_s REAL NOT NULL);
CREATE INDEX IF NOT EXISTS cells_by_id ON cells(cell_id, status);
CREATE TABLE IF NOT EXISTS run_cells (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    cell_row INTEGER NOT NULL REFERENCES cells(cell_row), position INTEGER NOT NULL,
    reused INTEGER NOT NULL, PRIMARY KEY (run_id, cell_row));
CREATE TABLE IF NOT EXISTS run_interrupts (
    run_id TEXT NOT NULL REFERENCES runs(run_id), at TEXT NOT NULL, reason TEXT NOT NULL,
    cells_done INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    cell_row INTEGER NOT NULL REFERENCES cells(cell_row), metric TEXT NOT NULL,
    idx INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY (cell_row, metric, idx));
"""
# A run's cells: the newest row of each position (a failed cell measured again on resume
# keeps its first row, which the run no longer shows).
_LATEST = ("SELECT * FROM run_cells rc WHERE rc.rowid = (SELECT MAX(r2.rowid) FROM run_cells r2 "
           "WHERE r2.run_id = rc.run_id AND r2.position = rc.position)")
# The rows a run no longer shows: a position measured again (a failed cell, or a comparison
# interrupted half-way and measured again whole on resume) keeps its earlier rows.
_SUPERSEDED = ("SELECT * FROM run_cells rc WHERE rc.rowid < (SELECT MAX(r2.rowid) FROM run_cells r2 "
               "WHERE r2.run_id = rc.run_id AND r2.position = rc.position)")
_APPEND_ONLY = ("runs", "run_ends", "cells", "run_cells", "samples", "environments",
                "run_interrupts")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Store:
    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UsageError(f"no results database at '{path}': run `quantbench run` first "
                             "or pass --db PATH")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # One connection shared by a run's device threads, which take turns (api.py's lock).
            self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise UsageError(f"cannot use '{path}' as the results database ({exc}): "
                             "pass a writable --db PATH") from None

    def _migrate(self) -> None:
        self.db.executescript(SCHEMA)
        for table in _APPEND_ONLY:
            for op in ("UPDATE", "DELETE"):
                self.db.execute(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            with self.tx() as db:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise UsageError(f"'{self.path}' was written by a newer quantbench (schema "
                             f"{row[0]} > {SCHEMA_VERSION}): upgrade quantbench")

    @contextmanager
    def tx(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writes ---------------------------------------------------------------------------
    def add_env(self, env: dict) -> str:
        env_id = stable_hash(env)[:16]
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO environments VALUES (?, ?, ?)",
                       (env_id, json.dumps(env), now()))
        return env_id

    def begin_run(self, run_id: str, config: dict, purpose: str | None, command: str,
                  env_id: str) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                       (run_id, now(), purpose, command, json.dumps(config), env_id))

    def end_run(self, run_id: str, ok: int, failed: int, wall_s: float) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO run_ends VALUES (?, ?, ?, ?, ?)",
                       (run_id, now(), ok, failed, wall_s))

    def add_cell(self, run_id: str, position: int, cell: dict, result: dict, env_id: str,
                 started_at: str, wall_s: float) -> int:
        """One measurement and its raw samples, in one transaction."""
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO cells (cell_id, run_id, model, scheme, runtime, device, baseline, "
                "config, status, error, memory, info, env_id, started_at, finished_at, wall_s) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cell["cell_id"], run_id, cell["model"]["name"], cell["scheme"], cell["runtime"],
                 cell["device"], int(cell["baseline"]), json.dumps(_without_prompt_ids(cell)),
                 result["status"], result.get("error"), json.dumps(result.get("memory", {})),
                 json.dumps(result.get("info", {})), env_id, started_at, now(), wall_s))
            row = cur.lastrowid
            db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?)",
                           [(row, metric, i, float(v))
                            for metric, values in result.get("metrics", {}).items()
                            for i, v in enumerate(values)])
            db.execute("INSERT INTO run_cells VALUES (?, ?, ?, 0)", (run_id, row, position))
        return row

    def mark_interrupted(self, run_id: str, reason: str) -> None:
        """Ctrl-C or SIGTERM: the run stops here; the same command resumes it."""
        with self.tx() as db:
            done = db.execute(f"SELECT COUNT(*) FROM ({_LATEST}) WHERE run_id=?", (run_id,)).fetchone()[0]
            db.execute("INSERT INTO run_interrupts VALUES (?, ?, ?, ?)", (run_id, now(), reason, done))

    def link_cell(self, run_id: str, position: int, cell_row: int) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO run_cells VALUES (?, ?, ?, 1)", (run_id, cell_row, position))

    # ---- reads ----------------------------------------------------------------------------
    def find_measured(self, cell_id: str) -> tuple[int, str] | None:
        """The newest clean measurement of a cell: ok, and not measured under contention or
        with --allow-shared (those are kept and shown, never reused as clean)."""
        for row, run_id, info in self.db.execute(
                "SELECT cell_row, run_id, info FROM cells WHERE cell_id=? AND status='ok' "
                "ORDER BY cell_row DESC", (cell_id,)):
            if not contention_flag(json.loads(info)):
                return row, run_id
        return None

    def wall_estimate(self, cell: dict) -> tuple[float, str] | None:
        """(seconds, how) a cell took before: the same cell, else the same model, scheme,
        runtime and workload on the same kind of device (another environment or settings)."""
        same = [w for (w,) in self.db.execute(
            "SELECT wall_s FROM cells WHERE cell_id=? AND status='ok'", (cell["cell_id"],))]
        if same:
            return sorted(same)[len(same) // 2], "this cell before"
        like = []
        workload = json.dumps(cell["workload"], sort_keys=True)
        for wall, config, device in self.db.execute(
                "SELECT wall_s, config, device FROM cells WHERE model=? AND scheme=? AND "
                "runtime=? AND status='ok'", (cell["model"]["name"], cell["scheme"],
                                              cell["runtime"])):
            config = json.loads(config)
            if (device.split(":")[0] == cell["device"].split(":")[0] and
                    json.dumps(config["workload"], sort_keys=True) == workload):
                like.append(wall)
        if like:
            return sorted(like)[len(like) // 2], "a like cell before"
        return None

    def run_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT run_id FROM runs ORDER BY created_at, rowid")]

    def run_state(self, run_id: str) -> dict:
        """finished / interrupted / unfinished (killed, or still running), and cells stored."""
        done = self.db.execute(f"SELECT COUNT(*) FROM ({_LATEST}) WHERE run_id=?",
                               (run_id,)).fetchone()[0]
        end = self.db.execute("SELECT finished_at FROM run_ends WHERE run_id=?", (run_id,)).fetchone()
        stops = self.db.execute("SELECT at, reason FROM run_interrupts WHERE run_id=? ORDER BY rowid",
                                (run_id,)).fetchall()
        planned = len(json.loads(self.db.execute("SELECT config FROM runs WHERE run_id=?",
                                                 (run_id,)).fetchone()[0]).get("cells") or [])
        state = "finished" if end else "interrupted" if stops else "unfinished"
        return {"state": state, "cells_done": done, "cells_planned": planned or None,
                "interruptions": [{"at": a, "reason": r} for a, r in stops],
                # As every output words it: "interrupted", "1 of 3 cells measured".
                "how": {"unfinished": "unfinished (killed, or still running)"}.get(state, state),
                "measured": f"{done}{f' of {planned}' if planned else ''} cells measured"}

    def complete_run_ids(self) -> list[str]:
        """Runs that ended and hold at least one cell: what 'latest' may mean."""
        return [r[0] for r in self.db.execute(
            "SELECT r.run_id FROM runs r JOIN run_ends e USING (run_id) WHERE EXISTS "
            "(SELECT 1 FROM run_cells c WHERE c.run_id = r.run_id) ORDER BY r.created_at, r.rowid")]

    def resumable_run(self, *plan_ids: str) -> str | None:
        """The newest run of this very plan (under any of its ids) that stopped before its end
        (interrupted or killed)."""
        for run_id, config in self.db.execute(
                "SELECT run_id, config FROM runs WHERE run_id NOT IN (SELECT run_id FROM run_ends) "
                "ORDER BY created_at DESC, rowid DESC"):
            if json.loads(config).get("plan_id") in plan_ids:
                return run_id
        return None

    def status_counts(self, run_id: str) -> tuple[int, int]:
        """(ok, failed) cells of a run, reused ones included."""
        ok, total = self.db.execute(
            f"SELECT SUM(c.status = 'ok'), COUNT(*) FROM ({_LATEST}) rc JOIN cells c "
            "USING (cell_row) WHERE rc.run_id=?", (run_id,)).fetchone()
        return ok or 0, total - (ok or 0)

    def positions_done(self, run_id: str) -> set[int]:
        """Positions a resumed run keeps: measured ok. A failed cell is measured again (its
        row stays in the database; the run shows the newest of each position)."""
        return {r[0] for r in self.db.execute(
            f"SELECT rc.position FROM ({_LATEST}) rc JOIN cells c USING (cell_row) "
            "WHERE rc.run_id=? AND c.status='ok'", (run_id,))}

    def positions_measured(self, run_id: str) -> dict[int, str]:
        """{position: cell_id} of a run's cells measured ok (the id says its environment)."""
        return dict(self.db.execute(
            f"SELECT rc.position, c.cell_id FROM ({_LATEST}) rc JOIN cells c USING (cell_row) "
            "WHERE rc.run_id=? AND c.status='ok'", (run_id,)))

    def resolve_run(self, run_id: str | None) -> str:
        runs = self.run_ids()
        if not runs:
            raise UsageError(f"'{self.path}' holds no runs yet: run `quantbench run` first")
        if run_id is not None and not str(run_id).strip():
            raise UsageError("--run is empty: pass a run id, a prefix of one, or latest")
        if run_id in (None, "latest"):
            complete = self.complete_run_ids()
            if not complete:
                raise UsageError(f"'{self.path}' holds no finished run with a measured cell "
                                 f"(the last, {runs[-1]}, did not finish): run the same command "
                                 "again to resume it, or pass --run ID")
            return complete[-1]
        run_id = str(run_id).strip()
        if run_id in runs:
            return run_id
        matches = [r for r in runs if r.startswith(run_id)]
        if len(matches) > 1:
            raise UsageError(f"run prefix '{run_id}' is ambiguous: it matches {len(matches)} runs "
                             f"({', '.join(matches[:4])}{', ...' if len(matches) > 4 else ''}): "
                             "give more of the id")
        if not matches:
            raise UsageError(f"run '{run_id}' not found in '{self.path}' (runs: "
                             f"{', '.join(runs[-5:])}{' ...' if len(runs) > 5 else ''})")
        return matches[0]

    def run(self, run_id: str) -> dict:
        row = self.db.execute(
            "SELECT r.run_id, r.created_at, r.purpose, r.command, r.config, r.env_id, "
            "e.finished_at, e.cells_ok, e.cells_failed, e.wall_s "
            "FROM runs r LEFT JOIN run_ends e USING (run_id) WHERE r.run_id=?", (run_id,)).fetchone()
        keys = ("run_id", "created_at", "purpose", "command", "config", "env_id", "finished_at",
                "cells_ok", "cells_failed", "wall_s")
        out = dict(zip(keys, row))
        out["config"] = json.loads(out["config"])
        return out

    def env(self, env_id: str) -> dict:
        row = self.db.execute("SELECT data FROM environments WHERE env_id=?", (env_id,)).fetchone()
        return json.loads(row[0]) if row else {}

    def cells(self, run_id: str) -> list[dict]:
        """A run's cells in position order: the newest row of each position."""
        return self._cells(_LATEST, run_id)

    def superseded_cells(self, run_id: str) -> list[dict]:
        """Earlier rows of positions measured again: each still a measurement of its cell, in
        its own process (how far a cell moves between processes, what its GPU time was)."""
        return self._cells(_SUPERSEDED, run_id)

    def _cells(self, rows_of_run: str, run_id: str) -> list[dict]:
        rows = self.db.execute(
            "SELECT c.cell_row, c.cell_id, c.run_id, c.model, c.scheme, c.runtime, c.device, "
            "c.baseline, c.config, c.status, c.error, c.memory, c.info, c.env_id, c.started_at, "
            f"c.finished_at, c.wall_s, rc.reused FROM ({rows_of_run}) rc JOIN cells c "
            "USING (cell_row) WHERE rc.run_id=? ORDER BY rc.position, rc.rowid",
            (run_id,)).fetchall()
        keys = ("cell_row", "cell_id", "measured_in_run", "model", "scheme", "runtime", "device",
                "baseline", "config", "status", "error", "memory", "info", "env_id", "started_at",
                "finished_at", "wall_s", "reused")
        out = []
        for row in rows:
            cell = dict(zip(keys, row))
            for key in ("config", "memory", "info"):
                cell[key] = json.loads(cell[key])
            cell["baseline"] = bool(cell["baseline"])
            cell["reused"] = bool(cell["reused"])
            cell["samples"] = self.samples(cell["cell_row"])
            out.append(cell)
        return out

    def samples(self, cell_row: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for metric, value in self.db.execute(
                "SELECT metric, value FROM samples WHERE cell_row=? ORDER BY metric, idx", (cell_row,)):
            out.setdefault(metric, []).append(value)
        return out


def _without_prompt_ids(cell: dict) -> dict:
    """Prompt ids are identified by their hash; the ids themselves are kept once per run."""
    cell = dict(cell)
    cell["prompt"] = {k: v for k, v in cell["prompt"].items() if k != "ids"}
    if cell.get("quality"):  # the evaluation tokens likewise: their hash is in the identity
        plan = {k: v for k, v in cell["quality"]["plan"].items() if k != "ids"}
        cell["quality"] = {**cell["quality"], "plan": plan}
    return cell
