"""The scheme registry. A new scheme is one new module in this package that calls `register`."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
from dataclasses import dataclass, field

from quantbench.errors import UsageError

_SCHEMES: dict[str, "Scheme"] = {}
_LOADED = False

DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class Scheme:
    """How weights are stored and multiplied. Subclasses override `apply`."""

    name: str
    backend: str  # the library family, e.g. "torch", "torchao", "bitsandbytes"
    bits: float  # nominal bits per (quantized) weight, before scales
    devices: tuple[str, ...]  # device types it runs on: "cpu", "cuda"
    packages: tuple[tuple[str, str], ...] = ()  # (import name, distribution name)
    extra: str | None = None  # pip extra that installs the packages
    description: str = ""
    min_capability: tuple[int, int] | None = None
    # Quantizers that convert on a device move (bitsandbytes) want the float model on the CPU.
    build_on_cpu: bool = False
    skip_modules: tuple[str, ...] = field(default=("lm_head",))
    # Fields a user may set as `name:key=value[:key=value]`; they are part of the cell identity.
    tunable: tuple[str, ...] = ()
    base: str = ""  # the registered name, when `name` carries settings
    # A scheme tied to its own engine (GGUF: llama.cpp) names it; None runs under --runtime.
    runtime: str | None = None
    # Quantize the output head too (`name:quantize_head=true`, where `tunable` offers it): the
    # head is the largest single matrix of a small model and read whole every step.
    quantize_head: bool = False
    # The dtype the matrix multiplies run in, where it differs from the compute dtype (int8 or
    # float8 dynamic activations): it picks the compute ceiling a cell's prefill is held to.
    matmul_dtype: str | None = None
    # The KV-cache format its cells decode with (quantbench.kvcache): settable on every scheme as
    # `name:kv=int4`, or for all schemes of a run with --kv-cache.
    kv: str = "auto"

    @property
    def reference(self) -> bool:
        """Whether this is the full-precision run of its runtime, other schemes' speed yardstick."""
        return self.bits >= 16 and self.kv == "auto"

    def compute_dtype(self, device_type: str) -> str:
        """The float dtype the model is loaded in and activations run at."""
        return "float32" if device_type == "cpu" else "bfloat16"

    def matmul_kind(self, device_type: str) -> str:
        return self.matmul_dtype or self.compute_dtype(device_type)

    def skipped(self) -> tuple[str, ...]:
        """The modules left in float: skip_modules, less the head when quantize_head is set."""
        return tuple(m for m in self.skip_modules if not (self.quantize_head and m == "lm_head"))

    def settings(self, device_type: str) -> dict:
        """Everything that changes results; part of a cell's identity."""
        out = {"compute_dtype": self.compute_dtype(device_type),
               "skip_modules": list(self.skipped()) if self.bits < 16 else []}
        if "quantize_head" in self.tunable:
            out["quantize_head"] = self.quantize_head
        out.update({key: getattr(self, key) for key in self.tunable if key != "quantize_head"})
        return self.with_kv(out)

    def with_kv(self, settings: dict) -> dict:
        """Settings plus the KV-cache format, when it is not the runtime's own (so cells of the
        default cache keep their identity)."""
        if self.kv == "auto":
            return settings
        from quantbench import kvcache

        return {**settings, "kv_cache": kvcache.get(self.kv).settings(self.runtime or "torch")}

    # Whether a runtime may fuse sibling projections (q/k/v, gate/up) before `quantize`: true
    # for schemes whose scales are per output row or per group along the input, where the
    # concatenation quantizes as its parts would. Calibrated and as-shipped schemes keep theirs.
    fusable: bool = True

    # Calibrated schemes (GPTQ, AWQ) need activations: the planner builds calibration ids for
    # their cells, and `quantize` receives them.
    calibrated: bool = False

    def apply(self, model, device: str):
        return model

    def quantize(self, model, device: str, calibration: dict | None, info: dict, progress=None):
        """Quantize `model` for `device`; what the method did worth keeping goes into `info`
        (the record's info.calibration), how far it is into `progress(i, n)`. Uncalibrated
        schemes just `apply`."""
        return self.apply(model, device)

    def validate(self) -> None:
        """Raise UsageError for settings the backend would reject."""

    def versions(self) -> dict[str, str]:
        out = {}
        for _, dist in self.packages:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
        return out

    def availability(self, device_type: str, capability: tuple[int, int] | None = None
                     ) -> tuple[bool, str]:
        """(can it run here, why not + what to do)."""
        missing = [dist for module, dist in self.packages if importlib.util.find_spec(module) is None]
        if missing:
            how = f"pip install 'quantbench[{self.extra}]'" if self.extra else "pip install " + " ".join(missing)
            return False, f"needs {', '.join(missing)}: {how}"
        if device_type not in self.devices:
            return False, f"runs on {'/'.join(self.devices)} only, not {device_type}"
        if device_type == "cuda" and self.min_capability and capability and capability < self.min_capability:
            need = ".".join(map(str, self.min_capability))
            have = ".".join(map(str, capability))
            return False, f"needs a GPU of compute capability >= {need} (this one is {have})"
        return True, ""


def register(scheme: Scheme) -> Scheme:
    if scheme.name in _SCHEMES:
        raise ValueError(f"scheme {scheme.name!r} registered twice")
    _SCHEMES[scheme.name] = scheme
    return scheme


def _load_plugins() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    package = importlib.import_module("quantbench.schemes")
    # The plain dtypes first: they are the baselines, and listings read best in that order.
    names = sorted((m.name for m in pkgutil.iter_modules(package.__path__)),
                   key=lambda name: (name != "torch_dtypes", name))
    for name in names:
        if name != "registry":
            importlib.import_module(f"quantbench.schemes.{name}")
    # Schemes of your own, without editing quantbench: QUANTBENCH_PLUGINS=mod_a,mod_b (importable
    # modules that call `register`). Workers inherit the variable, so they see the same schemes.
    for module in filter(None, os.environ.get("QUANTBENCH_PLUGINS", "").split(",")):
        try:
            importlib.import_module(module.strip())
        except ImportError as exc:
            raise UsageError(f"QUANTBENCH_PLUGINS names '{module}', which cannot be imported "
                             f"({exc}): fix the variable or PYTHONPATH") from None


def all_schemes() -> list[Scheme]:
    _load_plugins()
    return list(_SCHEMES.values())


def get(spec: str) -> Scheme:
    """A registered scheme, or one with settings: `bnb-int8:threshold=0`, `bnb-nf4:double_quant=true`."""
    _load_plugins()
    name, *assignments = spec.split(":")
    if name not in _SCHEMES:
        by_lower = {n.lower(): n for n in _SCHEMES}
        close = ([by_lower[name.lower()]] if name.lower() in by_lower else
                 [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), n=3)])
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"unknown scheme '{name}'{hint}: `quantbench schemes` lists them")
    scheme = _SCHEMES[name]
    if not assignments:
        return scheme
    overrides = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or key not in scheme.tunable + ("kv",):
            settable = ", ".join(scheme.tunable + ("kv",))
            raise UsageError(f"'{spec}': {name} has no setting '{key or assignment}' "
                             f"(settable: {settable}); write name:key=value")
        overrides[key] = _parse(spec, key, text, getattr(scheme, key))
        if key == "kv":
            from quantbench import kvcache

            overrides[key] = kvcache.get(text).name
    if overrides.get("kv") == "auto":  # the default, typed out: the same scheme
        del overrides["kv"]
        if not overrides:
            return scheme
    canonical = name + "".join(f":{k}={_show(v)}" for k, v in sorted(overrides.items()))
    tuned = dataclasses.replace(scheme, name=canonical, base=name, **overrides)
    tuned.validate()
    return tuned


def _parse(spec: str, key: str, text: str, default):
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = type(default).__name__
        raise UsageError(f"'{spec}': {key} must be a {kind}, got '{text}'") from None
    return text


def _show(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)
