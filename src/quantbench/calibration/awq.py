"""AWQ (Lin et al. 2023): scale each input channel of the linears that share an input by
mean|x|^alpha before rounding, alpha searched per group, and fold 1/scale into the operation that
produces that input (the RMSNorm before attention and MLP, up_proj before down_proj, v_proj before
o_proj when their widths match). The model computes the same function before rounding; after it,
the channels that carry large activations lose less. The searched loss is each linear's output
error on the calibration inputs, tr(dW H dW^T) with H their Gram matrix (AutoAWQ measures the
whole attention/MLP block's output instead); no clipping search."""

from __future__ import annotations

from dataclasses import dataclass

from quantbench.calibration.grids import Int4Grid
from quantbench.errors import UsageError

RATIOS = 20  # alpha in 0, 0.05, ..., 0.95, as AutoAWQ's grid


@dataclass
class Group:
    producer: object  # the norm or linear whose output is these linears' input
    producer_is_norm: bool
    names: list[str]


def groups(layer) -> list[Group]:
    modules = dict(layer.module.named_modules())
    linears = layer.linears

    def named(suffix):
        return [name for name in linears if name.split(".")[-1] == suffix]

    def norm(*names):
        for name in names:
            if name in modules:
                return modules[name]
        return None

    out = []
    attention = named("q_proj") + named("k_proj") + named("v_proj")
    before_attention = norm("input_layernorm")
    if attention and before_attention is not None:
        out.append(Group(before_attention, True, attention))
    mlp = named("gate_proj") + named("up_proj")
    before_mlp = norm("pre_feedforward_layernorm", "post_attention_layernorm")
    if mlp and before_mlp is not None:
        out.append(Group(before_mlp, True, mlp))
    if named("down_proj") and named("up_proj"):
        out.append(Group(linears[named("up_proj")[0]], False, named("down_proj")))
    if named("o_proj") and named("v_proj"):
        v, o = linears[named("v_proj")[0]], linears[named("o_proj")[0]]
        if v.out_features == o.in_features:  # with grouped KV heads they differ: no fold
            out.append(Group(v, False, named("o_proj")))
    return out


def search(weights: list, stats, grid: Int4Grid):
    """The per-channel scale (1 where alpha 0 wins) and the best alpha."""
    import torch

    hessian = stats.hessian
    mean_abs = stats.mean_abs.clamp(min=1e-4)
    best, best_loss, best_ratio = None, float("inf"), 0.0
    for step in range(RATIOS):
        ratio = step / RATIOS
        scale = mean_abs.pow(ratio)
        scale = scale / (scale.max() * scale.min()).sqrt()
        loss = 0.0
        for w in weights:
            w = w.float()
            delta = w - grid.rtn(w * scale) / scale
            loss += float(((delta @ hessian) * delta).sum())
        if loss < best_loss:
            best, best_loss, best_ratio = scale, loss, ratio
    return (best if best_ratio > 0 else torch.ones_like(best)), best_ratio


def fold(group: Group, linears: dict, scale) -> None:
    """Weights x scale on the input side; the producer's output / scale."""
    import torch

    with torch.no_grad():
        for name in group.names:
            weight = linears[name].weight
            weight.copy_((weight.float() * scale).to(weight.dtype))
        producer = group.producer
        if group.producer_is_norm:
            w = producer.weight.float()
            # Gemma's RMSNorm multiplies by (1 + weight), the others by weight.
            offset = 1.0 if type(producer).__name__.startswith("Gemma") else 0.0
            producer.weight.copy_(((w + offset) / scale - offset).to(producer.weight.dtype))
        else:
            producer.weight.copy_((producer.weight.float() / scale[:, None]).to(
                producer.weight.dtype))
            if producer.bias is not None:
                producer.bias.copy_((producer.bias.float() / scale).to(producer.bias.dtype))


def apply(layer, grid: Int4Grid, run) -> dict:
    """Search and fold every group of the layer; returns name -> alpha. `run()` gives the layer's
    outputs on the calibration batches: the fold must leave them unchanged."""
    import torch

    found = groups(layer)
    scales = []
    for group in found:
        weights = [layer.linears[name].weight for name in group.names]
        scales.append(search(weights, layer.stats[group.names[0]], grid))
    before = run(1)
    for group, (scale, _) in zip(found, scales):
        fold(group, layer.linears, scale)
    after = run(1)
    ref = torch.cat([b.float().flatten() for b in before])
    new = torch.cat([a.float().flatten() for a in after])
    drift = float((new - ref).norm() / ref.norm().clamp(min=1e-12))
    tolerance = 1e-3 if ref.dtype == torch.float32 and before[0].dtype == torch.float32 else 3e-2
    if drift > tolerance:
        raise UsageError(f"AWQ: folding the scales into layer {layer.index} of this architecture "
                         f"changed its output by {drift:.1e} (relative): its normalisation or "
                         "projection layout is not one AWQ here knows; use gptq-int4 instead")
    return {name: ratio for group, (_, ratio) in zip(found, scales) for name in group.names}
