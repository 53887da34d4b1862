"""The weight formats quantbench's own kernel reads, in torch: how a float weight becomes one
(quantize), what it stands for (dequantize: the reference every kernel result is held to).
Pure torch, so the formats and their quality exist on any machine; the kernel needs Triton."""

from __future__ import annotations

from dataclasses import dataclass

FP8_MAX = 448.0  # e4m3fn's largest finite value


@dataclass
class PackedWeight:
    """A weight in one format. `data` is what the kernel streams (int4: byte j of a group holds
    its positions j and j + group/2, low and high nibble); `scale`/`offset` are per output
    row (int8, fp8) or per row and group of K (int4); bf16 has neither."""

    fmt: str
    data: object  # torch.Tensor [N, K] (int8/uint8 fp8 bytes/bf16) or [N, K // 2] uint8 (int4)
    scale: object | None
    offset: object | None
    in_features: int
    group: int = 0

    def tensors(self) -> list:
        return [t for t in (self.data, self.scale, self.offset) if t is not None]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


def quantize(weight, fmt: str, group: int = 128, scale_dtype=None) -> PackedWeight:
    """Round a float [N, K] weight to `fmt`: int8 and fp8 symmetric per output row (absmax),
    int4 asymmetric per group of `group` inputs (min-max, 16 levels)."""
    import torch

    w = weight.detach().float()
    n, k = w.shape
    if fmt == "bf16":
        return PackedWeight("bf16", weight.detach().to(torch.bfloat16).contiguous(), None, None, k)
    if fmt == "int8":
        s = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        q = torch.round(w / s[:, None]).clamp(-127, 127).to(torch.int8)
        return PackedWeight("int8", q.contiguous(), s.contiguous(), None, k)
    if fmt == "fp8":
        s = w.abs().amax(dim=1).clamp(min=1e-12) / FP8_MAX
        q = (w / s[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        return PackedWeight("fp8", q.view(torch.uint8).contiguous(), s.contiguous(), None, k)
    if fmt == "int4":
        if k % group or group % 2:
            raise ValueError(f"int4 groups of {group} do not tile {k} inputs")
        groups = w.reshape(n, k // group, group)
        low = groups.amin(dim=2)
        high = groups.amax(dim=2)
        s = ((high - low) / 15.0).clamp(min=1e-12)
        scale_dtype = scale_dtype or weight.dtype
        # Rounded to their stored dtype before the weights are rounded against them, so the
        # kernel reconstructs exactly what was chosen.
        s = s.to(scale_dtype).float()
        low = low.to(scale_dtype).float()
        q = torch.round((groups - low[..., None]) / s[..., None]).clamp(0, 15).to(torch.uint8)
        # byte j of a group: its position j in the low nibble, j + group/2 in the high one
        half = group // 2
        packed = (q[..., :half] | (q[..., half:] << 4)).reshape(n, k // 2).contiguous()
        return PackedWeight("int4", packed, s.to(scale_dtype).contiguous(),
                            low.to(scale_dtype).contiguous(), k, group)
    raise ValueError(f"unknown weight format {fmt!r}")


def dequantize(packed: PackedWeight, dtype=None):
    """The float [N, K] weight a packed one stands for (the kernel's reference)."""
    import torch

    dtype = dtype or torch.float32
    if packed.fmt == "bf16":
        return packed.data.to(dtype)
    if packed.fmt == "int8":
        return (packed.data.float() * packed.scale.float()[:, None]).to(dtype)
    if packed.fmt == "fp8":
        w = packed.data.view(torch.float8_e4m3fn).float()
        return (w * packed.scale.float()[:, None]).to(dtype)
    if packed.fmt == "int4":
        n, g = packed.data.shape[0], packed.group
        q = int4_codes(packed).reshape(n, -1, g)
        w = q.float() * packed.scale.float()[..., None] + packed.offset.float()[..., None]
        return w.reshape(n, packed.in_features).to(dtype)
    raise ValueError(f"unknown weight format {packed.fmt!r}")


def int4_codes(packed: PackedWeight):
    """An int4 weight's 16-level codes, one uint8 per weight in the weight's own [N, K] order
    (other kernels' packers, gemlite's, start from these)."""
    import torch

    n, g = packed.data.shape[0], packed.group
    data = packed.data.reshape(n, -1, g // 2)
    return torch.cat([data & 0xF, data >> 4], dim=2).reshape(n, packed.in_features)  # see quantize
