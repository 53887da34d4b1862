"""The int4 grid of each torchao layout the RTN scheme uses, with the layout's own formulas: how a
group's scale and zero are chosen, what a weight rounds to, and how grid-aligned weights with
given scales become the layout's tensor. A calibrated scheme picks other int4 values (GPTQ) or
other float weights to round (AWQ); it stores them in exactly the tensor RTN would, so the two
differ in quality only, never in kernel.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Int4Grid:
    group: int

    def qparams(self, w):
        """(scale, zero), each [N, K / group], of w [N, K] as RTN would choose them."""
        raise NotImplementedError

    def fake(self, w, scale, zero):
        """w [N, k * group] (or [N, 1] with scale/zero [N, 1]) rounded to the grid, as floats."""
        grouped = self._grouped(w.float(), scale)
        rounder = self.rounder(scale.float().unsqueeze(-1), zero.float().unsqueeze(-1))
        return rounder(grouped).reshape(w.shape)

    def pack(self, w_grid, scale, zero):
        """The layout's tensor of a grid-aligned weight with these scales and zeros."""
        raise NotImplementedError

    def rounder(self, scale, zero):
        """A function rounding values to the grid of `scale` and `zero` (broadcast against them):
        `fake` rounds whole groups with it, GPTQ one column at a time."""
        raise NotImplementedError

    def rtn(self, w):
        """Round to nearest, as the RTN scheme does: the reference calibrated schemes must beat."""
        scale, zero = self.qparams(w)
        return self.fake(w, scale, zero)

    def _grouped(self, w, scale):
        n, k = w.shape
        groups = scale.shape[-1]
        return w.reshape(n, groups, k // groups)

    def accepts(self, in_features: int) -> bool:
        """Whether RTN quantizes a linear this wide: torchao leaves one whose width its group
        does not divide in float (int4 on the GPU, with a log line only), and so must we."""
        return in_features % self.group == 0


@dataclass(frozen=True)
class IntxSymmetric(Int4Grid):
    """The CPU layout: torchao's IntxUnpackedToInt8Tensor, int4 in int8 bytes, symmetric
    (zero point 0), scales in the weight's dtype (IntxWeightOnlyConfig's defaults)."""

    qmin: int = -8
    qmax: int = 7

    def qparams(self, w):
        import torch
        from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine

        scale, zero = choose_qparams_affine(w, MappingType.SYMMETRIC, (1, self.group), torch.int8,
                                            quant_min=self.qmin, quant_max=self.qmax,
                                            zero_point_dtype=torch.int8, keepdim=True)
        return scale.reshape(w.shape[0], -1), zero.reshape(w.shape[0], -1)

    def rounder(self, scale, zero):
        import torch

        s, z = scale.float(), zero.float()
        # torchao's quantize_affine multiplies by the reciprocal; so do we, to land on its ints.
        inverse = 1.0 / s
        return lambda w: (torch.clamp(torch.round(w * inverse) + z, self.qmin, self.qmax) - z) * s

    def pack(self, w_grid, scale, zero):
        import torch
        from torchao.quantization import IntxUnpackedToInt8Tensor

        return IntxUnpackedToInt8Tensor.from_hp(
            w_grid, (1, self.group), torch.int4, intx_choose_qparams_algorithm=None,
            custom_scale=scale.to(w_grid.dtype), custom_zero_point=zero.to(torch.int8))


@dataclass(frozen=True)
class Tinygemm(Int4Grid):
    """The GPU layout: torchao's Int4TilePackedTo4dTensor (tinygemm), asymmetric 0..15 with a
    float zero (the value at the grid's midpoint), scales and zeros in bf16."""

    def qparams(self, w):
        import torch
        from torchao.quantization.quant_primitives import (MappingType,
                                                           _choose_qparams_affine_tinygemm)

        scale, zero = _choose_qparams_affine_tinygemm(
            w.to(torch.bfloat16), MappingType.ASYMMETRIC, (1, self.group), torch.int32, 0, 15,
            scale_dtype=torch.bfloat16, zero_point_dtype=torch.bfloat16)
        return scale.reshape(w.shape[0], -1), zero.reshape(w.shape[0], -1)

    def rounder(self, scale, zero):
        import torch

        s = scale.float()
        low = zero.float() - s * 8
        return lambda w: torch.clamp(torch.round((w - low) / s), 0, 15) * s + low

    def pack(self, w_grid, scale, zero):
        """Int4TilePackedTo4dTensor.from_hp with given scales (torchao offers none for this
        layout): pad as it does, round the grid-aligned weight with our scales, pack."""
        import torch
        from torchao.quantization.quant_primitives import _quantize_affine_tinygemm
        from torchao.quantization.quantize_.workflows.int4.int4_tile_packed_to_4d_tensor import (
            Int4TilePackedTo4dTensor)
        from torchao.quantization.utils import pack_tinygemm_scales_and_zeros
        from torchao.utils import find_multiple

        n, k = w_grid.shape
        n_pad, k_pad = find_multiple(n, 8), find_multiple(k, 1024)
        w = torch.nn.functional.pad(w_grid.float(), (0, k_pad - k, 0, n_pad - n))
        pad_scale, pad_zero = self.qparams(w)  # the padding's own (all-zero groups), as from_hp
        pad_scale[:n, :scale.shape[1]] = scale
        pad_zero[:n, :zero.shape[1]] = zero
        block = [1, self.group]
        ints = _quantize_affine_tinygemm(w, block, pad_scale.float(), pad_zero.float(),
                                         torch.int32, 0, 15)
        packed = torch.ops.aten._convert_weight_to_int4pack(
            (ints[:, ::2] << 4 | ints[:, 1::2]).to(torch.uint8).contiguous(), 8)
        scale_and_zero = pack_tinygemm_scales_and_zeros(pad_scale, pad_zero, torch.bfloat16)
        return Int4TilePackedTo4dTensor(qdata=packed, scale_and_zero=scale_and_zero,
                                        block_size=block, shape=w_grid.shape, act_pre_scale=None)


def for_device(device_type: str, group: int) -> Int4Grid:
    return Tinygemm(group) if device_type == "cuda" else IntxSymmetric(group)
