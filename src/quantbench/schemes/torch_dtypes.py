"""Plain torch dtypes: the baselines every quantized scheme is measured against."""

from quantbench.schemes.registry import Scheme, register


class DtypeScheme(Scheme):
    def compute_dtype(self, device_type: str) -> str:
        return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[self.base or self.name]


register(DtypeScheme("fp32", "torch", 32, ("cpu", "cuda"), description="float32 weights and math"))
register(DtypeScheme("fp16", "torch", 16, ("cpu", "cuda"),
                     description="float16 weights and math (slow on most CPUs)"))
register(DtypeScheme("bf16", "torch", 16, ("cpu", "cuda"),
                     description="bfloat16 weights and math (slow on CPUs without AMX/AVX512-BF16)"))
