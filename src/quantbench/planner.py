"""From a RunConfig (and a sweep file's groups and exclude rules) to comparisons and cells.

A comparison is one point of the axes' product — model x runtime x batch x prompt x new tokens
x device — with its schemes measured against its own baseline: the reference scheme at the same
model, workload, runtime and device. Its cells run in order on one device (the baseline first,
then each scheme, then the baseline again), so that everything it compares shares a card.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from quantbench import models, prompts, runtimes
from quantbench.config import CellConfig, Repetitions, Workload, stable_hash
from quantbench.errors import UsageError
from quantbench.quality.plan import QualitySettings
from quantbench.runconfig import AXES, RunConfig, flag_of
from quantbench.schemes import get as get_scheme

# Preferred order per slot of the default comparison; the first available scheme is taken.
# On a CPU: the strongest installed option of each kind at 8 and 4 bits, so that a newcomer's
# first table shows what quantizing buys there, not only its weakest method
# (docs/results/2026-11-29-calibrated-int4.md): torch int8; bitsandbytes' NF4 (4.5 bits stored;
# torchao's round-to-nearest int4 keeps 4-bit values in int8 bytes on a CPU, 8.6 bits, and drifts
# most); AWQ's calibrated int4 (HQQ where torchao is missing); llama.cpp's Q8_0 and Q4_K_M when
# llama-cpp-python is installed (timed against llama.cpp's own F32, like with like). No bf16:
# on a CPU it runs slower than fp32 and nobody deploys it there. Eight cells with llama.cpp: 8 min
# 24 s on 2 cores (benchmarks/README.md).
DEFAULT_SLOTS = {
    "cpu": [["fp32"], ["torchao-int8wo", "bnb-int8"], ["bnb-nf4"], ["awq-int4", "hqq-int4"],
            ["gguf-q8_0"], ["gguf-q4_k_m"]],
    "cuda": [["bf16"], ["fp16"], ["torchao-int8wo", "bnb-int8"], ["torchao-int4wo", "bnb-nf4"]],
}


@dataclass
class Point:
    """One point of the axes' product, with the schemes to compare there."""

    model: str
    runtime: str
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    device: str
    schemes: list[str] | None
    baseline: str | None
    groups: list[str] = field(default_factory=list)
    drop_schemes: set[str] = field(default_factory=set)  # taken out by exclude rules

    def label(self) -> str:
        return (f"{self.model} · {self.runtime} · batch {self.batch_size} · "
                f"{self.prompt_tokens}+{self.new_tokens} · {self.device}")


@dataclass
class Comparison:
    key: str  # stable: the same point of the same plan gets the same key
    label: str
    device: str  # as the cells name it (cuda for a pool of identical GPUs)
    lanes: list[str]  # the devices that may measure it
    baseline: str
    cells: list[CellConfig]
    groups: list[str]


def points(config: RunConfig, groups: dict | None = None, exclude: list | None = None) -> list[Point]:
    """Every point, in order: each group's product (or the config's own), less the excluded,
    the same point twice measured once (its schemes merged)."""
    plans = groups or {None: {}}
    found: dict[tuple, Point] = {}
    for name, overrides in plans.items():
        axes = {a: overrides.get(a, getattr(config.axes, a)) for a in AXES}
        schemes = overrides.get("schemes", config.axes.schemes)
        baseline = overrides.get("baseline", config.comparing.baseline)
        for values in itertools.product(*(axes[a] for a in AXES)):
            point = dict(zip(AXES, values))
            drop = _excluded(point, exclude or [])
            if drop is True:
                continue
            key = tuple(point.values())
            if key in found:
                known = found[key]
                if name and name not in known.groups:
                    known.groups.append(name)
                if schemes and known.schemes is not None:
                    known.schemes += [s for s in schemes if s not in known.schemes]
                continue
            found[key] = Point(**point, schemes=list(schemes) if schemes else None,
                               baseline=baseline, groups=[name] if name else [],
                               drop_schemes=drop or set())
    return list(found.values())


def _excluded(point: dict, rules: list) -> set | bool:
    """True when a rule without `schemes` matches the point; else the schemes rules drop."""
    drop: set = set()
    for rule in rules:
        match = all(point[k] in v for k, v in rule.items() if k != "schemes")
        if not match:
            continue
        if "schemes" not in rule:
            return True
        drop |= set(rule["schemes"])
    return drop


class Planner:
    """Builds the comparisons of a run; notes collect what the run should say about them."""

    def __init__(self, config: RunConfig, notes: list[str], on_convert=None,
                 resolve_device=None):
        self.config = config
        self.resolve_device = resolve_device  # spec -> (device, capability, lanes)
        self.notes = notes
        self.on_convert = on_convert
        self._models: dict[str, models.ResolvedModel] = {}
        self._devices: dict[str, tuple] = {}
        self._tokenizers: dict = {}
        self._calibrations: dict = {}
        reps = config.repetitions
        runs = Repetitions.parse_runs(reps.runs)
        self.repetitions = Repetitions(
            warmup=reps.warmup, runs=runs,
            max_warmup=(max(reps.max_warmup, reps.warmup) if isinstance(reps.max_warmup, int)
                        and isinstance(reps.warmup, int) else reps.max_warmup),
            target_ci=reps.target_ci, max_runs=reps.max_runs, max_seconds=reps.max_seconds)
        q = config.quality
        self.quality_settings = QualitySettings(q.eval_text, q.eval_tokens, q.eval_context,
                                                q.eval_stride)

    def device(self, spec: str):
        from quantbench.devices import resolve_pool

        if spec not in self._devices:
            self._devices[spec] = (self.resolve_device or resolve_pool)(spec)
        return self._devices[spec]

    def model(self, spec: str):
        if spec not in self._models:
            if spec is not None and not str(spec).strip():
                raise UsageError("--model is empty (an unset shell variable?): pass default, "
                                 "random:<preset>, a local HF directory, a .gguf file or a hub id")
            self._models[spec] = models.resolve(spec, on_convert=self.on_convert,
                                                trust_remote_code=self.config.safety.trust_remote_code)
        return self._models[spec]

    def check_schemes(self, pts: list[Point]) -> None:
        """Scheme names and runtimes, before any model is resolved (cheap errors first)."""
        for point in pts:
            if point.runtime not in runtimes.selectable():
                raise UsageError(f"--runtime '{point.runtime}' is not available: choose one of "
                                 f"{', '.join(runtimes.selectable())}")
            for name in (point.schemes or []) + ([point.baseline] if point.baseline else []):
                get_scheme(name.strip())

    def comparisons(self, pts: list[Point]) -> list[Comparison]:
        self.check_schemes(pts)
        out: dict[str, Comparison] = {}
        for point in pts:
            try:
                comparison = self._comparison(point)
            except UsageError as exc:
                if len(pts) == 1:
                    raise
                raise UsageError(f"at {point.label()}: {exc}") from None
            if comparison.key in out:  # two specs of one model or device: measured once
                continue
            out[comparison.key] = comparison
        return list(out.values())

    def _comparison(self, point: Point) -> Comparison:
        device, capability, lanes = self.device(point.device)
        device_type = device.split(":")[0]
        shipped = self.model(point.model)
        resolved = self._float_model(shipped)  # what the baseline and the schemes run on
        workload = Workload(point.batch_size, point.prompt_tokens, point.new_tokens)
        workload.validate(resolved.max_context)
        names, baseline = self._pick_schemes(point, device_type, capability)
        shipped_as_is = [n for n in names if (get_scheme(n).base or n) == "checkpoint"]
        if shipped is not resolved and not shipped_as_is:
            # Without --schemes: the checkpoint against the baseline alone, not the default set.
            names = ((names if point.schemes else names[:1])
                     + self._with_kv_formats(["checkpoint"], baseline, point.runtime))
        if shipped is resolved and shipped_as_is:
            raise UsageError(f"scheme 'checkpoint' runs a pre-quantized --model as shipped, and "
                             f"'{shipped.spec}' has no quantization_config in its config.json")
        for name in names:
            runtimes.for_scheme(get_scheme(name), point.runtime).check_workload(workload, name)
            scheme = get_scheme(name)
            runtimes.for_scheme(scheme, point.runtime).check_kv(scheme)
            if (scheme.base == "gguf-file" or name == "gguf-file") and not resolved.source_gguf:
                raise UsageError("scheme 'gguf-file' runs a .gguf --model as it is, and "
                                 f"'{resolved.spec}' is not one: use gguf-q8_0, gguf-q4_k_m, ...")
        prompt, quality, lm_eval = self._inputs(resolved, workload, baseline, device)
        from quantbench.devices import _device_name

        device_name = _device_name(device)
        models_of = [resolved.fingerprint] + ([shipped.fingerprint] if shipped is not resolved
                                              else [])
        key = stable_hash([*models_of, point.runtime, vars(workload), device])[:12]
        extra = {"comparison": key}
        if point.groups:
            extra["groups"] = point.groups
        cells = [CellConfig(model=(shipped if (get_scheme(name).base or name) == "checkpoint"
                                   else resolved).to_dict(),
                            scheme=name,
                            scheme_settings=get_scheme(name).settings(device_type),
                            runtime=get_scheme(name).runtime or point.runtime, device=device,
                            workload=workload, repetitions=self.repetitions, prompt=prompt,
                            seed=self.config.comparing.seed, baseline=(name == baseline),
                            extra={**extra, **self._speed_reference(name, names, point.runtime)},
                            quality=quality, lm_eval=lm_eval, device_name=device_name,
                            calibration=self._calibration(resolved, get_scheme(name)))
                 for name in names]
        label = (f"{resolved.name}{' vs ' + shipped.name if shipped is not resolved else ''}"
                 f" · {point.runtime} · batch {workload.batch_size} · "
                 f"{workload.prompt_tokens}+{workload.new_tokens} · {device}")
        return Comparison(key, label, device, lanes, baseline, cells, point.groups)

    def _float_model(self, shipped):
        """A pre-quantized --model's float counterpart (--baseline-model), its tokenizer checked
        against the checkpoint's; any other model is its own."""
        spec = self.config.comparing.baseline_model
        if not shipped.quantized_as:
            if spec:
                raise UsageError(f"--baseline-model is for a pre-quantized --model, and "
                                 f"'{shipped.spec}' has no quantization_config in its "
                                 "config.json: drop --baseline-model")
            return shipped
        if not spec:
            raise UsageError(f"'{shipped.spec}' is a pre-quantized checkpoint ({shipped.quantized_as}):"
                             " measure it against the float model it came from with "
                             "--baseline-model SPEC (e.g. --baseline-model default)")
        base = self.model(spec)
        if base.quantized_as:
            raise UsageError(f"--baseline-model '{spec}' is itself quantized "
                             f"({base.quantized_as}): pass the float model")
        self._check_tokenizers(shipped, base)
        return base

    def _check_tokenizers(self, shipped, base) -> None:
        """Every cell of a comparison reads the same token ids: the checkpoint must tokenize
        as its baseline does."""
        if shipped.vocab_size != base.vocab_size:
            raise UsageError(f"--baseline-model '{base.spec}' has {base.vocab_size} tokens, the "
                             f"checkpoint {shipped.vocab_size}: pass the float model the "
                             "checkpoint was made from")
        if base.random_weights:
            return
        one, other = self._tokenizer(shipped), self._tokenizer(base)
        if (one.get_vocab() != other.get_vocab()
                or one.all_special_tokens != other.all_special_tokens):
            raise UsageError(f"the tokenizers of '{shipped.spec}' and --baseline-model "
                             f"'{base.spec}' differ: the same prompts would be different tokens; "
                             "pass the float model the checkpoint was made from")

    def _inputs(self, resolved, workload: Workload, baseline: str, device: str):
        """The prompt ids, the quality plan and the lm-eval plan of one comparison."""
        q = self.config.quality
        quality = lm_eval = None
        if resolved.random_weights:
            if q.lm_eval_tasks:
                raise UsageError(f"--lm-eval-tasks on '{resolved.spec}': random weights have no "
                                 "quality to measure; use a real model")
            if q.quality:
                raise UsageError(f"--quality on '{resolved.spec}': random weights have no "
                                 "quality to measure; use a real model, or drop --quality")
            note = "quality not measured: random weights are for speed and memory only"
            if q.quality is None and note not in self.notes:
                self.notes.append(note)
            prompt = prompts.random_prompts(resolved.vocab_size, workload.batch_size,
                                            workload.prompt_tokens, self.config.comparing.seed)
            return prompt, None, None
        tokenizer = self._tokenizer(resolved)
        path = prompts.corpus_path(self.config.comparing.prompt_file)
        prompt = prompts.corpus_prompts(tokenizer, path, workload.batch_size, workload.prompt_tokens)
        if q.quality is not False:
            quality = self._quality_plan(tokenizer, resolved, baseline, device)
        if q.lm_eval_tasks:
            from quantbench.quality import lm_eval_tasks

            lm_eval = lm_eval_tasks.plan(q.lm_eval_tasks, q.lm_eval_include, q.lm_eval_limit)
        return prompt, quality, lm_eval

    def _calibration(self, resolved, scheme) -> dict | None:
        """The calibration ids of a calibrated scheme's cell, the same for every cell that asks
        for as many: from a part of the corpus the prompts and perplexity never read."""
        if not scheme.calibrated:
            return None
        from quantbench.calibration import data

        key = (resolved.spec, scheme.samples, scheme.length)
        if key not in self._calibrations:
            tokenizer = None if resolved.random_weights else self._tokenizer(resolved)
            self._calibrations[key] = data.for_model(resolved, tokenizer, scheme.samples,
                                                     scheme.length)
        return self._calibrations[key]

    def _tokenizer(self, resolved):
        if resolved.spec not in self._tokenizers:
            self._tokenizers[resolved.spec] = models.load_tokenizer(resolved)
        return self._tokenizers[resolved.spec]

    def _quality_plan(self, tokenizer, resolved, baseline: str, device: str) -> dict:
        from quantbench.quality import cache, plan

        device_type = device.split(":")[0]
        self.quality_settings.validate(resolved.max_context)
        built = plan.build(tokenizer, self.quality_settings)
        identity = plan.identity(built, baseline, get_scheme(baseline).settings(device_type))
        ctx = cache.context(device)
        seed = self.config.comparing.seed
        return {"plan": built, "identity": identity, "baseline": baseline, "cache_context": ctx,
                "cache_key": cache.key(resolved.fingerprint, identity, device_type, seed, ctx)}

    def _pick_schemes(self, point: Point, device_type: str, capability) -> tuple[list[str], str]:
        # Canonical names ("bnb-int8:threshold=0.0"), so one scheme is one identity however typed.
        names = None
        if point.schemes:
            names = []
            for typed in point.schemes:
                name = get_scheme(typed).name
                if name in names:
                    note = f"'{typed}' is listed twice in --schemes: measured once"
                    if note not in self.notes:
                        self.notes.append(note)
                else:
                    names.append(name)
        if names is None:
            names = []
            for slot in DEFAULT_SLOTS[device_type]:
                usable = [n for n in slot if get_scheme(n).availability(device_type, capability)[0]]
                if usable:
                    names.append(usable[0])
                else:
                    note = (f"skipped the {'/'.join(slot)} slot: "
                            + get_scheme(slot[0]).availability(device_type, capability)[1])
                    if note not in self.notes:
                        self.notes.append(note)
        baseline_spec = point.baseline
        baseline = get_scheme(baseline_spec.strip()).name if baseline_spec else names[0]
        if point.schemes and baseline not in names:
            raise UsageError(f"--baseline {baseline_spec} is not one of --schemes "
                             f"({', '.join(names)}): add it to --schemes, or pick one of them")
        dropped = {get_scheme(s).name for s in point.drop_schemes} - {baseline}
        names = [n for n in names if n not in dropped]
        if baseline in names:
            names.remove(baseline)
        names.insert(0, baseline)
        names = self._with_kv_formats(names, baseline, point.runtime)
        names = self._with_runtime_references(names, device_type, point.runtime)
        for name in names:
            ok, why = get_scheme(name).availability(device_type, capability)
            if not ok:
                raise UsageError(f"scheme '{name}' cannot run on {device_type} here: {why}")
        return names, baseline

    def _with_kv_formats(self, names: list[str], baseline: str, runtime: str) -> list[str]:
        """--kv-cache: each scheme once per format, in the same comparison; the baseline keeps
        its cache (the quality reference), schemes that name a format (`:kv=`) keep theirs."""
        formats = self.config.axes.kv_cache
        if not formats:
            return names
        from quantbench import kvcache

        formats = list(dict.fromkeys(kvcache.get(f).name for f in formats))
        out = []
        for name in names:
            if get_scheme(name).kv != "auto":
                out.append(name)
                continue
            if name == baseline:
                out.append(name)
            engine = runtimes.for_scheme(get_scheme(name), runtime)
            for f in formats:
                if f not in engine.kv_formats:
                    note = (f"{name} runs on {engine.name}, which has no {f} KV cache: "
                            f"{name}:kv={f} not measured")
                    if note not in self.notes:
                        self.notes.append(note)
                    continue
                out.append(get_scheme(f"{name}:kv={f}").name)
        if "auto" not in formats:
            note = (f"the baseline {baseline} keeps its own KV cache (the reference the other "
                    "formats are measured against)")
            if note not in self.notes:
                self.notes.append(note)
        return list(dict.fromkeys(out))

    def _with_runtime_references(self, names: list[str], device_type: str, runtime: str) -> list[str]:
        """Schemes with their own engine (GGUF: llama.cpp) are timed against that engine's
        full-precision run, never against torch: add that run when it is missing and put it
        first among its engine's schemes."""
        base_runtime = get_scheme(names[0]).runtime or runtime
        out = list(names)
        for own in dict.fromkeys(get_scheme(n).runtime for n in names):
            if own is None or own == base_runtime:
                continue
            group = [n for n in out if get_scheme(n).runtime == own]
            refs = [n for n in group if get_scheme(n).reference]
            if not refs:
                ref = runtimes.get(own).reference_scheme(device_type)
                note = (f"added {ref}: {own} schemes are timed against {own}'s own "
                        "full-precision run of the same model (like with like)")
                if note not in self.notes:
                    self.notes.append(note)
                refs = [ref]
            first = out.index(group[0])
            out = [n for n in out if n not in refs]
            out[first:first] = refs
        return out

    @staticmethod
    def _speed_reference(name: str, names: list[str], runtime: str) -> dict:
        own = get_scheme(name).runtime
        if own is None or own == (get_scheme(names[0]).runtime or runtime):
            return {}
        ref = next(n for n in names if get_scheme(n).runtime == own and get_scheme(n).reference)
        return {"speed_reference": ref}


def validate_static(config: RunConfig) -> None:
    """Checks that need no model, device or file: bad input is refused before anything runs."""
    c, q, s = config.comparing, config.quality, config.safety
    if c.baseline is not None and not str(c.baseline).strip():
        raise UsageError("--baseline is empty (an unset shell variable?): name a scheme, or "
                         "leave it out to take the first of --schemes")
    if config.axes.kv_cache:
        from quantbench import kvcache

        for name in config.axes.kv_cache:
            kvcache.get(name)
    for name in ("runtime", "model", "device"):
        if not getattr(config.axes, name):
            raise UsageError(f"{flag_of(name)} is empty: give at least one value")
    if c.force and c.reuse_baseline:
        raise UsageError("--force measures every cell again and --reuse-baseline takes the "
                         "baseline from an earlier run: pass one of them")
    if not q.lm_eval_tasks and any(v is not None for v in (q.lm_eval_include, q.lm_eval_limit)):
        raise UsageError("--lm-eval-include and --lm-eval-limit apply to --lm-eval-tasks: "
                         "name the tasks too, or drop them")
    if q.quality is False and q.eval_text:
        raise UsageError("--eval-text is for quality, which --no-quality turns off: drop one")
    # Missing text files are refused here, before a model is resolved: resolving the bundled
    # model converts it on first use, a minute of work a typo would otherwise cost.
    if c.prompt_file:
        prompts.corpus_path(c.prompt_file)
    if q.eval_text and not Path(q.eval_text).expanduser().is_file():
        raise UsageError(f"--eval-text '{q.eval_text}' does not exist: pass a text file")
    for b, p, n in itertools.product(config.axes.batch_size, config.axes.prompt_tokens,
                                     config.axes.new_tokens):
        Workload(b, p, n).validate()
    if not 0 <= c.margin < 1:
        raise UsageError(f"--margin is a fraction (0.02 = 2%), got {c.margin!r}")
    if s.cell_timeout is not None and s.cell_timeout <= 0:
        raise UsageError(f"--cell-timeout must be positive, got {s.cell_timeout}")
    if s.allow_shared and s.wait:
        raise UsageError("--wait queues behind a run that holds the device and "
                         "--allow-shared measures beside it: pass one of them")

