"""RunConfig: everything a run or sweep asks for, defined once.

Each section is a small dataclass whose fields carry their help text in metadata. The same
definition makes the `quantbench run` options (cli_options.py), the keyword arguments and
`LLMBenchmark(config)` of the API, the keys of a sweep file (sweep.py), and the config the
store records with a run. A field's flat name (`batch_size`) is its key everywhere: `--batch-size`
on the command line, `batch_size:` (or `batch-size:`) in YAML, `batch_size=` in Python.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from quantbench.errors import UsageError

REPS = "Repetitions and statistics"
QUALITY = "Quality"
SAFETY = "Safety"
SWEEP = "Axes and execution"


def opt(default: Any, help: str, *, panel: str | None = None, short: str | None = None,
        flag: str | None = None, kind: str = "value", choices: tuple | None = None):
    """A RunConfig field. kind: value (one value), list (an axis: a comma list on the command
    line, a YAML list, a Python list), names (a list of names that is not an axis), flag (a
    boolean switch), tristate (--x/--no-x or unset)."""
    meta = {"help": help, "panel": panel, "short": short, "flag": flag, "kind": kind,
            "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Axes:
    """What is measured. Every field is a list; a run measures their product (less `exclude`
    rules in a sweep file), each point a comparison of its schemes against its baseline."""

    model: list[str] = opt(["default"], "default (the bundled SmolLM2-135M), random:<preset>, "
                           "a local HF directory, a .gguf file or a hub id; a comma list "
                           "measures each.", short="-m", kind="list")
    schemes: list[str] | None = opt(None, "Comma-separated schemes (see `quantbench schemes`). "
                                    "Default: the baseline, bf16 or fp16, an int8 and a 4-bit "
                                    "scheme available here.", short="-s", kind="names")
    runtime: list[str] = opt(["eager"], "eager: a plain decode loop (what most people run). "
                             "compiled: static KV cache, each decode step torch.compile'd and "
                             "replayed as one CUDA graph, so the hardware rather than Python sets "
                             "the pace; compile time is recorded apart. compiled-plain / "
                             "compiled-tuned: the same with less / more kernel tuning (shorter / "
                             "longer compiles). compiled-fused: q/k/v and gate/up fused into one "
                             "layer each before quantizing. compiled-qb: compiled-fused with "
                             "quantbench's Triton decode attention; compiled-qb-fold: with RoPE "
                             "and the KV-cache write inside that kernel too. GGUF schemes always "
                             "run on llama.cpp. A comma list measures each.",
                             kind="list")
    batch_size: list[int] = opt([1], "Sequences decoded together; a comma list (1,8,32) "
                                "measures each.", kind="list")
    prompt_tokens: list[int] = opt([128], "Prompt length in tokens (real corpus text; random "
                                   "ids for random-weight models); a comma list measures each.",
                                   kind="list")
    new_tokens: list[int] = opt([64], "Tokens generated per sequence; EOS is ignored so every "
                                "scheme generates exactly this many. A comma list measures each.",
                                kind="list")
    kv_cache: list[str] | None = opt(None, "KV-cache formats, a comma list: auto (the runtime's "
                                     "own), fp8, int8, int4, int2. Each scheme is measured with "
                                     "each (rows named scheme:kv=int4) in the same comparison; the "
                                     "baseline keeps auto, so quality shows what the cache costs. "
                                     "eager runs all, compiled auto/fp8, llama.cpp (GGUF) "
                                     "auto/int8/int4. Long --prompt-tokens and --eval-context show "
                                     "the effect.", kind="names")
    device: list[str] = opt(["auto"], "auto, cpu, cuda or cuda:N; a comma list measures each. "
                            "On a machine with several GPUs, cuda (or auto) spreads the "
                            "comparisons over all of them, one cell per GPU at a time.",
                            kind="list")


@dataclass
class Comparing:
    """What every scheme is held against, and how strictly."""

    baseline: str | None = opt(None, "Scheme every other is compared with; it must be one of "
                               "--schemes. Default: the first of --schemes; without --schemes, "
                               "fp32 on a CPU and bf16 on a GPU.")
    baseline_model: str | None = opt(None, "The float model a pre-quantized --model (a folder "
                                     "whose config.json has a quantization_config: GPTQ, AWQ, "
                                     "torchao, bitsandbytes, ... or one `quantbench quantize` "
                                     "wrote) is compared with: the baseline and any --schemes run "
                                     "on it, the checkpoint as shipped. Tokenizers must match.")
    margin: float = opt(0.02, "Practical-equivalence margin: a speedup whose ratio lies within "
                        "± this fraction (or within the baseline's own drift, when larger) is "
                        "reported as equivalent (~), not faster or slower.", panel=REPS)
    repeat_baseline: bool = opt(True, "Measure the baseline again after the other cells of its "
                                "comparison: its drift is the noise floor comparisons are held "
                                "to.", panel=REPS, kind="tristate")
    reuse_baseline: bool = opt(False, "Take the baseline from an earlier identical measurement "
                               "(same environment) instead of measuring it in this run.",
                               panel=REPS, kind="flag")
    force: bool = opt(False, "Measure cells again even if this database already holds an "
                      "identical measurement (same configuration and environment: host, device "
                      "model, driver, library versions, quantbench commit).", kind="flag")
    seed: int = opt(0, "Seed for random weights and random prompt ids.")
    prompt_file: str | None = opt(None, "Text to take prompts from (default: the Jargon File "
                                  "from Debian's jargon-text).")


@dataclass
class RepetitionOptions:
    """How often each cell generates (config.Repetitions is what a cell carries)."""

    warmup: int = opt(2, "The least number of untimed generations; more follow until the decode "
                      "rate is steady (no trend over the last 3), up to --max-warmup. The record "
                      "says how many it took.", panel=REPS)
    runs: str = opt("auto", "Timed generations per scheme: a number, or auto: at least 5 runs "
                    "and 1 s, then stop once the 95% interval of the median decode rate is "
                    "within --target-ci, or at --max-runs / --max-seconds (the record says "
                    "which).", panel=REPS)
    max_warmup: int = opt(10, "Most warm-ups before timing starts anyway (the cell is then "
                          "marked unsteady).", panel=REPS)
    target_ci: float = opt(0.01, "--runs auto stops when the median's 95% interval is within ± "
                           "this fraction of it.", panel=REPS)
    max_runs: int = opt(100, "--runs auto: at most this many timed runs.", panel=REPS)
    max_seconds: float = opt(30.0, "--runs auto: stop after this many timed seconds per cell.",
                             panel=REPS)


@dataclass
class QualityOptions:
    quality: bool | None = opt(None, "Measure quality against the baseline on the same tokens: "
                               "perplexity, KL, top-1 agreement, generations. Default: on for "
                               "real models, off for random weights.", panel=QUALITY,
                               kind="tristate")
    eval_text: str | None = opt(None, "Text for perplexity (default: the Jargon File, from "
                                "character 200,000).", panel=QUALITY)
    eval_tokens: int = opt(2048, "Tokens of evaluation text (token-level perplexity over all "
                           "but the first).", panel=QUALITY)
    eval_context: int = opt(512, "Window length for perplexity.", panel=QUALITY)
    eval_stride: int = opt(256, "Windows start every this many tokens; each token is scored "
                           "once, with at least context - stride tokens before it.", panel=QUALITY)
    lm_eval_tasks: list[str] | None = opt(None, "Comma-separated lm-evaluation-harness tasks run "
                                          "on each torch cell's model (needs "
                                          "quantbench\\[lm-eval]; offline: tasks of "
                                          "--lm-eval-include).", panel=QUALITY, kind="names")
    lm_eval_include: str | None = opt(None, "Folder of lm-eval task YAMLs; their data_files "
                                      "paths are relative to it.", panel=QUALITY)
    lm_eval_limit: int | None = opt(None, "At most this many documents per lm-eval task.",
                                    panel=QUALITY)


@dataclass
class Outputs:
    db: str = opt("quantbench.db", "SQLite results database (appended to).")
    out: str | None = opt("quantbench-results", "Folder for this run's JSON and CSV (named by "
                          "run id, never overwritten).")
    log: str | None = opt("experiments/LOG.md", "Markdown experiment log this run appends an "
                          "entry to ('' for none).")
    purpose: str | None = opt(None, "Why this run was made; kept with it.")


@dataclass
class Safety:
    cell_timeout: float | None = opt(None, "Seconds before a cell is killed and recorded as "
                                     "failed.", panel=SAFETY)
    allow_shared: bool = opt(False, "Measure even while another quantbench run holds this "
                             "device; every cell of this run is flagged as shared and never "
                             "reused as clean.", panel=SAFETY, kind="flag")
    wait: bool = opt(False, "If another run holds this device, wait for it to end instead of "
                     "refusing.", panel=SAFETY, kind="flag")
    cell_memory_limit: str | int | None = opt("auto", "Most memory one cell's process may use "
                                              "(e.g. 8G, 800M; none for no limit); a cell over it "
                                              "fails with 'out of memory' and the run goes on. "
                                              "auto: 90% of the memory available at the start.",
                                              panel=SAFETY)
    trust_remote_code: bool = opt(False, "Run the Python code a model folder ships (HF "
                                  "auto_map). Off: such models are refused. Recorded with the "
                                  "run.", panel=SAFETY, kind="flag")


@dataclass
class Execution:
    executor: str = opt("local", "local: one worker process per device, one cell per GPU at a "
                        "time (several GPUs measure in parallel). ray: each comparison a Ray "
                        "task with its GPU (or CPU) on an existing cluster (needs "
                        "quantbench\\[ray]); only this process writes the database.",
                        panel=SWEEP, choices=("local", "ray"))
    address: str | None = opt(None, "--executor ray: the cluster's address (default: "
                              "RAY_ADDRESS, or auto).", panel=SWEEP)
    dry_run: bool = opt(False, "Print the cells and an estimate of the time they take (from "
                        "earlier cells in the database), and measure nothing.", panel=SWEEP,
                        kind="flag")


SECTIONS = {"axes": Axes, "comparing": Comparing, "repetitions": RepetitionOptions,
            "quality": QualityOptions, "outputs": Outputs, "safety": Safety,
            "execution": Execution}


@dataclass
class RunConfig:
    axes: Axes = field(default_factory=Axes)
    comparing: Comparing = field(default_factory=Comparing)
    repetitions: RepetitionOptions = field(default_factory=RepetitionOptions)
    quality: QualityOptions = field(default_factory=QualityOptions)
    outputs: Outputs = field(default_factory=Outputs)
    safety: Safety = field(default_factory=Safety)
    execution: Execution = field(default_factory=Execution)

    @classmethod
    def from_flat(cls, values: dict, where=None) -> "RunConfig":
        """From flat keys (`batch_size=[1, 8]`); `where(key)` names a key's place (a file and
        line) in error messages."""
        config = cls()
        for key, value in values.items():
            section, f = FIELDS.get(key.replace("-", "_"), (None, None))
            if f is None:
                raise UsageError(f"{_at(where, key)}unknown setting '{key}'"
                                 + _suggest(key.replace("-", "_"), FIELDS))
            setattr(getattr(config, section), f.name, normalize(f, value, where, key))
        return config

    def flat(self) -> dict:
        """Every setting by its flat name: what the store records and `--dry-run` shows."""
        return {name: getattr(getattr(self, section), name)
                for name, (section, _) in FIELDS.items()}

    def replace(self, **values) -> "RunConfig":
        config = dataclasses.replace(self, **{s: dataclasses.replace(getattr(self, s))
                                              for s in SECTIONS})
        for key, value in values.items():
            section, f = FIELDS[key]
            setattr(getattr(config, section), key, normalize(f, value))
        return config


FIELDS: dict[str, tuple[str, dataclasses.Field]] = {
    f.name: (section, f) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
AXES = [f.name for f in dataclasses.fields(Axes) if f.metadata["kind"] == "list"]


def flag_of(name: str) -> str:
    meta = FIELDS[name][1].metadata
    return meta.get("flag") or "--" + name.replace("_", "-")


def normalize(f: dataclasses.Field, value, where=None, key=None):
    """A value as its field holds it: axes and name lists become lists (from a comma string, a
    scalar or a list), integers of integer axes are checked here, where the key is known."""
    from quantbench.config import parse_name_list

    kind = f.metadata["kind"]
    key = key or f.name
    if kind in ("list", "names"):
        if value is None:
            if kind == "names":
                return None
            raise UsageError(f"{_at(where, key)}{flag_of(f.name)} is empty: give at least one value")
        items = value if isinstance(value, (list, tuple)) else [value]
        want_int = f.name in ("batch_size", "prompt_tokens", "new_tokens")
        if want_int:
            out = []
            for item in items:
                parts = str(item).split(",") if isinstance(item, str) else [item]
                for part in parts:
                    out.append(_positive_int(part, f.name, where, key))
            if not out:
                raise UsageError(f"{_at(where, key)}{flag_of(f.name)} is empty: give at least one value")
            return out
        try:
            return parse_name_list([str(i) for i in items], flag_of(f.name))
        except UsageError as exc:
            raise UsageError(f"{_at(where, key)}{exc}") from None
    if kind in ("flag",) and not isinstance(value, bool):
        raise UsageError(f"{_at(where, key)}{flag_of(f.name)} is true or false, got {value!r}")
    if kind == "tristate" and value is not None and not isinstance(value, bool):
        raise UsageError(f"{_at(where, key)}{flag_of(f.name)} is true or false, got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise UsageError(f"{_at(where, key)}{flag_of(f.name)} '{value}' is not one of "
                         f"{', '.join(choices)}")
    return value


def _positive_int(value, name, where, key) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise UsageError(f"{_at(where, key)}{flag_of(name)} takes positive integers, got "
                         f"{value!r}") from None
    if number <= 0:
        raise UsageError(f"{_at(where, key)}{flag_of(name)} must be a positive integer, got "
                         f"{number}")
    return number


def _at(where, key) -> str:
    return f"{where(key)}: " if where else ""


def _suggest(name: str, known) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
