"""torchao weight quantization (tensor subclasses swapped into nn.Linear weights)."""

from __future__ import annotations

from quantbench.schemes.registry import Scheme, register

TORCHAO = (("torchao", "torchao"),)


class TorchaoScheme(Scheme):
    def _filter(self):
        import torch

        skip = self.skip_modules

        def keep(module, fqn: str) -> bool:
            return isinstance(module, torch.nn.Linear) and fqn.split(".")[-1] not in skip

        return keep

    def config(self, device_type: str):
        raise NotImplementedError

    def apply(self, model, device: str):
        from torchao.quantization import quantize_

        quantize_(model, self.config(device.split(":")[0]), filter_fn=self._filter())
        return model


class Int8WeightOnly(TorchaoScheme):
    def settings(self, device_type):
        return {**super().settings(device_type), "granularity": "per-row"}

    def config(self, device_type):
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig()


class Int4WeightOnly(TorchaoScheme):
    """GPU: tile-packed int4 (tinygemm) kernels in bf16. CPU: the intx per-group path,
    which stores int4 values in int8 bytes, so it saves no memory there."""

    def group_size(self, device_type):
        return 128 if device_type == "cuda" else 64

    def settings(self, device_type):
        packing = "tile_packed_to_4d" if device_type == "cuda" else "intx_unpacked_to_int8"
        return {**super().settings(device_type), "group_size": self.group_size(device_type),
                "packing": packing}

    def config(self, device_type):
        import torch
        from torchao.quantization import Int4WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup

        if device_type == "cuda":
            return Int4WeightOnlyConfig(group_size=self.group_size(device_type),
                                        int4_packing_format="tile_packed_to_4d")
        return IntxWeightOnlyConfig(weight_dtype=torch.int4,
                                    granularity=PerGroup(self.group_size(device_type)))


register(Int8WeightOnly("torchao-int8wo", "torchao", 8, ("cpu", "cuda"), TORCHAO, "torchao",
                        "int8 weight-only, per-row scales"))
register(Int4WeightOnly("torchao-int4wo", "torchao", 4, ("cpu", "cuda"), TORCHAO, "torchao",
                        "int4 weight-only, per-group scales (GPU: tile-packed bf16; CPU: intx in int8 bytes)"))


class Float8WeightOnly(TorchaoScheme):
    def settings(self, device_type):
        return {**super().settings(device_type), "float8": "e4m3fn", "granularity": "per-row"}

    def config(self, device_type):
        from torchao.quantization import Float8WeightOnlyConfig

        return Float8WeightOnlyConfig()


register(Float8WeightOnly("torchao-float8wo", "torchao", 8, ("cuda",), TORCHAO, "torchao",
                          "float8 (e4m3) weight-only", min_capability=(8, 9)))
