"""gemlite's Triton kernels (mobiusml/gemlite: the GEMV/GEMM library vLLM and SGLang use for
HQQ and weight-only 8-bit checkpoints) behind quantbench's weight formats. A weight is rounded by
quantbench.kernels.formats exactly as the qb schemes round it and handed to gemlite to pack and
multiply, so a gemlite cell and a qb cell of one format hold the same numbers and differ only in
the kernel. gemlite imports only where a CUDA device exists (it reads the GPU's name at import)."""

from __future__ import annotations

import json

import torch

from quantbench.kernels import formats

# gemlite dispatches on the rows of each call (gemlite.core.get_matmul_type); the record names
# the kernel for the rows a decode step runs.
_KERNEL_DOC = "gemlite forward_functional (torch.ops.gemlite), Triton"


def from_linear(linear: torch.nn.Linear, fmt: str, group: int) -> torch.nn.Module:
    """A GemLiteLinearTriton holding `linear`'s weight in quantbench's `fmt` (int8 and fp8:
    symmetric per output row; int4: asymmetric min-max per group of `group` inputs)."""
    from gemlite.helper import A16W8

    weight = linear.weight.data
    dtype, device = weight.dtype, weight.device
    bias = linear.bias.data if linear.bias is not None else None
    packed = formats.quantize(weight, fmt, group)
    if fmt == "int8":
        layer = A16W8(device=device, dtype=dtype).from_weights(
            packed.data, bias, scales=packed.scale[:, None])
    elif fmt == "fp8":
        layer = A16W8(device=device, dtype=dtype, fp8=torch.float8_e4m3fn).from_weights(
            packed.data.view(torch.float8_e4m3fn), bias, scales=packed.scale[:, None])
    elif fmt == "int4":
        layer = _int4(packed, linear.out_features, bias, dtype, device)
    else:
        raise ValueError(f"gemlite: no quantbench format {fmt!r} (int8, int4, fp8)")
    # The logical shape where parameter counts look for it (W_q is packed), as QbLinear keeps it.
    layer.meta = {"shape": (linear.out_features, linear.in_features)}
    return layer


def _int4(packed, out_features: int, bias, dtype, device):
    from gemlite.helper import A16Wn

    scale, offset = packed.scale, packed.offset
    # gemlite's HQQ convention is (q - zero) * scale; its packer turns that into the
    # multiply-add form q * scale + (-zero * scale) (W_group_mode 4), rounding the product to
    # the model's dtype. quantbench's offset *is* that term: stored exactly after packing, so
    # the kernel reconstructs the weights quantbench chose, bit for bit.
    zero = -(offset.float() / scale.float())
    layer = A16Wn(device=device, dtype=dtype).from_weights(
        formats.int4_codes(packed), scale, zero, 4, packed.group, bias)
    if layer.W_group_mode != 4 or tuple(layer.zeros.shape) != (offset.shape[1], out_features):
        raise RuntimeError(f"gemlite packed int4 as W_group_mode {layer.W_group_mode} with zeros "
                           f"{tuple(layer.zeros.shape)}: this gemlite's layout is not the one "
                           "quantbench writes its offsets in")
    layer.zeros.data = offset.to(dtype).t().contiguous()
    return layer


# What this process's gemlite picks came from, for the record (set by use_saved_picks).
_picks: dict = {}


def picks_path(device_name: str):
    import importlib.metadata

    import triton

    from quantbench.kernels.tuning import file_safe
    from quantbench.models import cache_dir

    version = importlib.metadata.version("gemlite")
    return (cache_dir() / "kernels" /
            f"gemlite{version}-{file_safe(device_name)}-triton{triton.__version__}.json")


def use_saved_picks(device) -> dict:
    """Load the launch configs gemlite tuned on this GPU model in earlier processes, and save
    this process's at its exit. gemlite times its candidates on each shape's first call: without
    this every cell is a new draw of kernels, and a baseline's repeat or a resumed sweep would
    measure other kernels than the first cell did (as inductor's tuning did, see
    docs/results/2026-11-29-h200-tuning-reuse.md). It ships picks for some GPUs (h100.json),
    none for the H200."""
    if _picks:
        return _picks
    import atexit

    import gemlite.core as core

    name = torch.cuda.get_device_name(device)
    path = picks_path(name)
    loaded = path.exists() and core.GemLiteLinearTriton.load_config(str(path), print_error=False)
    saved = sum(len(v) for v in json.loads(path.read_text()).values()) if loaded else 0
    shipped = core.selected_tag
    _picks.update(file=str(path), saved_picks=saved, source=(
        "saved by earlier processes on this GPU model; a shape not among them is tuned on its "
        "first call" if loaded else
        f"gemlite's shipped config ({shipped.rsplit('/', 1)[-1]}), tuned where missing" if shipped
        else "tuned in this process (each shape's first call)"))
    atexit.register(_save_picks, path)
    return _picks


def _save_picks(path) -> None:
    import os
    import shutil

    from gemlite.core import GemLiteLinearTriton

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    if path.exists():  # cache_config merges into what the file holds
        shutil.copyfile(path, tmp)
    try:
        GemLiteLinearTriton.cache_config(str(tmp))
        os.replace(tmp, path)  # whole or not at all: cells on other GPUs save too
    except OSError:
        pass  # a cache that cannot be written costs only a new tuning next time


def _use_output_ring() -> None:
    """gemlite's split-K GEMVs add their partial sums into a zeroed output with atomics. By
    default each call zeroes a fresh one (a kernel per layer per token: 64 of the 1B int4
    step's 311 on an H100, docs/results/2026-12-06-gemlite.md). With its kernel cache on, a
    one-row call takes the next slot of a ring of outputs per width, zeroed once per trip round
    the ring; under CUDA-graph capture the ring restarts, so a replayed step zeroes each width's
    ring once and every layer writes its own slot. The compiled runtime's graph check holds the
    graph's tokens to the step's run without it, as for every scheme."""
    import gemlite

    gemlite.set_kernel_caching(True)


def replace_linears(model, fmt: str, group: int, skip: tuple[str, ...]) -> int:
    """Swap every nn.Linear not named in `skip` for gemlite's layer, this GPU model's saved
    launch configs loaded first (kernels.layers.replace_linears). Returns how many swapped."""
    from quantbench.kernels import layers

    use_saved_picks(next(model.parameters()).device)
    _use_output_ring()
    swapped = layers.replace_linears(model, lambda linear: from_linear(linear, fmt, group), skip)
    torch.cuda.empty_cache()
    return swapped


def launch_record(model, batch: int) -> dict | None:
    """What the cell's record says of gemlite: its version, how many layers it runs, and the
    kernel it dispatches to at a decode step's rows and at the prefill's."""
    try:
        from gemlite.core import GemLiteLinearTriton, get_matmul_type
    except ImportError:
        return None
    layers = [m for m in model.modules() if isinstance(m, GemLiteLinearTriton)]
    if not layers:
        return None
    import importlib.metadata

    from gemlite.triton_kernels.config import KERNEL_CACHE

    bits = sorted({int(m.W_nbits) for m in layers})
    return {"library": "gemlite", "version": importlib.metadata.version("gemlite"),
            "path": _KERNEL_DOC, "layers": len(layers),
            "output_ring": ({"slots": KERNEL_CACHE.CACHE_SIZE, "rows": 1}
                            if KERNEL_CACHE.ENABLE else None),
            "decode_kernel": {f"{b}-bit": get_matmul_type(batch, b) for b in bits},
            "launch_configs": dict(_picks) or None}
