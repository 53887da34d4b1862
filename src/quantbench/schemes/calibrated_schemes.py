"""Calibrated int4 (GPTQ, AWQ): quantbench's own implementations of both methods (torchao 0.18's
prototypes run on CUDA only and, for int4, need the `mslk` package; its AWQ refuses the CPU's
int4 layout), writing their int4 values into the same torchao tensors as `torchao-int4wo`. So
against RTN at the same group size, the difference is the method, not the kernel."""

from __future__ import annotations

import time
from dataclasses import dataclass

from quantbench.errors import UsageError
from quantbench.schemes.registry import Scheme, register
from quantbench.schemes.torchao_schemes import TORCHAO


@dataclass(frozen=True)
class CalibratedInt4(Scheme):
    method: str = "gptq"
    group: int = 0  # 0: as torchao-int4wo (128 on GPU, 64 on CPU)
    samples: int = 32  # calibration windows
    length: int = 256  # tokens per window
    tunable: tuple = ("group", "samples", "length")
    calibrated: bool = True
    fusable: bool = False  # AWQ searches scales per layer; GPTQ's layerwise pass names them

    def group_size(self, device_type: str) -> int:
        return self.group or (128 if device_type == "cuda" else 64)

    def validate(self):
        if self.group not in (0, 32, 64, 128, 256):
            raise UsageError(f"'{self.name}': group must be 32, 64, 128 or 256")
        if self.samples < 1 or self.length < 2:
            raise UsageError(f"'{self.name}': samples must be >= 1 and length >= 2")

    def settings(self, device_type):
        packing = "tile_packed_to_4d" if device_type == "cuda" else "intx_unpacked_to_int8"
        return {**super().settings(device_type), "method": self.method, "packing": packing,
                "group": self.group_size(device_type), "samples": self.samples,
                "length": self.length}

    def apply(self, model, device: str):
        raise UsageError(f"{self.name} needs calibration data: run it through quantbench "
                         "(run, sweep or quantize), which supplies it")

    def quantize(self, model, device: str, calibration: dict | None, info: dict, progress=None):
        import torch

        from quantbench.calibration import awq, grids, gptq, layerwise

        if not calibration:
            self.apply(model, device)
        device_type = device.split(":")[0]
        grid = grids.for_device(device_type, self.group_size(device_type))
        skip = self.skipped()
        qparams = {}  # nn.Linear -> (scale, zero) of its grid-aligned weight
        alphas = {}
        start = time.perf_counter()

        def on_layer(layer, run):
            if self.method == "awq":
                chosen = awq.apply(layer, grid, run)
                alphas.update({f"{layer.index}.{k}": v for k, v in chosen.items()})
            for name, linear in layer.linears.items():
                if not grid.accepts(linear.in_features):
                    continue
                weight = linear.weight
                if self.method == "gptq":
                    rounded, scale, zero = gptq.quantize(weight, layer.stats[name].hessian, grid)
                else:
                    scale, zero = grid.qparams(weight.float())
                    rounded = grid.fake(weight.float(), scale, zero)
                with torch.no_grad():
                    weight.copy_(rounded.to(weight.dtype))
                qparams[linear] = (scale, zero)

        ids = calibration["ids"][:self.samples]
        ids = [row[:self.length] for row in ids]
        with torch.no_grad():
            layerwise.calibrate(model, ids, device, on_layer, skip=skip, progress=progress)
        if device_type == "cuda":
            torch.cuda.synchronize()
        calibrate_s = time.perf_counter() - start
        # Every other linear (none in Llama-style models besides the head) is rounded to
        # nearest, as torchao-int4wo's filter would.
        left_float = 0
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear) and child_name not in skip:
                    if not grid.accepts(child.in_features):
                        left_float += 1
                        continue
                    weight = child.weight.detach()
                    scale, zero = qparams.get(child) or grid.qparams(weight.float())
                    child.weight = torch.nn.Parameter(grid.pack(weight, scale, zero),
                                                      requires_grad=False)
        info.update({"method": self.method, "seconds": calibrate_s,
                     "source": calibration["source"], "sha256": calibration["sha256"],
                     "samples": len(ids), "length": len(ids[0]),
                     "calibrated_linears": len(qparams),
                     # as torchao-int4wo leaves them: widths the group does not divide
                     "float_linears": left_float})
        if alphas:
            values = sorted(alphas.values())
            info["awq_alpha"] = {"min": values[0], "median": values[len(values) // 2],
                                 "max": values[-1]}
        return model


register(CalibratedInt4("gptq-int4", "torchao", 4, ("cpu", "cuda"), TORCHAO, "torchao",
                        "GPTQ int4 weight-only, calibrated (layer by layer), torchao-int4wo's "
                        "layout and kernels", method="gptq"))
register(CalibratedInt4("awq-int4", "torchao", 4, ("cpu", "cuda"), TORCHAO, "torchao",
                        "AWQ int4 weight-only, activation-aware scales folded into the norms, "
                        "torchao-int4wo's layout and kernels", method="awq"))
