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
    warmup: int = 2
    runs: int = 10

    def validate(self) -> None:
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more, got {self.warmup!r}")
        if not isinstance(self.runs, int) or self.runs <= 0:
            raise UsageError(f"--runs must be a positive integer, got {self.runs!r}")


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
        return ident

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
        data["repetitions"] = Repetitions(**data["repetitions"])
        return cls(**data)


def stable_hash(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_scheme_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError("--schemes is empty: name at least one scheme (see `quantbench schemes`)")
    seen = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen
