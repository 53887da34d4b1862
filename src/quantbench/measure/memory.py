"""Bytes the model really holds, and peak process / device memory."""

from __future__ import annotations

from quantbench.devices import open_nvml

import os
import resource
from pathlib import Path


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
    """Logical parameters (as in the float model), whatever their storage: bitsandbytes keeps
    the float shape in quant_state, HQQ in each layer's meta dict (its W_q is packed)."""
    total = 0
    counted: set[int] = set()
    for module in model.modules():
        meta = getattr(module, "meta", None)
        shape = meta.get("shape") if isinstance(meta, dict) else None
        if shape is not None:
            n = 1
            for d in shape:
                n *= int(d)
            total += n
            for p in module.parameters(recurse=False):
                if getattr(module, "bias", None) is p:
                    total += p.numel()
                counted.add(id(p))
    for p in model.parameters():
        if id(p) in counted:
            continue
        counted.add(id(p))
        state = getattr(p, "quant_state", None)
        if state is not None and getattr(state, "shape", None) is not None:
            n = 1
            for d in state.shape:
                n *= d
            total += n
        else:
            total += p.numel()
    return total


def table_facts(model) -> dict:
    """Storage dtype, parameters and bytes of the input embedding and the output head: the
    two tables most schemes leave alone, which bound what a quantized model can save."""
    out = {}
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    emb_weight = getattr(embedding, "weight", None)
    for name, module in (("embedding", embedding), ("lm_head", head)):
        weight = getattr(module, "weight", None)
        if weight is None:  # HQQLinear keeps W_q and a meta dict instead of a weight
            held = [t for t in module.parameters(recurse=False)]
            meta = getattr(module, "meta", None)
            extra = [v for v in meta.values() if _is_tensor(v)] if isinstance(meta, dict) else []
            seen: set = set()
            out[name] = ({"dtype": str(held[0].dtype).replace("torch.", ""),
                          "type": type(module).__name__,
                          "bytes": sum(tensor_bytes(t, seen) for t in held + extra)}
                         if held else None)
            continue
        inner = weight
        if hasattr(weight, "__tensor_flatten__") and type(weight) not in (_torch().Tensor,
                                                                          _torch().nn.Parameter):
            names, _ = weight.__tensor_flatten__()
            inner = getattr(weight, names[0])
        out[name] = {"dtype": str(inner.dtype).replace("torch.", ""),
                     "type": type(module).__name__,
                     "bytes": tensor_bytes(weight, set())}
    if out.get("lm_head") and emb_weight is not None:
        head_weight = getattr(head, "weight", None)
        out["lm_head"]["tied"] = bool(head_weight is not None and (
            head_weight is emb_weight or head_weight.data_ptr() == emb_weight.data_ptr()))
    config = getattr(model, "config", None)
    vocab, hidden = getattr(config, "vocab_size", None), getattr(config, "hidden_size", None)
    if vocab and hidden:
        for part in ("embedding", "lm_head"):
            if out.get(part):
                out[part]["parameters"] = int(vocab) * int(hidden)
    return out


def _torch():
    import torch

    return torch


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


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


_CODE_SUFFIXES = (".so", ".pyd")


def mapped_data_file_bytes() -> int | None:
    """Resident pages of memory-mapped files that are data, not code: a checkpoint left mapped
    (safetensors, GGUF, a cached .npy). Shared libraries are file-backed too (torch's alone is
    ~100 MB resident), so RssFile by itself cannot tell a leftover checkpoint from code."""
    total, current = 0, None
    try:
        with open("/proc/self/smaps") as fh:
            for line in fh:
                head = line.split(None, 6)
                if "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's header
                    path = head[5].strip() if len(head) > 5 else ""
                    is_code = not path.startswith("/") or ".so" in Path(path).name or \
                        path.endswith(_CODE_SUFFIXES) or os.access(path, os.X_OK)
                    current = None if is_code else path
                elif current and line.startswith("Rss:"):
                    total += int(head[1]) * 1024
    except OSError:
        return None
    return total


def rss_parts() -> dict:
    """Resident memory split by kind: anonymous (what the process allocated: weights copied
    out of the file, activations), file-backed (shared libraries and mapped files, pages the
    kernel can drop and share), and of that the mapped data files (a checkpoint)."""
    return {"rss": _status_kib("VmRSS") or current_rss_bytes(), "anon": _status_kib("RssAnon"),
            "file": _status_kib("RssFile"), "data_file": mapped_data_file_bytes()}


def reset_peak_rss_checked() -> dict:
    """Reset the high-water mark and check that it took: right after a reset the peak must be
    close to the current resident set. Where it is not, the peak covers the whole process
    and every report says so."""
    done = reset_peak_rss()
    peak, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    reliable = bool(done and peak is not None and rss is not None and
                    peak <= rss * 1.02 + (4 << 20))
    return {"reset": done, "peak_after_reset_bytes": peak, "rss_at_reset_bytes": rss,
            "reliable": reliable}


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


def nvml_process_bytes(index: int, pid: int) -> int | None:
    """Device memory NVML attributes to one process (llama.cpp's allocations are invisible to
    torch); None where NVML cannot say (no driver, or a container that hides process ids)."""
    try:
        pynvml, handle = open_nvml(index)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid and proc.usedGpuMemory is not None:
                return int(proc.usedGpuMemory)
    except Exception:
        return None
    return None


def nvml_used_bytes(index: int) -> int | None:
    try:
        pynvml, handle = open_nvml(index)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # no driver, no library (CPU machines), or no permission
        return None


def weight_kinds(model) -> dict:
    """How many layers hold their weight in which form, "Linear/IntxUnpackedToInt8Tensor": 210:
    what a scheme really stored (two schemes with the same kinds run the same kernels), and
    which layers it left in float."""
    torch = _torch()
    kinds: dict = {}
    for module in model.modules():
        weight = module.__dict__.get("_parameters", {}).get("weight")
        if weight is None and type(module).__name__ in ("HQQLinear", "GemLiteLinearTriton"):
            weight = getattr(module, "W_q", None)
        if weight is None or isinstance(module, torch.nn.Embedding):
            continue
        if "norm" in type(module).__name__.lower():
            continue
        data = weight.data if type(weight) is torch.nn.Parameter else weight
        key = f"{type(module).__name__}/{type(data).__name__}"
        if type(data) is torch.Tensor:
            key += f"[{str(data.dtype).replace('torch.', '')}]"
        kinds[key] = kinds.get(key, 0) + 1
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))
