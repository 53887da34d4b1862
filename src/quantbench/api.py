"""LLMBenchmark: what `quantbench run` does, from Python."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import socket
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from quantbench import planner, runtimes
from quantbench.config import CellConfig, Repetitions, parse_size
from quantbench.devices import _device_name, resolve_device  # noqa: F401  (part of the API)
from quantbench.errors import UsageError, api_message
from quantbench.results import CellResult, RunInterrupted, RunResult  # noqa: F401
from quantbench.planner import DEFAULT_SLOTS, Comparison  # noqa: F401  (part of the API)
from quantbench.runconfig import RunConfig
from quantbench.store import Store, now


class LLMBenchmark:
    """Benchmark schemes against a baseline over every point of the axes; `run()` returns a
    RunResult.

    Pass a `RunConfig`, or its settings as keyword arguments by their flat names
    (`LLMBenchmark(model="random:tiny", schemes="fp32,bf16", batch_size=[1, 8])`): axes take a
    list or one value, name lists a list or a comma string. `groups` and `exclude` are a sweep
    file's (see `quantbench sweep --help`). Bad input raises `quantbench.errors.UsageError`,
    whose message names these parameters.
    """

    def __init__(self, config: RunConfig | None = None, *, progress=None, command: str = "",
                 groups: dict | None = None, exclude: list | None = None, **settings):
        with self._api_errors():
            if config is None:
                config = RunConfig.from_flat(settings)
            elif settings:
                config = config.replace(**settings)
            self.config = config
            Repetitions.parse_runs(config.repetitions.runs)
            limit = config.safety.cell_memory_limit
            self.cell_memory_limit = (limit if limit in ("auto", None) or isinstance(limit, int)
                                      else parse_size(limit))
        self.groups = groups
        self.exclude = exclude
        self.progress = progress  # quantbench.report.progress.RunProgress or None
        self.command = command
        self.notes: list[str] = []
        o = config.outputs
        self.db, self.out, self.log = o.db, o.out or None, o.log or None
        self.purpose = o.purpose

    @staticmethod
    @contextlib.contextmanager
    def _api_errors():
        """Messages name command-line options; called from Python they name parameters."""
        try:
            yield
        except UsageError as exc:
            from quantbench.runconfig import FIELDS

            raise type(exc)(api_message(str(exc), FIELDS)) from None

    def _check_outputs(self) -> None:
        """Every path this run will write, checked before anything is measured."""
        from quantbench import outputs

        if self.log:
            outputs.check_file(self.log, "--log")
        if self.out:
            outputs.check_dir(self.out, "--out")
        outputs.check_file(self.db, "--db")

    def memory_limit(self, device: str) -> int | None:
        """--cell-memory-limit in bytes; auto: 90% of the memory available when the run starts,
        so that one runaway cell fails alone instead of taking the machine down."""
        if self.cell_memory_limit != "auto":
            return self.cell_memory_limit
        import psutil

        return int(0.9 * psutil.virtual_memory().available)

    def plan(self) -> list[Comparison]:
        """The comparisons this run would measure, validated; nothing is written."""
        with self._api_errors():
            return self._plan()

    def _plan(self) -> list[Comparison]:
        planner.validate_static(self.config)
        self.repetitions_checked()
        pts = planner.points(self.config, self.groups, self.exclude)
        if not pts:
            raise UsageError("every point of the sweep is excluded: nothing to measure")
        resolve = None
        if self.config.execution.executor == "ray":
            from quantbench.executors import ray_cluster

            def resolve(spec):
                return ray_cluster.resolve(spec, self.config.execution.address)
        self.planner = planner.Planner(self.config, self.notes, on_convert=self._converting,
                                       resolve_device=resolve)
        self.planner.check_schemes(pts)
        if self.config.quality.quality is not False:
            self.planner.quality_settings.validate(None)
        self._check_outputs()
        return self.planner.comparisons(pts)

    def repetitions_checked(self) -> None:
        Repetitions(**{k: v for k, v in asdict(self.config.repetitions).items()}
                    | {"runs": Repetitions.parse_runs(self.config.repetitions.runs)}).validate()

    def _measured_fresh(self, comparison: Comparison) -> set[str]:
        """Schemes a comparison is held against (the baseline and the reference runs of other
        engines): measured in this run, never taken from an earlier one, unless
        --reuse-baseline."""
        if self.config.comparing.reuse_baseline:
            return set()
        refs = {c.extra.get("speed_reference") for c in comparison.cells} - {None}
        return {comparison.cells[0].scheme} | refs

    def _planned_files(self, run_id: str) -> list[str]:
        files = [str(Path(self.out) / f"{run_id}.{ext}") for ext in ("json", "csv")] if self.out else []
        return files + ([str(self.log)] if self.log else [])

    def _hardware_profile(self, device: str, env: dict) -> dict:
        """The roofline's ceilings: measured once per device and cached; a failure to measure
        costs the roofline, not the run."""
        from quantbench.hardware import cache

        def spinner():
            message = f"Measuring {device}'s copy bandwidth and matmul rate once (cached)"
            return self.progress.converting(message) if self.progress else contextlib.nullcontext()

        try:
            return cache.get(device, env, on_measure=spinner)
        except UsageError as exc:
            self.notes.append(f"no roofline: {exc}")
            return {"reason": str(exc)}

    def _converting(self, message: str):
        return self.progress.converting(message) if self.progress else contextlib.nullcontext()

    # ---- the run ---------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Measure every cell and return the run. Ctrl-C or SIGTERM (as KeyboardInterrupt)
        stops the running cells' processes, marks the run interrupted and re-raises; the same
        call afterwards resumes that run instead of starting over."""
        with self._api_errors():
            return self._run()

    def _plan_id(self, cells: list[CellConfig], with_outputs: bool = False) -> str:
        """What makes two invocations the same run: the cells, in order. Not the environment:
        a sweep resumed on another machine (a fresh lent GPU, an upgraded library) is the same
        plan; which of its cells stand is `_kept`'s question. Nor where the reports go: they are
        written from the database when the run ends, to where the finishing invocation says (a
        changed --out once started a 46-cell GPU sweep over instead of resuming it)."""
        from quantbench.config import stable_hash

        parts = [[stable_hash(dataclasses.replace(c, environment=None).identity()), c.role]
                 for c in cells]
        if with_outputs:  # how runs begun before 2026-11-30 were identified: still resumable
            parts += [self.out and str(Path(self.out).resolve()),
                      self.log and str(Path(self.log).resolve())]
        return stable_hash(parts)[:16]

    def _run(self) -> RunResult:
        from quantbench import devicelock, environment, forkserver, identity
        from quantbench.analysis import build_records
        from quantbench.report import exports

        start = time.perf_counter()
        comparisons = self._plan()
        lanes = list(dict.fromkeys(lane for c in comparisons for lane in c.lanes))
        safety, comparing = self.config.safety, self.config.comparing
        remote = self.config.execution.executor != "local"  # devices on other machines
        locks = []
        store = None
        try:
            if not safety.allow_shared and not remote:
                waiting = (lambda text: self.progress.note(f"waiting: {text}")) if self.progress else None
                for lane in lanes:
                    locks.append(devicelock.acquire(lane, self.command, wait=safety.wait,
                                                    on_wait=waiting))
            env = environment.collect()
            if remote:  # each node measures its own ceilings; its cells' environments keep them
                env["hardware"] = {"reason": "measured on each node of the cluster: see the "
                                             "environment of each cell"}
            else:
                env["hardware"] = self._hardware_profile(lanes[0], env)
                for lane in lanes[1:]:  # each GPU of a pool measured once (cached)
                    self._hardware_profile(lane, env)
            cells: list[CellConfig] = []
            spans = []  # (comparison, first position, last position + 1)
            for comparison in comparisons:
                fingerprint = identity.environment_fingerprint(env, comparison.device)
                own = [dataclasses.replace(c, environment=fingerprint) for c in comparison.cells]
                if comparing.repeat_baseline:
                    own.append(dataclasses.replace(own[0], quality=None, lm_eval=None,
                                                   extra={**own[0].extra, "role": "baseline-repeat"}))
                comparison.cells = own
                spans.append((comparison, len(cells), len(cells) + len(own)))
                cells += own
            # auto on a cluster: each node takes 90% of its own available memory
            memory_limit = self.memory_limit(lanes[0]) if not remote else self.cell_memory_limit
            plan_id = self._plan_id(cells)
            store = Store(self.db)  # after validation: bad input leaves no database behind
            env_id = store.add_env(env)
            run_id = None if comparing.force else store.resumable_run(
                plan_id, self._plan_id(cells, with_outputs=True))
            if run_id and _still_running(store.run(run_id)["config"].get("owner")):
                run_id = None  # another process (--allow-shared) is measuring it right now
            done: set[int] = set()
            if run_id:
                done = self._kept(store, run_id, spans)
                self.notes.append(f"resumed run {run_id}, which stopped with {len(done)} of "
                                  f"{len(cells)} cells measured: those are kept, the rest "
                                  "measured now")
            else:
                run_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
                store.begin_run(run_id, self._run_config(comparisons, cells, plan_id, memory_limit,
                                                         run_id), self.purpose, self.command, env_id)
            if self.progress:
                self.progress.start(len(cells), comparisons, lanes)
            try:
                self._measure(store, run_id, env_id, spans, done, memory_limit, lanes)
            except KeyboardInterrupt:
                store.mark_interrupted(run_id, "interrupted (Ctrl-C or SIGTERM)")
                raise RunInterrupted(run_id, len(store.positions_done(run_id)), len(cells)) from None
            wall_s = time.perf_counter() - start
            ok, failed = store.status_counts(run_id)
            store.end_run(run_id, ok, failed, wall_s)
            records = build_records(store, run_id)
            files = exports.write_run_files(records, self.out, run_id) if self.out else []
            if self.log:
                from quantbench.report.log import append_entry

                append_entry(store, run_id, self.log)
                files.append(str(self.log))
        finally:
            if self.progress:
                self.progress.stop()
            if store is not None:
                store.close()
            forkserver.shutdown()  # its memory goes back, its CPU time joins the run's
            for lock in locks:
                lock.release()
        return RunResult(run_id=run_id, db=str(self.db), records=records, files=files,
                         wall_s=wall_s, notes=self.notes)

    @staticmethod
    def _kept(store: Store, run_id: str, spans) -> set[int]:
        """Positions a resumed run keeps: each measured ok in this environment, and every cell
        of a comparison measured whole in another. A comparison half measured elsewhere is
        measured again here whole: a scheme is never held against a baseline from another
        machine."""
        measured = store.positions_measured(run_id)  # position -> cell_id, ok cells only
        kept: set[int] = set()
        for comparison, first, end in spans:
            positions = range(first, end)
            same = {p for p, c in zip(positions, comparison.cells) if measured.get(p) == c.cell_id}
            if all(p in measured for p in positions):
                kept.update(positions)
            else:
                kept.update(same)
        return kept

    def _run_config(self, comparisons, cells, plan_id, memory_limit, run_id) -> dict:
        """What the store keeps of the run: every setting, and each comparison's point."""
        first = comparisons[0].cells[0]
        settings = self.config.flat()
        return {"model": first.model, "schemes": [c.scheme for c in comparisons[0].cells
                                                  if c.role == "measure"],
                "baseline": first.scheme, "device": first.device, "runtime": first.runtime
                if first.runtime in runtimes.selectable() else self.config.axes.runtime[0],
                "workload": vars(first.workload), "repetitions": asdict(first.repetitions),
                "prompt": first.prompt, "seed": first.seed, "force": settings["force"],
                "margin": settings["margin"], "repeat_baseline": settings["repeat_baseline"],
                "reuse_baseline": settings["reuse_baseline"],
                "cell_timeout": settings["cell_timeout"], "notes": self.notes,
                "cell_memory_limit": memory_limit, "allow_shared": settings["allow_shared"],
                "trust_remote_code": settings["trust_remote_code"], "plan_id": plan_id,
                "cells": [c.cell_id for c in cells], "settings": settings,
                "sweep": {"groups": self.groups, "exclude": self.exclude} if self.groups
                or self.exclude else None,
                "comparisons": [{"key": c.key, "label": c.label, "baseline": c.baseline,
                                 "groups": c.groups, "lanes": c.lanes} for c in comparisons],
                "owner": {"host": socket.gethostname(), "pid": os.getpid()},
                "files": self._planned_files(run_id)}

    def _measure(self, store: Store, run_id: str, env_id: str, spans, done: set[int],
                 memory_limit: int | None, lanes: list[str]) -> None:
        from quantbench import executors

        executors.get(self.config.execution.executor).measure(
            self, store, run_id, env_id, spans, done, memory_limit, lanes)

    @staticmethod
    def _label(cell: CellConfig) -> str:
        return cell.scheme + (" (baseline, again)" if cell.role != "measure" else "")

    def _reusable(self, store: Store, comparison: Comparison, cell: CellConfig):
        """An earlier clean measurement of this very cell (same environment), unless it is one
        the comparison is held against (measured fresh) or --force."""
        if (self.config.comparing.force or cell.role != "measure"
                or cell.scheme in self._measured_fresh(comparison)):
            return None
        return store.find_measured(cell.cell_id)

    def _measure_comparison(self, store, run_id, env_id, span, done, memory_limit, lane,
                            lock=None, cancel=None) -> None:
        from quantbench import executor

        comparison, first, end = span
        lock = lock or contextlib.nullcontext()
        where = lane if len(comparison.lanes) > 1 or lane != comparison.device else None
        for position, cell in zip(range(first, end), comparison.cells):
            label = self._label(cell)
            if position in done:  # measured before this run was interrupted
                if self.progress:
                    self.progress.reused(label, run_id, comparison)
                continue
            data = cell.to_dict()
            with lock:
                previous = self._reusable(store, comparison, cell)
                if previous:
                    store.link_cell(run_id, position, previous[0])
            if previous:
                if self.progress:
                    self.progress.reused(label, previous[1], comparison)
                continue
            task = self.progress.cell_started(label, comparison, lane) if self.progress else None
            started = now()
            on_event = ((lambda event, task=task: self.progress.event(event, task))
                        if self.progress else None)
            result, wall = executor.run_cell(data, self.config.safety.cell_timeout, on_event,
                                             memory_limit, place_on=where, cancel=cancel)
            if self.config.safety.allow_shared:
                result.setdefault("info", {})["shared"] = True
            with lock:
                store.add_cell(run_id, position, data, result, env_id, started, wall)
            if self.progress:
                self.progress.cell_finished(label, result, wall, task)


def _still_running(owner: dict | None) -> bool:
    """Whether the process that began a run on this host is alive (then it is not resumable)."""
    if not owner or owner.get("host") != socket.gethostname():
        return False
    import psutil

    try:
        return psutil.Process(owner["pid"]).is_running() and owner["pid"] != os.getpid()
    except psutil.Error:
        return False
