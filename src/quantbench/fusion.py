"""Fused sibling projections: q/k/v and gate/up read the same input, so their weights are
concatenated at load into one nn.Linear each, which a scheme then quantizes like any other
(one GEMV of the whole width per step instead of three or two: fewer, fuller kernels).

Quantizing the concatenation equals quantizing the parts for every scheme whose scales are per
output row or per group along the input (int8/fp8 per row, int4/NF4 groups, HQQ, bf16), and the
model's own forward is kept: the first sibling's module computes the fused projection and hands
the others their slices through a small shared slot, so no attention or MLP code is rewritten
(transformers changes those signatures between versions). The siblings must be called in order
on the same input, as Llama-family decoders do; eager calls check both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _Slot:
    """The fused output's remaining slices, between the first sibling's call and the last's."""

    def __init__(self):
        self.parts = None
        self.source = None


class FusedHead(torch.nn.Module):
    """Stands where the first sibling stood: runs the fused projection, returns its slice."""

    def __init__(self, fused: torch.nn.Module, sizes: list[int], names: tuple[str, ...], slot):
        super().__init__()
        self.fused = fused
        self.sizes = sizes
        self.names = names
        self.slot = slot

    def extra_repr(self) -> str:
        return f"{'+'.join(self.names)}: {self.sizes}"

    def forward(self, x):
        parts = self.fused(x).split(self.sizes, dim=-1)
        self.slot.parts = parts[1:]
        if not torch.compiler.is_compiling():
            self.slot.source = x
        return parts[0]


class FusedTail(torch.nn.Module):
    """Stands where a later sibling stood: returns its slice of the head's output."""

    def __init__(self, index: int, last: bool, name: str, slot):
        super().__init__()
        self.index = index
        self.last = last
        self.name = name
        self.slot = slot

    def extra_repr(self) -> str:
        return f"{self.name}: slice {self.index + 1} of the fused projection"

    def forward(self, x):
        parts = self.slot.parts
        if not torch.compiler.is_compiling():
            if parts is None or self.slot.source is not x:
                raise RuntimeError(f"fused projection: {self.name} was called before its "
                                   "first sibling, or on another input; this model cannot "
                                   "run with fused projections")
        part = parts[self.index - 1]
        if self.last:  # nothing stays held between steps (or becomes a graph output)
            self.slot.parts = None
            self.slot.source = None
        return part


@dataclass
class FusionReport:
    groups: dict = field(default_factory=dict)  # "q_proj+k_proj+v_proj" -> how many fused
    skipped: list = field(default_factory=list)

    def as_info(self) -> dict:
        return {"fused": self.groups, "left_apart": self.skipped,
                "how": "sibling weights concatenated at load, quantized as one layer"}


def fuse_projections(model) -> FusionReport:
    """Fuse each sibling group of plain nn.Linear layers in place; returns what was fused."""
    report = FusionReport()
    for parent_name, parent in list(model.named_modules()):
        for names in SIBLINGS:
            linears = [getattr(parent, n, None) for n in names]
            if any(l is None for l in linears):
                continue
            key = "+".join(names)
            if not all(type(l) is torch.nn.Linear and type(l.weight.data) is torch.Tensor
                       for l in linears):
                report.skipped.append(f"{parent_name}: {key} (not plain Linear layers)")
                continue
            if len({(l.in_features, l.weight.dtype, l.weight.device, l.bias is None)
                    for l in linears}) != 1:
                report.skipped.append(f"{parent_name}: {key} (inputs, dtypes or biases differ)")
                continue
            first = linears[0]
            sizes = [l.out_features for l in linears]
            fused = torch.nn.Linear(first.in_features, sum(sizes), bias=first.bias is not None,
                                    device="meta")
            fused.weight = torch.nn.Parameter(torch.cat([l.weight.data for l in linears]),
                                              requires_grad=False)
            if first.bias is not None:
                fused.bias = torch.nn.Parameter(torch.cat([l.bias.data for l in linears]),
                                                requires_grad=False)
            slot = _Slot()
            setattr(parent, names[0], FusedHead(fused, sizes, names, slot))
            for i, name in enumerate(names[1:], start=1):
                setattr(parent, name, FusedTail(i, i == len(names) - 1, name, slot))
            report.groups[key] = report.groups.get(key, 0) + 1
    return report
