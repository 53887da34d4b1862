"""One decoder layer at a time: gather the statistics of each linear's inputs, let a method change
the layer's weights, then run the changed layer to produce the next layer's inputs. So layer i is
calibrated on what the already-quantized layers before it really emit (GPTQ's and AWQ's
sequential mode), and only one layer's statistics are held at a time."""

from __future__ import annotations

from dataclasses import dataclass, field

from quantbench.errors import UsageError


@dataclass
class InputStats:
    """Of one linear's inputs x [rows, K]: sum of x^T x (the proxy Hessian), sum of |x|, rows."""

    gram: object = None
    abs_sum: object = None
    rows: int = 0

    def add(self, x) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        gram = x.T @ x
        self.gram = gram if self.gram is None else self.gram + gram
        total = x.abs().sum(0)
        self.abs_sum = total if self.abs_sum is None else self.abs_sum + total
        self.rows += x.shape[0]

    @property
    def hessian(self):
        return self.gram * (2.0 / self.rows)

    @property
    def mean_abs(self):
        return self.abs_sum / self.rows


@dataclass
class Layer:
    index: int
    module: object
    linears: dict = field(default_factory=dict)  # name within the layer -> nn.Linear
    stats: dict = field(default_factory=dict)  # name -> InputStats


class _Stop(Exception):
    """Raised by the last layer's hook: the head's logits are not needed."""


def decoder_layers(model):
    """The model's stack of decoder layers: the ModuleList as long as config.num_hidden_layers."""
    import torch

    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count and count:
            return module
    raise UsageError(f"calibration needs a stack of decoder layers, and "
                     f"{type(model).__name__} has none that quantbench can find")


def calibrate(model, ids, device: str, on_layer, skip=(), batch: int = 8, progress=None) -> None:
    """Run `on_layer(layer)` for each decoder layer in order, with its linears' input stats;
    `ids` is [samples, length] token ids."""
    import torch

    layers = decoder_layers(model)
    inputs: list = []  # per batch: the first layer's hidden states
    kwargs: list[list[dict]] = [[] for _ in layers]  # per layer, per batch: its keyword arguments

    def capture(index):
        def hook(module, args, kw):
            if index == 0:
                inputs.append(args[0] if args else kw["hidden_states"])
            kwargs[index].append({k: v for k, v in kw.items() if k != "hidden_states"})
            if index == len(layers) - 1:
                raise _Stop
        return hook

    handles = [layer.register_forward_pre_hook(capture(i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    # The float model runs once to hand each layer its own arguments (masks and rotary
    # embeddings can differ by layer: Gemma 3's sliding layers).
    try:
        with torch.no_grad():
            for start in range(0, len(ids), batch):
                chunk = torch.tensor(ids[start:start + batch], dtype=torch.long, device=device)
                try:
                    model(input_ids=chunk, use_cache=False)
                except _Stop:
                    pass
    finally:
        for handle in handles:
            handle.remove()

    hidden = inputs
    for index, module in enumerate(layers):
        layer = Layer(index, module, {name: sub for name, sub in module.named_modules()
                                      if isinstance(sub, torch.nn.Linear)
                                      and name.split(".")[-1] not in skip})
        layer.stats = {name: InputStats() for name in layer.linears}
        handles = [sub.register_forward_pre_hook(
            lambda mod, args, name=name: layer.stats[name].add(args[0]))
            for name, sub in layer.linears.items()]
        try:
            with torch.no_grad():
                for h, kw in zip(hidden, kwargs[index]):
                    module(h, **kw)
        finally:
            for handle in handles:
                handle.remove()

        def run(limit=None, module=module, batches=list(zip(hidden, kwargs[index]))):
            with torch.no_grad():
                return [_output(module(h, **kw)) for h, kw in batches[:limit]]

        on_layer(layer, run)
        hidden = run()  # the changed layer's outputs: the next layer's inputs
        layer.stats.clear()
        if progress:
            progress(index + 1, len(layers))


def _output(out):
    return out[0] if isinstance(out, tuple) else out
