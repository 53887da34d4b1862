"""bitsandbytes LLM.int8 and 4-bit (NF4) linear layers, swapped in for nn.Linear."""

from __future__ import annotations

from dataclasses import dataclass

from quantbench.errors import UsageError
from quantbench.schemes.registry import Scheme, register

BNB = (("bitsandbytes", "bitsandbytes"),)


@dataclass(frozen=True)
class BnbScheme(Scheme):
    tunable: tuple = ("quantize_head",)

    def compute_dtype(self, device_type: str) -> str:
        # fp16 on GPU: the dtype bitsandbytes' kernels and the HF integration default to.
        return "float32" if device_type == "cpu" else "float16"

    def make_layer(self, linear, compute_dtype):
        raise NotImplementedError

    def apply(self, model, device: str):
        import torch

        dtype = getattr(torch, self.compute_dtype(device.split(":")[0]))
        # Built where it runs (a random 8B model takes minutes to fill on a CPU) and quantized
        # one layer at a time, so the float model plus one quantized layer is the peak;
        # bitsandbytes quantizes a weight when it is moved to the target device.
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear) and child_name not in self.skipped():
                    setattr(parent, child_name, self.make_layer(child, dtype).to(device))
        return model.to(device)


@dataclass(frozen=True)
class BnbInt8(BnbScheme):
    threshold: float = 6.0
    tunable: tuple = ("threshold", "quantize_head")

    def settings(self, device_type):
        # threshold 0 turns LLM.int8's outlier decomposition off: say so, not just "0.0".
        return {**super().settings(device_type), "outlier_path": self.threshold > 0}

    def make_layer(self, linear, compute_dtype):
        import bitsandbytes as bnb

        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features,
                                    bias=linear.bias is not None, has_fp16_weights=False,
                                    threshold=self.threshold, device="meta")
        # Int8Params quantizes only on a move from the host: stage the weight there.
        layer.weight = bnb.nn.Int8Params(linear.weight.data.to("cpu", compute_dtype),
                                         requires_grad=False, has_fp16_weights=False)
        if linear.bias is not None:
            layer.bias = linear.bias
        return layer


@dataclass(frozen=True)
class Bnb4bit(BnbScheme):
    quant_type: str = "nf4"
    double_quant: bool = False
    blocksize: int = 64
    tunable: tuple = ("quant_type", "double_quant", "blocksize", "quantize_head")

    def validate(self):
        if self.quant_type not in ("nf4", "fp4"):
            raise UsageError(f"'{self.name}': quant_type must be nf4 or fp4")
        if self.blocksize not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
            raise UsageError(f"'{self.name}': blocksize must be a power of two from 32 to 4096")

    def make_layer(self, linear, compute_dtype):
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features,
                                  bias=linear.bias is not None, compute_dtype=compute_dtype,
                                  compress_statistics=self.double_quant,
                                  quant_type=self.quant_type, device="meta")
        layer.weight = bnb.nn.Params4bit(linear.weight.data.to(compute_dtype), requires_grad=False,
                                         compress_statistics=self.double_quant,
                                         quant_type=self.quant_type, blocksize=self.blocksize)
        if linear.bias is not None:
            layer.bias = linear.bias
        return layer


register(BnbInt8("bnb-int8", "bitsandbytes", 8, ("cpu", "cuda"), BNB, "bnb",
                 "LLM.int8: int8 weights, outlier columns in 16-bit (threshold 6.0)"))
register(Bnb4bit("bnb-nf4", "bitsandbytes", 4, ("cpu", "cuda"), BNB, "bnb",
                 "NF4 4-bit weights, blocksize 64"))
register(Bnb4bit("bnb-nf4-dq", "bitsandbytes", 4, ("cpu", "cuda"), BNB, "bnb",
                 "NF4 with double quantization (the absmax scales quantized too)", double_quant=True))
register(Bnb4bit("bnb-fp4", "bitsandbytes", 4, ("cpu", "cuda"), BNB, "bnb",
                 "FP4 4-bit weights, blocksize 64", quant_type="fp4"))
