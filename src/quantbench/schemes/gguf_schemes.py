"""GGUF schemes, run by llama.cpp (llama-cpp-python).

quantbench exports the model to an F32 GGUF itself (quantbench.gguf_export), then llama.cpp's own
quantizer makes each type from that one file; both are cached. Their speed is compared with
llama.cpp's own F32/F16 run of the same model (like with like), their memory and quality with the
torch baseline.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from quantbench.schemes.registry import Scheme, register

LLAMA_CPP = (("llama_cpp", "llama-cpp-python"), ("gguf", "gguf"))


@dataclass(frozen=True)
class GGUFScheme(Scheme):
    ggml_type: str = "F32"  # llama.cpp's file type name: F32, F16, Q8_0, Q4_K_M, ...
    runtime: str = "llama.cpp"
    build_on_cpu: bool = True  # the export reads the float model on the CPU
    skip_modules: tuple = ()
    threads: int = 0  # 0: as many as torch uses (one per physical core), like the torch cells
    tunable: tuple = ("threads",)

    @property
    def reference(self) -> bool:
        """A full-precision llama.cpp run: what the other GGUF schemes are compared with for speed."""
        return self.ggml_type in ("F32", "F16") and self.kv == "auto"

    def settings(self, device_type):
        return self.with_kv({
            "ggml_type": self.ggml_type, "runtime": "llama.cpp", "threads": self.threads,
            "offload": "all layers" if device_type == "cuda" else "none",
            "mix": "llama.cpp's own per-tensor mix for this type (token_embd and output "
                   "included)" if not self.reference else "none"})

    def compute_dtype(self, device_type):
        return "float32"  # what the export reads; llama.cpp chooses its own compute types

    def availability(self, device_type, capability=None):
        ok, why = super().availability(device_type, capability)
        if ok and device_type == "cuda" and not _gpu_build():
            return False, ("this llama-cpp-python is a CPU build: reinstall it with "
                           "CMAKE_ARGS=-DGGML_CUDA=on to run GGUF on the GPU")
        return ok, why


def _gpu_build() -> bool:
    if importlib.util.find_spec("llama_cpp") is None:
        return False
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


@dataclass(frozen=True)
class GGUFFile(GGUFScheme):
    """The --model .gguf file itself, as its author quantized it."""

    ggml_type: str = "file"

    def settings(self, device_type):
        return {**super().settings(device_type), "ggml_type": "as in the model file",
                "mix": "as in the model file"}


_TYPES = [
    # name, llama.cpp type, nominal bits, what it is
    ("gguf-f32", "F32", 32, "llama.cpp reference in fp32 (the speed baseline of GGUF schemes on the CPU)"),
    ("gguf-f16", "F16", 16, "llama.cpp reference in fp16 (the speed baseline of GGUF schemes on a GPU)"),
    ("gguf-q8_0", "Q8_0", 8, "8-bit blocks of 32 with an fp16 scale (8.5 bits/weight)"),
    ("gguf-q6_k", "Q6_K", 6, "6-bit k-quant super-blocks (~6.6 bits/weight)"),
    ("gguf-q5_k_m", "Q5_K_M", 5, "5-bit k-quant mix, some tensors Q6_K (~5.7 bits/weight)"),
    ("gguf-q4_k_m", "Q4_K_M", 4, "4-bit k-quant mix, some tensors Q6_K (~4.9 bits/weight)"),
    ("gguf-q4_0", "Q4_0", 4, "4-bit blocks of 32 with an fp16 scale (4.5 bits/weight)"),
]

for _name, _type, _bits, _text in _TYPES:
    register(GGUFScheme(name=_name, backend="llama.cpp", bits=_bits, devices=("cpu", "cuda"),
                        packages=LLAMA_CPP, extra="gguf", description=_text, ggml_type=_type))

register(GGUFFile(name="gguf-file", backend="llama.cpp", bits=0, devices=("cpu", "cuda"),
                  packages=LLAMA_CPP, extra="gguf",
                  description="a .gguf --model run as it is, by llama.cpp (bits as in the file)"))
