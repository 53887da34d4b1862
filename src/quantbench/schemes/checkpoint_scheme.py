"""A pre-quantized checkpoint as its author shipped it: transformers loads it quantized (its
config.json's quantization_config), and quantbench changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from quantbench.schemes.registry import Scheme, register


@dataclass(frozen=True)
class AsShipped(Scheme):
    fusable: bool = False  # its layers are the checkpoint's, quantized already

    def settings(self, device_type):
        # What it holds is the model's (its fingerprint covers config and files), not a setting.
        return {"compute_dtype": self.compute_dtype(device_type), "skip_modules": [],
                "weights": "as in the checkpoint's quantization_config"}


register(AsShipped("checkpoint", "as shipped", 0, ("cpu", "cuda"),
                   description="a pre-quantized --model folder run as it is (with "
                               "--baseline-model: the float model it is compared with)"))
