"""gemlite's weight-only kernels (mobiusml/gemlite, the Triton library vLLM and SGLang use for
HQQ weights) on quantbench's formats: the weights are rounded exactly as the qb schemes of the
same format round them, so gemlite-X against qb-X compares two kernels on identical numbers,
and against torchao two libraries. On the CPU, where gemlite cannot import (it reads the GPU at
import), the cells run the format's dequantized reference, so quality is measured everywhere."""

from __future__ import annotations

from dataclasses import dataclass

from quantbench.schemes.qb_schemes import QbScheme
from quantbench.schemes.registry import Scheme, register

GEMLITE = (("gemlite", "gemlite"),)  # it brings Triton


@dataclass(frozen=True)
class GemliteScheme(QbScheme):
    def availability(self, device_type, capability=None):
        if device_type == "cpu":  # the format's reference needs neither gemlite nor Triton
            return True, ""
        return Scheme.availability(self, device_type, capability)

    def settings(self, device_type):
        return {**super().settings(device_type),
                "kernel": "gemlite (Triton)" if device_type == "cuda"
                else "dequantized reference (F.linear)"}

    def apply(self, model, device: str):
        if not device.startswith("cuda"):
            return super().apply(model, device)
        from quantbench.errors import UsageError
        from quantbench.kernels import gemlite_layers

        group = self.group_size("cuda") if self.fmt == "int4" else 0
        if group:
            self._check_groups(model, group)
        if not gemlite_layers.replace_linears(model, self.fmt, group, self.skipped()):
            raise UsageError(f"{self.name}: the model has no nn.Linear layers to quantize")
        return model


register(GemliteScheme("gemlite-int8", "gemlite", 8, ("cpu", "cuda"), GEMLITE, "gemlite",
                       "int8 weight-only, per-row scales (as qb-int8), gemlite's Triton GEMV",
                       fmt="int8"))
register(GemliteScheme("gemlite-int4", "gemlite", 4, ("cpu", "cuda"), GEMLITE, "gemlite",
                       "int4 weight-only, asymmetric groups (as qb-int4: GPU 128, CPU 64; "
                       "settable), gemlite's Triton GEMV",
                       fmt="int4", tunable=("group", "quantize_head")))
register(GemliteScheme("gemlite-fp8", "gemlite", 8, ("cpu", "cuda"), GEMLITE, "gemlite",
                       "float8 (e4m3) weight-only, per-row scales (as qb-fp8), gemlite's Triton "
                       "GEMV", fmt="fp8", min_capability=(8, 9)))
