"""quantbench's own weight-only schemes: nn.Linear weights packed by quantbench.kernels and
multiplied by its Triton kernel (batch 1-32 decode GEMVs, split-K, tuned per device), under the
eager and the compiled runtime alike. On the CPU the same packed weights run through their
dequantized reference, so quality is measured the same everywhere."""

from __future__ import annotations

from dataclasses import dataclass

from quantbench.errors import UsageError
from quantbench.schemes.registry import Scheme, register

TRITON = (("triton", "triton"),)


@dataclass(frozen=True)
class QbScheme(Scheme):
    fmt: str = "int8"
    group: int = 0
    tunable: tuple = ("quantize_head",)

    @property
    def reference(self) -> bool:  # qb-bf16 is a kernel under test, not a baseline
        return False

    def availability(self, device_type, capability=None):
        if device_type == "cpu":  # the reference path needs no Triton
            return True, ""
        return super().availability(device_type, capability)

    def group_size(self, device_type: str) -> int:
        # torchao-int4wo's defaults, so the two compare at equal groups: 64 on a CPU divides the
        # bundled model's 576-wide layers; 128 on a GPU is what its int4 kernels are tuned for.
        return self.group or (128 if device_type == "cuda" else 64)

    def settings(self, device_type):
        out = {**super().settings(device_type), "skip_modules": list(self.skipped()),
               "format": self.fmt,
               "kernel": "quantbench wo_matmul (Triton)" if device_type == "cuda"
               else "dequantized reference (F.linear)"}
        if self.fmt == "int4":
            out.update(group=self.group_size(device_type), levels="asymmetric min-max, scale + offset per group")
        elif self.fmt != "bf16":
            out["granularity"] = "per output row, symmetric absmax"
        return out

    def validate(self):
        if self.fmt == "int4" and self.group not in (0, 32, 64, 128, 256):
            raise UsageError(f"'{self.name}': group must be 32, 64, 128 or 256")

    def apply(self, model, device: str):
        from quantbench.kernels.layers import QbLinear, replace_linears

        group = self.group_size(device.split(":")[0]) if self.fmt == "int4" else 0
        if group:
            self._check_groups(model, group)
        make = lambda linear: QbLinear.from_linear(linear, self.fmt, group)  # noqa: E731
        if not replace_linears(model, make, self.skipped()):
            raise UsageError(f"{self.name}: the model has no nn.Linear layers to quantize")
        return model.to(device)

    def _check_groups(self, model, group: int) -> None:
        import torch

        for name, module in model.named_modules():
            if (type(module) is torch.nn.Linear and name.split(".")[-1] not in self.skipped()
                    and module.in_features % group):
                raise UsageError(f"{self.name}: groups of {group} do not tile the "
                                 f"{module.in_features} inputs of {name}: use "
                                 f"{self.base or self.name}:group=64 (or 32)")


register(QbScheme("qb-int8", "quantbench", 8, ("cpu", "cuda"), TRITON, "kernels",
                  "int8 weight-only, per-row scales, quantbench's Triton GEMV", fmt="int8"))
register(QbScheme("qb-int4", "quantbench", 4, ("cpu", "cuda"), TRITON, "kernels",
                  "int4 weight-only, asymmetric groups (GPU 128, CPU 64; settable), quantbench's "
                  "Triton GEMV",
                  fmt="int4", tunable=("group", "quantize_head")))
register(QbScheme("qb-fp8", "quantbench", 8, ("cpu", "cuda"), TRITON, "kernels",
                  "float8 (e4m3) weight-only, per-row scales, quantbench's Triton GEMV",
                  fmt="fp8", min_capability=(8, 9)))
register(QbScheme("qb-bf16", "quantbench", 16, ("cpu", "cuda"), TRITON, "kernels",
                  "bf16 weights through quantbench's split-K Triton GEMV (against cuBLAS)",
                  fmt="bf16"))
