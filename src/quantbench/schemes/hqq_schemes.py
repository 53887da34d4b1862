"""HQQ (half-quadratic quantization, no calibration data) through hqq's own API: transformers'
HqqConfig path raises NotImplementedError with the versions we support."""

from __future__ import annotations

from dataclasses import dataclass

from quantbench.errors import UsageError
from quantbench.schemes.registry import Scheme, register

HQQ = (("hqq", "hqq"),)


@dataclass(frozen=True)
class HqqScheme(Scheme):
    nbits: int = 4
    group: int = 64
    tunable: tuple = ("group", "quantize_head")

    def validate(self):
        if self.group not in (32, 64, 128, 256):
            raise UsageError(f"'{self.name}': group must be 32, 64, 128 or 256")

    def settings(self, device_type):
        return {**super().settings(device_type), "nbits": self.nbits}

    def apply(self, model, device: str):
        import torch
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

        config = BaseQuantizeConfig(nbits=self.nbits, group_size=self.group)
        dtype = next(model.parameters()).dtype
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear) and child_name not in self.skipped():
                    setattr(parent, child_name, HQQLinear(child, config, compute_dtype=dtype,
                                                          device=device))
        return model.to(device)


register(HqqScheme("hqq-int8", "hqq", 8, ("cpu", "cuda"), HQQ, "hqq",
                   "HQQ 8-bit weights, group 64, zero-point and scale per group", nbits=8))
register(HqqScheme("hqq-int4", "hqq", 4, ("cpu", "cuda"), HQQ, "hqq",
                   "HQQ 4-bit weights, group 64", nbits=4))
