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

from quantbench import models, prompts
from quantbench.config import CellConfig, Repetitions, Workload, parse_name_list, parse_size
from quantbench.devices import _device_name, resolve_device  # noqa: F401  (part of the API)
from quantbench.errors import UsageError, api_message
from quantbench.quality.plan import QualitySettings
from quantbench.results import CellResult, RunInterrupted, RunResult  # noqa: F401
from quantbench import runtimes
from quantbench.schemes import get as get_scheme
from quantbench.store import Store, now

# Preferred order per slot of the default comparison; the first available scheme is taken.
DEFAULT_SLOTS = {
    "cpu": [["fp32"], ["bf16"], ["torchao-int8wo", "bnb-int8"], ["torchao-int4wo", "bnb-nf4"]],
    "cuda": [["bf16"], ["fp16"], ["torchao-int8wo", "bnb-int8"], ["torchao-int4wo", "bnb-nf4"]],
}


class LLMBenchmark:
    """Benchmark schemes of one model against a baseline; `run()` returns a RunResult.

    `schemes` and `lm_eval_tasks` take a list of names or one comma-separated string. Bad
    input raises `quantbench.errors.UsageError`, whose message names these parameters.
    """

    def __init__(self, model: str = "default", schemes: list[str] | str | None = None,
                 baseline: str | None = None, device: str = "auto", runtime: str = "eager",
                 batch_size: int = 1, prompt_tokens: int = 128, new_tokens: int = 64,
                 warmup: int = 2, runs: int | str = "auto", db: str = "quantbench.db",
                 out: str | None = "quantbench-results", purpose: str | None = None,
                 cell_timeout: float | None = None, prompt_file: str | None = None,
                 force: bool = False, seed: int = 0, progress=None, command: str = "",
                 log: str | None = None, quality: bool | None = None,
                 eval_text: str | None = None, eval_tokens: int = 2048, eval_context: int = 512,
                 eval_stride: int = 256, lm_eval_tasks: list[str] | str | None = None,
                 lm_eval_include: str | None = None, lm_eval_limit: int | None = None,
                 max_warmup: int = 10, target_ci: float = 0.01, max_runs: int = 100,
                 max_seconds: float = 30.0, margin: float = 0.02, repeat_baseline: bool = True,
                 reuse_baseline: bool = False, allow_shared: bool = False, wait: bool = False,
                 cell_memory_limit: int | str | None = "auto", trust_remote_code: bool = False):
        with self._api_errors():
            self.schemes = parse_name_list(schemes, "--schemes")
            lm_eval_tasks = parse_name_list(lm_eval_tasks, "--lm-eval-tasks")
            runs = Repetitions.parse_runs(runs)
            self.cell_memory_limit = (cell_memory_limit if cell_memory_limit in ("auto", None)
                                      or isinstance(cell_memory_limit, int)
                                      else parse_size(cell_memory_limit))
        self.allow_shared = allow_shared  # measure although another run holds the device
        self.wait = wait  # queue behind a run that holds the device instead of refusing
        self.trust_remote_code = trust_remote_code
        self.model_spec = model
        self.baseline = baseline
        self.device = device
        self.runtime = runtime
        self.workload = Workload(batch_size, prompt_tokens, new_tokens)
        self.repetitions = Repetitions(warmup=warmup, runs=runs,
                                       max_warmup=(max(max_warmup, warmup) if isinstance(max_warmup, int)
                                                   and isinstance(warmup, int) else max_warmup),
                                       target_ci=target_ci, max_runs=max_runs,
                                       max_seconds=max_seconds)
        # Differences within this fraction (or within the baseline's own drift, when larger)
        # are reported as equivalent, not as faster or slower.
        self.margin = margin
        self.repeat_baseline = repeat_baseline  # measure the baseline again at the end (A..A)
        self.reuse_baseline = reuse_baseline
        self.db = db
        self.out = out
        self.purpose = purpose
        self.cell_timeout = cell_timeout
        self.prompt_file = prompt_file
        self.force = force
        self.seed = seed
        self.progress = progress  # quantbench.report.progress.RunProgress or None
        self.command = command
        self.log = log  # Markdown experiment log to append an entry to (None: none)
        self.notes: list[str] = []
        # None: measure quality where it means something (real weights); True: insist; False: skip.
        self.quality = quality
        self.quality_settings = QualitySettings(eval_text, eval_tokens, eval_context, eval_stride)
        self.lm_eval = (lm_eval_tasks, lm_eval_include, lm_eval_limit) if lm_eval_tasks else None
        self._lm_eval_options = (lm_eval_include, lm_eval_limit)

    @staticmethod
    @contextlib.contextmanager
    def _api_errors():
        """Messages name command-line options; called from Python they name parameters."""
        try:
            yield
        except UsageError as exc:
            import inspect

            params = inspect.signature(LLMBenchmark.__init__).parameters
            raise type(exc)(api_message(str(exc), params)) from None

    # ---- validation, before anything is written ------------------------------------------
    def _check_static(self) -> None:
        if self.model_spec is not None and not str(self.model_spec).strip():
            raise UsageError("--model is empty (an unset shell variable?): pass default, "
                             "random:<preset>, a local HF directory, a .gguf file or a hub id")
        if self.baseline is not None and not str(self.baseline).strip():
            raise UsageError("--baseline is empty (an unset shell variable?): name a scheme, or "
                             "leave it out to take the first of --schemes")
        if not isinstance(self.runtime, str) or not self.runtime.strip():
            raise UsageError(f"--runtime is empty: choose one of {', '.join(runtimes.selectable())}")
        if self.force and self.reuse_baseline:
            raise UsageError("--force measures every cell again and --reuse-baseline takes the "
                             "baseline from an earlier run: pass one of them")
        if not self.lm_eval and any(v is not None for v in self._lm_eval_options):
            raise UsageError("--lm-eval-include and --lm-eval-limit apply to --lm-eval-tasks: "
                             "name the tasks too, or drop them")
        if self.quality is False and self.quality_settings.eval_text:
            raise UsageError("--eval-text is for quality, which --no-quality turns off: drop one")
        self.workload.validate()
        self.repetitions.validate()
        if self.quality is not False:
            self.quality_settings.validate(None)
        if self.runtime not in runtimes.selectable():
            raise UsageError(f"--runtime '{self.runtime}' is not available: choose one of "
                             f"{', '.join(runtimes.selectable())}")
        if not 0 <= self.margin < 1:
            raise UsageError(f"--margin is a fraction (0.02 = 2%), got {self.margin!r}")
        if self.cell_timeout is not None and self.cell_timeout <= 0:
            raise UsageError(f"--cell-timeout must be positive, got {self.cell_timeout}")
        if self.allow_shared and self.wait:
            raise UsageError("--wait queues behind a run that holds the device and "
                             "--allow-shared measures beside it: pass one of them")

    def _pick_schemes(self, device_type: str, capability) -> tuple[list[str], str]:
        # Canonical names ("bnb-int8:threshold=0.0"), so one scheme is one identity however typed.
        names = None
        if self.schemes:
            names = []
            for typed in self.schemes:
                name = get_scheme(typed).name
                if name in names:
                    self.notes.append(f"'{typed}' is listed twice in --schemes: measured once")
                else:
                    names.append(name)
        if names is None:
            names = []
            for slot in DEFAULT_SLOTS[device_type]:
                usable = [n for n in slot if get_scheme(n).availability(device_type, capability)[0]]
                if usable:
                    names.append(usable[0])
                else:
                    self.notes.append(f"skipped the {'/'.join(slot)} slot: "
                                      + get_scheme(slot[0]).availability(device_type, capability)[1])
        baseline = get_scheme(self.baseline.strip()).name if self.baseline else names[0]
        if self.schemes and baseline not in names:
            raise UsageError(f"--baseline {self.baseline} is not one of --schemes "
                             f"({', '.join(names)}): add it to --schemes, or pick one of them")
        if baseline in names:
            names.remove(baseline)
        names.insert(0, baseline)
        names = self._with_runtime_references(names, device_type)
        for name in names:
            ok, why = get_scheme(name).availability(device_type, capability)
            if not ok:
                raise UsageError(f"scheme '{name}' cannot run on {device_type} here: {why}")
        return names, baseline

    def _with_runtime_references(self, names: list[str], device_type: str) -> list[str]:
        """Schemes with their own engine (GGUF: llama.cpp) are timed against that engine's
        full-precision run, never against torch: add that run when it is missing and put it
        first among its engine's schemes."""
        base_runtime = get_scheme(names[0]).runtime or self.runtime
        out = list(names)
        for runtime in dict.fromkeys(get_scheme(n).runtime for n in names):
            if runtime is None or runtime == base_runtime:
                continue
            group = [n for n in out if get_scheme(n).runtime == runtime]
            refs = [n for n in group if get_scheme(n).reference]
            if not refs:
                ref = runtimes.get(runtime).reference_scheme(device_type)
                self.notes.append(f"added {ref}: {runtime} schemes are timed against {runtime}'s "
                                  "own full-precision run of the same model (like with like)")
                refs = [ref]
            first = out.index(group[0])
            out = [n for n in out if n not in refs]
            out[first:first] = refs
        return out

    def _check_runtime_fit(self, names: list[str], resolved) -> None:
        for name in names:
            scheme = get_scheme(name)
            runtimes.for_scheme(scheme, self.runtime).check_workload(self.workload, name)
            if scheme.base == "gguf-file" or name == "gguf-file":
                if not resolved.source_gguf:
                    raise UsageError("scheme 'gguf-file' runs a .gguf --model as it is, and "
                                     f"'{resolved.spec}' is not one: use gguf-q8_0, gguf-q4_k_m, ...")

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

    def _prepare(self):
        self._check_static()
        device, capability = resolve_device(self.device)
        device_type = device.split(":")[0]
        names, baseline = self._pick_schemes(device_type, capability)
        self._check_outputs()
        resolved = models.resolve(self.model_spec, on_convert=self._converting,
                                  trust_remote_code=self.trust_remote_code)
        self.workload.validate(resolved.max_context)
        self._check_runtime_fit(names, resolved)
        quality = lm_eval = None
        if resolved.random_weights:
            if self.lm_eval:
                raise UsageError(f"--lm-eval-tasks on '{resolved.spec}': random weights have no "
                                 "quality to measure; use a real model")
            if self.quality:
                raise UsageError(f"--quality on '{resolved.spec}': random weights have no quality "
                                 "to measure; use a real model, or drop --quality")
            if self.quality is None:
                self.notes.append("quality not measured: random weights are for speed and memory only")
            prompt = prompts.random_prompts(resolved.vocab_size, self.workload.batch_size,
                                            self.workload.prompt_tokens, self.seed)
        else:
            tokenizer = models.load_tokenizer(resolved)
            path = prompts.corpus_path(self.prompt_file)
            prompt = prompts.corpus_prompts(tokenizer, path,
                                            self.workload.batch_size, self.workload.prompt_tokens)
            if self.quality is not False:
                quality = self._quality_plan(tokenizer, resolved, baseline, device)
            if self.lm_eval:
                from quantbench.quality import lm_eval_tasks

                lm_eval = lm_eval_tasks.plan(*self.lm_eval)
        device_name = _device_name(device)
        cells = [CellConfig(model=resolved.to_dict(), scheme=name,
                            scheme_settings=get_scheme(name).settings(device_type),
                            runtime=get_scheme(name).runtime or self.runtime, device=device,
                            workload=self.workload, repetitions=self.repetitions, prompt=prompt,
                            seed=self.seed, baseline=(name == baseline),
                            extra=self._speed_reference(name, names), quality=quality,
                            lm_eval=lm_eval, device_name=device_name)
                 for name in names]
        return resolved, device, cells, prompt

    def _quality_plan(self, tokenizer, resolved, baseline: str, device: str) -> dict:
        from quantbench.quality import cache, plan

        device_type = device.split(":")[0]
        self.quality_settings.validate(resolved.max_context)
        built = plan.build(tokenizer, self.quality_settings)
        identity = plan.identity(built, baseline, get_scheme(baseline).settings(device_type))
        ctx = cache.context(device)
        return {"plan": built, "identity": identity, "baseline": baseline, "cache_context": ctx,
                "cache_key": cache.key(resolved.fingerprint, identity, device_type, self.seed, ctx)}

    def _speed_reference(self, name: str, names: list[str]) -> dict:
        runtime = get_scheme(name).runtime
        if runtime is None or runtime == (get_scheme(names[0]).runtime or self.runtime):
            return {}
        ref = next(n for n in names if get_scheme(n).runtime == runtime and get_scheme(n).reference)
        return {"speed_reference": ref}

    def _measured_fresh(self, cells: list[CellConfig]) -> set[str]:
        """Schemes every comparison of this run is held against (the baseline and the
        reference runs of other engines): measured in this run, never taken from an earlier
        one, unless --reuse-baseline."""
        if self.reuse_baseline:
            return set()
        refs = {c.extra.get("speed_reference") for c in cells} - {None}
        return {cells[0].scheme} | refs

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
        stops the running cell's processes, marks the run interrupted and re-raises; the same
        call afterwards resumes that run instead of starting over."""
        with self._api_errors():
            return self._run()

    def _plan_id(self, cells: list[CellConfig]) -> str:
        """What makes two invocations the same run: the cells, in order, and where results go."""
        from quantbench.config import stable_hash

        return stable_hash([[c.cell_id, c.role] for c in cells] +
                           [self.out and str(Path(self.out).resolve()),
                            self.log and str(Path(self.log).resolve())])[:16]

    def _run(self) -> RunResult:
        from quantbench import devicelock, environment, identity
        from quantbench.analysis import build_records
        from quantbench.report import exports

        start = time.perf_counter()
        resolved, device, cells, prompt = self._prepare()
        lock = None
        if not self.allow_shared:
            waiting = (lambda text: self.progress.note(f"waiting: {text}")) if self.progress else None
            lock = devicelock.acquire(device, self.command, wait=self.wait, on_wait=waiting)
        store = None
        try:
            env = environment.collect()
            env["hardware"] = self._hardware_profile(device, env)
            fingerprint = identity.environment_fingerprint(env, device)
            cells = [dataclasses.replace(c, environment=fingerprint) for c in cells]
            fresh = self._measured_fresh(cells)
            if self.repeat_baseline:
                cells.append(dataclasses.replace(cells[0], quality=None, lm_eval=None,
                                                 extra={**cells[0].extra, "role": "baseline-repeat"}))
            memory_limit = self.memory_limit(device)
            plan_id = self._plan_id(cells)
            store = Store(self.db)  # after validation: bad input leaves no database behind
            env_id = store.add_env(env)
            run_id = None if self.force else store.resumable_run(plan_id)
            if run_id and _still_running(store.run(run_id)["config"].get("owner")):
                run_id = None  # another process (--allow-shared) is measuring it right now
            done: set[int] = set()
            if run_id:
                done = store.positions_done(run_id)
                self.notes.append(f"resumed run {run_id}, which stopped with {len(done)} of "
                                  f"{len(cells)} cells measured: those are kept, the rest "
                                  "measured now")
            else:
                run_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
                config = {"model": resolved.to_dict(),
                          "schemes": [c.scheme for c in cells if c.role == "measure"],
                          "baseline": cells[0].scheme, "device": device, "runtime": self.runtime,
                          "workload": vars(self.workload), "repetitions": asdict(self.repetitions),
                          "prompt": prompt, "seed": self.seed, "force": self.force,
                          "margin": self.margin, "repeat_baseline": self.repeat_baseline,
                          "reuse_baseline": self.reuse_baseline,
                          "cell_timeout": self.cell_timeout, "notes": self.notes,
                          "cell_memory_limit": memory_limit, "allow_shared": self.allow_shared,
                          "trust_remote_code": self.trust_remote_code, "plan_id": plan_id,
                          "cells": [c.cell_id for c in cells],
                          "owner": {"host": socket.gethostname(), "pid": os.getpid()},
                          "files": self._planned_files(run_id)}
                store.begin_run(run_id, config, self.purpose, self.command, env_id)
            if self.progress:
                self.progress.start(len(cells), resolved, device)
            try:
                self._measure(store, run_id, env_id, cells, fresh, done, memory_limit)
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
            if lock is not None:
                lock.release()
        return RunResult(run_id=run_id, db=str(self.db), records=records, files=files,
                         wall_s=wall_s, notes=self.notes)

    def _measure(self, store: Store, run_id: str, env_id: str, cells: list[CellConfig],
                 fresh: set[str], done: set[int], memory_limit: int | None) -> None:
        from quantbench import executor

        for position, cell in enumerate(cells):
            label = cell.scheme + (" (baseline, again)" if cell.role != "measure" else "")
            if position in done:  # measured before this run was interrupted
                if self.progress:
                    self.progress.reused(label, run_id)
                continue
            data = cell.to_dict()
            reusable = not self.force and cell.role == "measure" and cell.scheme not in fresh
            previous = store.find_measured(cell.cell_id) if reusable else None
            if previous:
                store.link_cell(run_id, position, previous[0])
                if self.progress:
                    self.progress.reused(label, previous[1])
                continue
            if self.progress:
                self.progress.cell_started(label)
            started = now()
            on_event = self.progress.event if self.progress else None
            result, wall = executor.run_cell(data, self.cell_timeout, on_event, memory_limit)
            if self.allow_shared:
                result.setdefault("info", {})["shared"] = True
            store.add_cell(run_id, position, data, result, env_id, started, wall)
            if self.progress:
                self.progress.cell_finished(label, result, wall)


def _still_running(owner: dict | None) -> bool:
    """Whether the process that began a run on this host is alive (then it is not resumable)."""
    if not owner or owner.get("host") != socket.gethostname():
        return False
    import psutil

    try:
        return psutil.Process(owner["pid"]).is_running() and owner["pid"] != os.getpid()
    except psutil.Error:
        return False
