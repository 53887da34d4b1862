"""LLMBenchmark: what `quantbench run` does, from Python."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from quantbench import models, prompts
from quantbench.config import CellConfig, Repetitions, Workload
from quantbench.errors import UsageError
from quantbench.quality.plan import QualitySettings
from quantbench.runtimes import RUNTIMES
from quantbench.schemes import get as get_scheme
from quantbench.store import Store, now

# Preferred order per slot of the default comparison; the first available scheme is taken.
DEFAULT_SLOTS = {
    "cpu": [["fp32"], ["bf16"], ["torchao-int8wo", "bnb-int8"], ["torchao-int4wo", "bnb-nf4"]],
    "cuda": [["bf16"], ["fp16"], ["torchao-int8wo", "bnb-int8"], ["torchao-int4wo", "bnb-nf4"]],
}


@dataclass
class CellResult:
    record: dict

    def __getattr__(self, name):
        try:
            return self.record[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class RunResult:
    run_id: str
    db: str
    records: list[dict]
    files: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def cells(self) -> list[CellResult]:
        return [CellResult(r) for r in self.records]

    @property
    def failed(self) -> int:
        return sum(r["status"] != "ok" for r in self.records)

    def to_dataframe(self):
        from quantbench.report.exports import flat_rows
        import pandas as pd

        return pd.DataFrame(flat_rows(self.records))


def _device_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(int(device.split(":")[1]))


def resolve_device(device: str) -> tuple[str, tuple[int, int] | None]:
    import torch

    device = (device or "auto").strip()
    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = "cuda:0"
    if device == "cpu":
        return device, None
    if device.startswith("cuda:") and device[5:].isdigit():
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA GPU is visible here: use --device cpu")
        index = int(device[5:])
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) here")
        return device, torch.cuda.get_device_capability(index)
    raise UsageError(f"--device '{device}' not understood: use auto, cpu, cuda or cuda:N")


class LLMBenchmark:
    """Benchmark schemes of one model against a baseline; `run()` returns a RunResult."""

    def __init__(self, model: str = "default", schemes: list[str] | None = None,
                 baseline: str | None = None, device: str = "auto", runtime: str = "eager",
                 batch_size: int = 1, prompt_tokens: int = 128, new_tokens: int = 64,
                 warmup: int = 2, runs: int | str = "auto", db: str = "quantbench.db",
                 out: str | None = "quantbench-results", purpose: str | None = None,
                 cell_timeout: float | None = None, prompt_file: str | None = None,
                 force: bool = False, seed: int = 0, progress=None, command: str = "",
                 log: str | None = None, quality: bool | None = None,
                 eval_text: str | None = None, eval_tokens: int = 2048, eval_context: int = 512,
                 eval_stride: int = 256, lm_eval_tasks: list[str] | None = None,
                 lm_eval_include: str | None = None, lm_eval_limit: int | None = None,
                 max_warmup: int = 10, target_ci: float = 0.01, max_runs: int = 100,
                 max_seconds: float = 30.0, margin: float = 0.02, repeat_baseline: bool = True,
                 reuse_baseline: bool = False):
        self.model_spec = model
        self.schemes = schemes
        self.baseline = baseline
        self.device = device
        self.runtime = runtime
        self.workload = Workload(batch_size, prompt_tokens, new_tokens)
        self.repetitions = Repetitions(warmup=warmup, runs=Repetitions.parse_runs(runs),
                                       max_warmup=max(max_warmup, warmup), target_ci=target_ci,
                                       max_runs=max_runs, max_seconds=max_seconds)
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

    # ---- validation, before anything is written ------------------------------------------
    def _check_static(self) -> None:
        self.workload.validate()
        self.repetitions.validate()
        if self.quality is not False:
            self.quality_settings.validate(None)
        if self.runtime not in RUNTIMES:
            raise UsageError(f"--runtime '{self.runtime}' is not available: choose one of "
                             f"{', '.join(RUNTIMES)}")
        if not 0 <= self.margin < 1:
            raise UsageError(f"--margin is a fraction (0.02 = 2%), got {self.margin!r}")
        if self.cell_timeout is not None and self.cell_timeout <= 0:
            raise UsageError(f"--cell-timeout must be positive, got {self.cell_timeout}")

    def _pick_schemes(self, device_type: str, capability) -> tuple[list[str], str]:
        # Canonical names ("bnb-int8:threshold=0.0"), so one scheme is one identity however typed.
        names = [get_scheme(n).name for n in self.schemes] if self.schemes else None
        if names is None:
            names = []
            for slot in DEFAULT_SLOTS[device_type]:
                usable = [n for n in slot if get_scheme(n).availability(device_type, capability)[0]]
                if usable:
                    names.append(usable[0])
                else:
                    self.notes.append(f"skipped the {'/'.join(slot)} slot: "
                                      + get_scheme(slot[0]).availability(device_type, capability)[1])
        baseline = get_scheme(self.baseline).name if self.baseline else names[0]
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
                ref = "gguf-f16" if device_type == "cuda" else "gguf-f32"
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
            if scheme.runtime == "llama.cpp" and self.workload.batch_size != 1:
                raise UsageError(f"scheme '{name}' runs in llama.cpp one sequence at a time: "
                                 "use --batch-size 1 for GGUF schemes")
            if scheme.base == "gguf-file" or name == "gguf-file":
                if not resolved.source_gguf:
                    raise UsageError("scheme 'gguf-file' runs a .gguf --model as it is, and "
                                     f"'{resolved.spec}' is not one: use gguf-q8_0, gguf-q4_k_m, ...")

    def _check_outputs(self) -> None:
        if self.log and Path(self.log).is_dir():
            raise UsageError(f"--log '{self.log}' is a directory: pass a Markdown file path")
        if self.out:
            out = Path(self.out)
            if out.exists() and not out.is_dir():
                raise UsageError(f"--out '{self.out}' is a file: pass a directory")

    def _prepare(self):
        self._check_static()
        device, capability = resolve_device(self.device)
        device_type = device.split(":")[0]
        names, baseline = self._pick_schemes(device_type, capability)
        self._check_outputs()
        resolved = models.resolve(self.model_spec, on_convert=self._converting)
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
        from quantbench import environment, executor, identity
        from quantbench.analysis import build_records
        from quantbench.report import exports

        start = time.perf_counter()
        resolved, device, cells, prompt = self._prepare()
        env = environment.collect()
        env["hardware"] = self._hardware_profile(device, env)
        fingerprint = identity.environment_fingerprint(env, device)
        cells = [dataclasses.replace(c, environment=fingerprint) for c in cells]
        fresh = self._measured_fresh(cells)
        if self.repeat_baseline:
            cells.append(dataclasses.replace(cells[0], quality=None, lm_eval=None,
                                             extra={**cells[0].extra, "role": "baseline-repeat"}))
        store = Store(self.db)  # after validation: bad input leaves no database behind
        try:
            env_id = store.add_env(env)
            run_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
            config = {"model": resolved.to_dict(), "schemes": [c.scheme for c in cells if c.role == "measure"],
                      "baseline": cells[0].scheme, "device": device, "runtime": self.runtime,
                      "workload": vars(self.workload), "repetitions": asdict(self.repetitions),
                      "prompt": prompt, "seed": self.seed, "force": self.force,
                      "margin": self.margin, "repeat_baseline": self.repeat_baseline,
                      "reuse_baseline": self.reuse_baseline,
                      "cell_timeout": self.cell_timeout, "notes": self.notes,
                      "files": self._planned_files(run_id)}
            store.begin_run(run_id, config, self.purpose, self.command, env_id)
            if self.progress:
                self.progress.start(len(cells), resolved, device)
            ok = failed = 0
            for position, cell in enumerate(cells):
                data = cell.to_dict()
                label = cell.scheme + (" (baseline, again)" if cell.role != "measure" else "")
                reusable = not self.force and cell.role == "measure" and cell.scheme not in fresh
                previous = store.find_measured(cell.cell_id) if reusable else None
                if previous:
                    store.link_cell(run_id, position, previous[0])
                    ok += 1
                    if self.progress:
                        self.progress.reused(label, previous[1])
                    continue
                if self.progress:
                    self.progress.cell_started(label)
                started = now()
                on_event = self.progress.event if self.progress else None
                result, wall = executor.run_cell(data, self.cell_timeout, on_event)
                store.add_cell(run_id, position, data, result, env_id, started, wall)
                ok += result["status"] == "ok"
                failed += result["status"] != "ok"
                if self.progress:
                    self.progress.cell_finished(label, result, wall)
            wall_s = time.perf_counter() - start
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
            store.close()
        return RunResult(run_id=run_id, db=str(self.db), records=records, files=files,
                         wall_s=wall_s, notes=self.notes)
