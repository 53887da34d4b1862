"""What a run asks for, validated, and its expansion into cells with stable identities."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from quantbench.errors import UsageError


@dataclass(frozen=True)
class Workload:
    batch_size: int = 1
    prompt_tokens: int = 128
    new_tokens: int = 64

    def validate(self, max_context: int | None = None) -> None:
        for name in ("batch_size", "prompt_tokens", "new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be a positive integer, got {value!r}")
        if max_context is not None and self.prompt_tokens + self.new_tokens > max_context:
            raise UsageError(
                f"--prompt-tokens {self.prompt_tokens} + --new-tokens {self.new_tokens} = "
                f"{self.prompt_tokens + self.new_tokens} exceeds the model's context of "
                f"{max_context} tokens: lower one of them"
            )


@dataclass(frozen=True)
class Repetitions:
    """How often a cell generates: warm-ups until steady, then timed runs until the median's
    interval is tight enough (runs="auto") or a fixed count."""

    warmup: int = 2  # the least number of warm-ups; more follow until the rate is steady
    runs: int | str = "auto"  # a count, or "auto": stop on target_ci / max_runs / max_seconds
    max_warmup: int = 10
    target_ci: float = 0.01  # relative half-width of the median's 95% interval
    min_runs: int = 5
    max_runs: int = 100
    min_seconds: float = 1.0  # timed seconds before an adaptive run may stop
    max_seconds: float = 30.0  # timed seconds after which an adaptive run stops anyway

    @property
    def adaptive(self) -> bool:
        return self.runs == "auto"

    def validate(self) -> None:
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more, got {self.warmup!r}")
        if not isinstance(self.max_warmup, int) or self.max_warmup < self.warmup:
            raise UsageError(f"--max-warmup must be at least --warmup ({self.warmup}), "
                             f"got {self.max_warmup!r}")
        if not self.adaptive and (not isinstance(self.runs, int) or isinstance(self.runs, bool)
                                  or self.runs <= 0):
            raise UsageError(f"--runs must be a positive integer or 'auto', got {self.runs!r}")
        if not 0 < self.target_ci < 1:
            raise UsageError(f"--target-ci is a fraction of the median (0.01 = 1%), got "
                             f"{self.target_ci!r}")
        if not isinstance(self.max_runs, int) or self.max_runs < self.min_runs:
            raise UsageError(f"--max-runs must be at least {self.min_runs}, got {self.max_runs!r}")
        if not self.max_seconds > 0:
            raise UsageError(f"--max-seconds must be positive, got {self.max_seconds!r}")

    @classmethod
    def parse_runs(cls, text) -> int | str:
        """'auto' or a positive count, from the command line."""
        value = str(text).strip().lower()
        if value == "auto":
            return "auto"
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"--runs must be a positive integer or 'auto', got {text!r}") from None

    def describe(self) -> str:
        if self.adaptive:
            return (f"{self.warmup}+ warm-up (until steady, at most {self.max_warmup}) + adaptive "
                    f"timed runs (until the median's 95% CI is within ±{self.target_ci:.1%}; "
                    f"{self.min_runs}-{self.max_runs} runs, at most {self.max_seconds:g} s)")
        return (f"{self.warmup}+ warm-up (until steady, at most {self.max_warmup}) + "
                f"{self.runs} timed runs")


def repetitions_text(reps: dict) -> str:
    """The description of a stored repetitions dict, older ones (warmup, runs) included."""
    known = {k: v for k, v in reps.items() if k in Repetitions.__dataclass_fields__}
    if set(known) == {"warmup", "runs"}:  # recorded before warm-ups became adaptive
        return f"{reps['warmup']} warm-up + {reps['runs']} timed runs"
    return Repetitions(**known).describe()


@dataclass
class CellConfig:
    """One (model, scheme, runtime, workload, device) point: everything a worker needs."""

    model: dict  # resolved ModelSpec (see models.ResolvedModel.to_dict)
    scheme: str
    scheme_settings: dict
    runtime: str
    device: str
    workload: Workload
    repetitions: Repetitions
    prompt: dict  # {"source": ..., "sha256": ..., "ids": [[...], ...]}
    seed: int = 0
    baseline: bool = False
    extra: dict = field(default_factory=dict)
    # {"plan": quality.plan.build(...), "identity": ..., "baseline": scheme, "cache_key": ...}
    quality: dict | None = None
    lm_eval: dict | None = None  # {"tasks": [...], "include": DIR, "limit": N}
    device_name: str | None = None  # the GPU's name: cuda:0 is a different card on each machine
    # What it is measured with (environment.fingerprint): host, CPU or GPU model, driver,
    # CUDA, library versions, quantbench version and commit. Part of the identity, so that a
    # measurement is reused only on the environment it was made on.
    environment: dict | None = None
    # Token ids a calibrated scheme (GPTQ, AWQ) learns from, with their provenance
    # (calibration.data); None for every other scheme.
    calibration: dict | None = None

    def identity(self) -> dict:
        """The fields that decide what is measured; their hash keys results in the store."""
        ident = {
            "model": self.model["fingerprint"],
            "scheme": self.scheme,
            "scheme_settings": self.scheme_settings,
            "runtime": self.runtime,
            "device": self.device,
            "workload": asdict(self.workload),
            "repetitions": asdict(self.repetitions),
            "prompt": {"source": self.prompt["source"], "sha256": self.prompt["sha256"]},
            "seed": self.seed,
        }
        if self.quality:  # absent when quality is off, so such cells keep their old identity
            ident["quality"] = self.quality["identity"]
        if self.lm_eval:
            ident["lm_eval"] = self.lm_eval
        if self.device_name:  # absent on the CPU, so CPU cells keep their identity
            ident["device_name"] = self.device_name
        if self.environment:
            ident["environment"] = self.environment
        if self.calibration:
            from quantbench.calibration.data import identity

            ident["calibration"] = identity(self.calibration)
        return ident

    @property
    def role(self) -> str:
        """"measure", or "baseline-repeat": the baseline measured again at the end of a run."""
        return self.extra.get("role", "measure")

    @property
    def cell_id(self) -> str:
        return stable_hash(self.identity())[:16]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["cell_id"] = self.cell_id
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "CellConfig":
        data = dict(data)
        data.pop("cell_id", None)
        data["workload"] = Workload(**data["workload"])
        reps = {k: v for k, v in data["repetitions"].items() if k in Repetitions.__dataclass_fields__}
        data["repetitions"] = Repetitions(**reps)
        return cls(**data)


def stable_hash(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_name_list(value, option: str = "--schemes") -> list[str] | None:
    """Names from a comma string ("fp32,bf16") or a list of them, stripped, in order. Empty
    names (",,", a trailing comma, a blank entry) are errors: they are typos, not choices."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            raise UsageError(f"{option} takes names (strings), got {value!r}")
        parts = [p for v in value for p in v.split(",")]
    else:
        raise UsageError(f"{option} takes a comma-separated string or a list of names, got "
                         f"{type(value).__name__}")
    names = [p.strip() for p in parts]
    if not any(names):
        raise UsageError(f"{option} is empty: name at least one (an unset shell variable?)")
    if not all(names):
        raise UsageError(f"{option} {value if isinstance(value, str) else ','.join(value)!r} has "
                         "an empty name (two commas in a row, or one at an end): remove it")
    return names


def parse_scheme_list(text) -> list[str] | None:
    return parse_name_list(text, "--schemes")


_SIZE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
               "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def parse_size(text, option: str = "--cell-memory-limit") -> int | None:
    """'12G', '800MiB', '1.5GB', a byte count, or 'none' (no limit) -> bytes or None."""
    import re

    value = str(text).strip().lower().replace(" ", "")
    if value in ("none", "off", "0"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", value)
    if not match or match.group(2) not in _SIZE_UNITS:
        raise UsageError(f"{option} {text!r} is not a size: write e.g. 8G, 800M, 12GiB or none")
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    if size < 64 * 2**20:
        raise UsageError(f"{option} {text!r} is below 64 MiB: no cell fits in it (Python and "
                         "torch alone take more)")
    return size


def size_text(size: int | None) -> str:
    return "none" if size is None else f"{size / 1e9:.1f} GB" if size >= 1e9 else \
        f"{size / 1e6:.0f} MB"
