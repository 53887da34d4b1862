"""QbLinear: an nn.Linear whose weight is held in one of quantbench's formats and multiplied by
quantbench's kernel where Triton can run it (a CUDA device, or any device under Triton's
interpreter, TRITON_INTERPRET=1); elsewhere (the CPU) by the dequantized weight, the kernel's
reference, so the scheme's numerics and quality are the same on every machine."""

from __future__ import annotations

import torch

from quantbench.kernels import formats


def kernel_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def kernel_runs_on(device: str) -> bool:
    """Whether quantbench's Triton kernels run for `device`: a CUDA device, or any device under
    Triton's interpreter (TRITON_INTERPRET=1); elsewhere their torch reference runs."""
    from quantbench.kernels.ops import interpreting

    return (device.startswith("cuda") or interpreting()) and kernel_available()


class QbLinear(torch.nn.Module):
    def __init__(self, packed: formats.PackedWeight, out_features: int, bias=None):
        super().__init__()
        self.fmt = packed.fmt
        self.group = packed.group
        self.in_features = packed.in_features
        self.out_features = out_features
        # The stored weight is the layer's `weight` (what weight_kinds reports); its logical
        # shape is in `meta`, as HQQ's layers keep it (parameter counts read it there).
        self.weight = torch.nn.Parameter(packed.data, requires_grad=False)
        self.register_buffer("scale", packed.scale)
        self.register_buffer("offset", packed.offset)
        self.bias = bias
        self.meta = {"shape": (out_features, packed.in_features)}
        # "<format> <N>x<K> rows=<M>" -> the launch config that ran and how it was chosen; the
        # dict is shared with the cell's record (launch_record) when the runtime asks.
        self.launches: dict[str, dict] = {}
        self._chosen: dict[int, tuple] = {}  # rows -> launch config
        self.has_kernel = kernel_available()  # once: not an import per forward call
        if self.has_kernel:
            from quantbench.kernels import ops

            ops.register()

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, fmt: str, group: int) -> "QbLinear":
        packed = formats.quantize(linear.weight.data, fmt, group)
        bias = (torch.nn.Parameter(linear.bias.data, requires_grad=False)
                if linear.bias is not None else None)
        return cls(packed, linear.out_features, bias)

    def packed(self) -> formats.PackedWeight:
        return formats.PackedWeight(self.fmt, self.weight, self.scale, self.offset,
                                    self.in_features, self.group)

    def extra_repr(self) -> str:
        group = f", group={self.group}" if self.fmt == "int4" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.fmt}{group}"

    def _uses_kernel(self, x) -> bool:
        from quantbench.kernels.ops import interpreting

        return (x.is_cuda or interpreting()) and self.has_kernel

    def _config(self, x2d) -> tuple:
        """The launch config for this many rows, as a tuple of ints. Chosen on the first eager
        call (the cache of tuned configs, else timing the candidates); a graph traced before any
        eager call of its shape gets the untuned default, and the record says so."""
        from quantbench.kernels import tuning

        m = x2d.shape[0]
        chosen = self._chosen.get(m)
        if chosen is not None:
            return chosen
        if torch.compiler.is_compiling():
            return tuning.default(self.fmt, m, self.out_features, self.in_features,
                                  self.group).astuple()
        config, how, found = self._choose(x2d)
        if found and found.get("untimed"):  # the prefill's rows: the default, not a search
            how, found = f"default ({found['untimed']})", None
        entry = {"config": config.short(), "chosen": how}
        if found:
            entry.update(tuned_us=round(found["us"], 2), tuned_GBps=round(found["GBps"], 1))
        self.launches.setdefault(f"{self.fmt} {self.out_features}x{self.in_features} rows={m}", entry)
        self._chosen[m] = config.astuple()
        return self._chosen[m]

    def _choose(self, x2d):
        from quantbench.kernels import tuning

        m, k = x2d.shape
        if not x2d.is_cuda:  # the interpreter: nothing to time
            return tuning.default(self.fmt, m, self.out_features, k, self.group), "default", None
        name = torch.cuda.get_device_name(x2d.device)
        found = tuning.lookup(name, self.fmt, m, self.out_features, k, self.group)
        how = "cached"
        if found is None:
            sms = torch.cuda.get_device_properties(x2d.device).multi_processor_count
            found, how = tuning.tune(x2d, self.packed(), name, sms), "tuned"
        return tuning.Config(**found["config"]), how, found

    def forward(self, x):
        shape = x.shape
        x2d = x.reshape(-1, shape[-1])
        if self._uses_kernel(x):
            from quantbench.kernels import ops

            x2d = x2d.contiguous()
            y = ops.launch(x2d, self.weight, self.scale, self.offset, self.fmt, self.group,
                           self._config(x2d))
        else:
            y = torch.nn.functional.linear(x2d, formats.dequantize(self.packed(), x.dtype))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)


def replace_linears(model, make, skip: tuple[str, ...]) -> int:
    """Swap every nn.Linear not named in `skip` for `make(linear)` (a QbLinear, a gemlite
    layer), one layer at a time, so the float model plus one packed layer is the peak. Returns
    how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and name not in skip:
                setattr(parent, name, make(child))
                swapped += 1
    return swapped


def launch_record(model, device: str) -> dict | None:
    """What the cell's record says of quantbench's kernel: which path ran the layers, and (filled
    as the layers run) each shape's launch config. None when the model holds no QbLinear."""
    layers = [m for m in model.modules() if isinstance(m, QbLinear)]
    if not layers:
        return None
    on_kernel = kernel_runs_on(device)
    record = {"layers": len(layers),
              "path": ("quantbench Triton kernel (torch.ops.quantbench.wo_matmul)" if on_kernel
                       else "reference: the dequantized weight times the input (F.linear); "
                            "quantbench's Triton kernel runs on CUDA devices"),
              "launches": {}}
    for layer in layers:
        layer.launches = record["launches"]
    return record
