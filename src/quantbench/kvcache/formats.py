"""KV-cache formats: how a runtime stores the keys and values every decode step reads.

At long context the cache, not the weights, is what a step reads most, and what grows with
every sequence of a batch. A format is chosen per scheme (`fp32:kv=int4`) or for every scheme of
a run (`--kv-cache auto,int4`); each runtime says which it can run:

- eager: transformers' quantized caches (KIVI-style: the last `residual` positions kept in full
  precision, older ones quantized in groups of `group` along the channels; optimum-quanto for
  int4/int2, HQQ for int8) and an fp8 e4m3 cache with one scale per layer's K and V;
- compiled: an fp8 e4m3 static cache (quantbench's, stored in fp8, multiplied in the compute
  dtype);
- llama.cpp: its own block types for K and V (`type_k`/`type_v`: q8_0, q4_0), which need its
  flash-attention path.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from quantbench.errors import UsageError


@dataclass(frozen=True)
class KVFormat:
    name: str
    bits: float | None  # nominal bits of one stored element; None: the runtime's own dtype
    description: str
    eager_backend: str | None = None  # transformers' QuantizedCache backend ("quanto", "hqq", "fp8")
    nbits: int | None = None
    ggml_type: str | None = None  # llama.cpp's type for K and V
    packages: tuple[tuple[str, str], ...] = ()  # (import name, distribution) the eager path needs
    # Group-wise integer caches: channels per scale/zero point, and full-precision positions kept.
    group: int = 64
    residual: int = 128

    @property
    def native(self) -> bool:
        return self.name == "auto"

    def settings(self, engine: str = "torch") -> dict:
        """What decides its results on `engine` ("torch" or "llama.cpp"): part of a cell's
        identity (absent for `auto`)."""
        out = {"format": self.name, "bits": self.bits}
        if engine == "llama.cpp":
            if self.ggml_type:
                out.update({"type_k": self.ggml_type, "type_v": self.ggml_type,
                            "flash_attn": True})
            return out
        if self.eager_backend in ("quanto", "hqq"):
            out.update({"backend": self.eager_backend, "group": self.group,
                        "residual": self.residual})
        elif self.eager_backend == "fp8":
            out.update({"float8": "e4m3fn", "scale": "one per layer's K and one per V, from the prefill"})
        return out

    def missing(self) -> list[str]:
        return [dist for module, dist in self.packages if importlib.util.find_spec(module) is None]


FORMATS: dict[str, KVFormat] = {f.name: f for f in (
    KVFormat("auto", None, "the runtime's own cache: the compute dtype (fp32 on a CPU, bf16 on a "
             "GPU), llama.cpp's f16"),
    KVFormat("fp8", 8, "float8 e4m3, one scale per layer's K and V (eager, compiled)",
             eager_backend="fp8"),
    KVFormat("int8", 8, "8-bit groups of 64 channels (HQQ; llama.cpp q8_0), the last 128 "
             "positions in full precision on eager", eager_backend="hqq", nbits=8,
             ggml_type="Q8_0", packages=(("hqq", "hqq"),)),
    KVFormat("int4", 4, "4-bit groups of 64 channels (optimum-quanto; llama.cpp q4_0), the last "
             "128 positions in full precision on eager", eager_backend="quanto", nbits=4,
             ggml_type="Q4_0", packages=(("optimum.quanto", "optimum-quanto"),)),
    KVFormat("int2", 2, "2-bit groups of 64 channels (optimum-quanto), the last 128 positions in "
             "full precision (eager)", eager_backend="quanto", nbits=2,
             packages=(("optimum.quanto", "optimum-quanto"),)),
)}

# Bytes of one element in llama.cpp's block types: a block of 32 values and an fp16 scale.
GGML_ELEMENT_BYTES = {"F16": 2.0, "Q8_0": 34 / 32, "Q4_0": 18 / 32}

# Positions a quantized eager cache is fed per step when quality is scored through it: tokens
# of one step see each other exactly, as the newest positions of a decode do (its residual).
EVAL_CHUNK = 16


def get(name: str) -> KVFormat:
    try:
        return FORMATS[str(name).strip().lower()]
    except KeyError:
        raise UsageError(f"unknown KV-cache format '{name}': choose one of "
                         f"{', '.join(FORMATS)}") from None


def check_runtime(fmt: KVFormat, runtime, scheme_name: str) -> None:
    """A clear refusal when a runtime cannot run the format, or its library is missing."""
    if fmt.name not in runtime.kv_formats:
        can = ", ".join(runtime.kv_formats)
        raise UsageError(f"'{scheme_name}': the {runtime.name} runtime has no {fmt.name} KV "
                         f"cache (it runs: {can}); "
                         + ("GGUF schemes run llama.cpp's int8/int4 caches" if
                            runtime.name == "llama.cpp" else
                            "--runtime eager runs every format"))
    missing = fmt.missing() if runtime.name == "eager" else []
    if missing:
        raise UsageError(f"'{scheme_name}': the {fmt.name} KV cache needs "
                         f"{', '.join(missing)}: pip install {' '.join(missing)}")
