"""optimum-quanto weight quantization (qint8 / qint4 tensor subclasses, frozen)."""

from __future__ import annotations

from dataclasses import dataclass

from quantbench.schemes.registry import Scheme, register

QUANTO = (("optimum.quanto", "optimum-quanto"),)


@dataclass(frozen=True)
class QuantoWeights(Scheme):
    qtype: str = "qint8"
    tunable: tuple = ("quantize_head",)

    def settings(self, device_type):
        return {**super().settings(device_type), "weights": self.qtype, "activations": None}

    def apply(self, model, device: str):
        import optimum.quanto as quanto

        quanto.quantize(model, weights=getattr(quanto, self.qtype), exclude=list(self.skipped()))
        quanto.freeze(model)  # replaces the float weights by the quantized ones
        return model


register(QuantoWeights("quanto-int8", "optimum-quanto", 8, ("cpu", "cuda"), QUANTO, "quanto",
                       "int8 weights, per-channel scales", qtype="qint8"))
register(QuantoWeights("quanto-int4", "optimum-quanto", 4, ("cpu", "cuda"), QUANTO, "quanto",
                       "int4 weights, group-wise scales", qtype="qint4"))
