"""GPTQ (Frantar et al. 2022, Algorithm 1): quantize a weight's columns in order, each rounding
error spread over the columns not yet quantized through the inverse Hessian of the layer's
inputs. Group scales are chosen, as RTN chooses them, from the updated weights when a group
starts. No act-order: torchao's int4 layouts keep groups in column order (no g_idx)."""

from __future__ import annotations

from quantbench.calibration.grids import Int4Grid


def quantize(weight, hessian, grid: Int4Grid, block: int = 128, damp: float = 0.01):
    """(grid-aligned weight [N, K] in fp32, scale [N, K / group], zero [N, K / group])."""
    import torch

    w = weight.detach().float().clone()
    n, k = w.shape
    g = grid.group
    if not grid.accepts(k):
        raise ValueError(f"group {g} does not divide the {k} input features")
    block = max(block // g, 1) * g  # a group never straddles two blocks
    h = hessian.detach().float().clone()
    dead = torch.diag(h) == 0  # inputs that never fire: their weights cannot matter
    h[dead, dead] = 1
    w[:, dead] = 0
    h.diagonal().add_(damp * torch.mean(torch.diag(h)))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    scales, zeros = [], []
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        wb = w[:, b0:b1].clone()
        errors = torch.zeros_like(wb)
        hb = hinv[b0:b1, b0:b1]
        for j in range(b1 - b0):
            if (b0 + j) % g == 0:
                scale, zero = grid.qparams(wb[:, j:j + g])
                scales.append(scale)
                zeros.append(zero)
                rounder = grid.rounder(scale[:, 0], zero[:, 0])
            column = wb[:, j]
            rounded = rounder(column)
            error = (column - rounded) / hb[j, j]
            wb[:, j + 1:].addr_(error, hb[j, j + 1:], alpha=-1)
            wb[:, j] = rounded
            errors[:, j] = error
        w[:, b0:b1] = wb
        w[:, b1:] -= errors @ hinv[b0:b1, b1:]
    return w, torch.cat(scales, dim=1), torch.cat(zeros, dim=1)
