"""Bytes the model really holds, and peak process / device memory."""

from __future__ import annotations

import os
import resource


def tensor_bytes(t, seen: set) -> int:
    """Bytes of a tensor, looking inside tensor subclasses (torchao) and bitsandbytes'
    quantization state, counting each storage once (tied weights)."""
    import torch

    if t is None:
        return 0
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = t.__tensor_flatten__()
        total = sum(tensor_bytes(getattr(t, name, None), seen) for name in names)
    else:
        key = (t.device.type, t.untyped_storage().data_ptr()) if t.numel() else None
        if key is not None and key in seen:
            return 0
        if key is not None:
            seen.add(key)
        total = t.numel() * t.element_size()
    # bitsandbytes keeps scales beside the packed data: Params4bit.quant_state, Int8Params.SCB
    state = getattr(t, "quant_state", None)
    if state is not None:
        total += _quant_state_bytes(state, seen)
    scb = getattr(t, "SCB", None)
    if isinstance(scb, torch.Tensor):
        total += tensor_bytes(scb, seen)
    return total


def _quant_state_bytes(state, seen: set) -> int:
    import torch

    total = 0
    for attr in ("absmax", "code", "offset"):
        value = getattr(state, attr, None)
        if isinstance(value, torch.Tensor):
            total += tensor_bytes(value, seen)
    nested = getattr(state, "state2", None)
    if nested is not None:
        total += _quant_state_bytes(nested, seen)
    return total


def weight_bytes(model) -> int:
    """Parameters and buffers as held (not `get_memory_footprint`, which misreads subclasses)."""
    seen: set = set()
    total = 0
    for p in model.parameters():
        total += tensor_bytes(p, seen)
    for name, b in model.named_buffers():
        # Rotary inv_freq and similar buffers are part of the footprint too.
        total += tensor_bytes(b, seen)
    for module in model.modules():
        # HQQ keeps each layer's scales and zero-points in a plain dict, not as buffers.
        meta = getattr(module, "meta", None)
        if isinstance(meta, dict):
            total += sum(tensor_bytes(v, seen) for v in meta.values() if _is_tensor(v))
    return total


def unread_embedding_bytes(model) -> int:
    """Bytes of an input embedding table not shared with the output head: a decode step reads
    one row of it, not the table, so the roofline leaves it out of the bytes per token."""
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    weight = getattr(embedding, "weight", None)
    if weight is None:
        return 0
    if head is not None and getattr(head, "weight", None) is not None:
        if head.weight is weight or head.weight.data_ptr() == weight.data_ptr():
            return 0  # tied: the head reads the whole table every step
    return tensor_bytes(weight, set())


def _is_tensor(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def parameter_count(model) -> int:
    """Logical parameters (as in the float model), whatever their storage."""
    total = 0
    for p in model.parameters():
        shape = getattr(p, "quant_state", None)
        if shape is not None and getattr(shape, "shape", None) is not None:
            n = 1
            for d in shape.shape:
                n *= d
            total += n
        else:
            total += p.numel()
    return total


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS, so that RSS after quantizing counts what the
    model holds, not the float weights the quantizer dropped (glibc keeps them otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process (Linux >= 4.0) so that the peak
    measured afterwards excludes loading; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """VmHWM of this process: the peak resident set since start or the last reset."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


def nvml_used_bytes(index: int) -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # no driver, no library (CPU machines), or no permission
        return None
