"""torchao weight quantization (tensor subclasses swapped into nn.Linear weights)."""

from __future__ import annotations

from dataclasses import dataclass

from quantbench.errors import UsageError
from quantbench.schemes.registry import Scheme, register

TORCHAO = (("torchao", "torchao"),)


@dataclass(frozen=True)
class TorchaoScheme(Scheme):
    tunable: tuple = ("quantize_head",)

    def _filter(self):
        import torch

        skip = self.skipped()

        def keep(module, fqn: str) -> bool:
            return isinstance(module, torch.nn.Linear) and fqn.split(".")[-1] not in skip

        return keep

    def config(self, device_type: str):
        raise NotImplementedError

    def apply(self, model, device: str):
        from torchao.quantization import quantize_

        quantize_(model, _compiler_untouched(self.config(device.split(":")[0])),
                  filter_fn=self._filter())
        return model


def _compiler_untouched(config):
    """torchao's configs set inductor's options process-wide by default (coordinate-descent
    tuning of every kernel, among others): a torchao cell would then compile with other
    settings than its bf16 baseline, and for minutes longer. The runtime owns the compiler's
    settings, the same for every scheme (runtimes/inductor_setup.py)."""
    import dataclasses

    if dataclasses.is_dataclass(config) and any(f.name == "set_inductor_config"
                                                for f in dataclasses.fields(config)):
        return dataclasses.replace(config, set_inductor_config=False)
    return config


class Int8WeightOnly(TorchaoScheme):
    def settings(self, device_type):
        return {**super().settings(device_type), "granularity": "per-row"}

    def config(self, device_type):
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig()


@dataclass(frozen=True)
class Int4WeightOnly(TorchaoScheme):
    """GPU: tile-packed int4 (tinygemm) kernels in bf16. CPU: the intx per-group path,
    which stores int4 values in int8 bytes, so it saves no memory there."""

    group: int = 0  # 0: 128 on GPU, 64 on CPU (64 divides SmolLM2's 576-wide layers)
    tunable: tuple = ("group", "quantize_head")

    def group_size(self, device_type):
        return self.group or (128 if device_type == "cuda" else 64)

    def validate(self):
        if self.group not in (0, 32, 64, 128, 256):
            raise UsageError(f"'{self.name}': group must be 32, 64, 128 or 256")

    def settings(self, device_type):
        packing = "tile_packed_to_4d" if device_type == "cuda" else "intx_unpacked_to_int8"
        out = {**super().settings(device_type), "packing": packing}
        out["group"] = self.group_size(device_type)
        return out

    def config(self, device_type):
        import torch
        from torchao.quantization import Int4WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup

        if device_type == "cuda":
            return Int4WeightOnlyConfig(group_size=self.group_size(device_type),
                                        int4_packing_format="tile_packed_to_4d")
        return IntxWeightOnlyConfig(weight_dtype=torch.int4,
                                    granularity=PerGroup(self.group_size(device_type)))


class Int8Dynamic(TorchaoScheme):
    def settings(self, device_type):
        return {**super().settings(device_type), "activations": "int8 per-token, dynamic",
                "weights": "int8 per-row"}

    def config(self, device_type):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        return Int8DynamicActivationInt8WeightConfig()


register(Int8Dynamic("torchao-int8dq", "torchao", 8, ("cpu", "cuda"), TORCHAO, "torchao",
                     "int8 dynamic activations + int8 weights", matmul_dtype="int8"))
register(Int8WeightOnly("torchao-int8wo", "torchao", 8, ("cpu", "cuda"), TORCHAO, "torchao",
                        "int8 weight-only, per-row scales"))
register(Int4WeightOnly("torchao-int4wo", "torchao", 4, ("cpu", "cuda"), TORCHAO, "torchao",
                        "int4 weight-only, per-group scales (GPU: tile-packed bf16; CPU: intx in int8 bytes)"))


class Float8Dynamic(TorchaoScheme):
    def settings(self, device_type):
        return {**super().settings(device_type), "float8": "e4m3fn",
                "activations": "float8 dynamic, per-row"}

    def config(self, device_type):
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())


register(Float8Dynamic("torchao-float8dq", "torchao", 8, ("cuda",), TORCHAO, "torchao",
                       "float8 (e4m3) dynamic activations + weights, per-row", min_capability=(8, 9),
                       matmul_dtype="float8"))


class Float8WeightOnly(TorchaoScheme):
    def settings(self, device_type):
        return {**super().settings(device_type), "float8": "e4m3fn", "granularity": "per-row"}

    def config(self, device_type):
        from torchao.quantization import Float8WeightOnlyConfig

        return Float8WeightOnlyConfig()


register(Float8WeightOnly("torchao-float8wo", "torchao", 8, ("cuda",), TORCHAO, "torchao",
                          "float8 (e4m3) weight-only", min_capability=(8, 9)))
