"""Which device a spec names (auto, cpu, cuda, cuda:N), checked against what is here."""

from __future__ import annotations

from quantbench.errors import UsageError


def _device_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(int(device.split(":")[1]) if ":" in device else 0)


def resolve_device(device: str) -> tuple[str, tuple[int, int] | None]:
    import torch

    device = "auto" if device is None else str(device).strip()
    if not device:
        raise UsageError("--device is empty (an unset shell variable?): use auto, cpu, cuda or cuda:N")
    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = "cuda:0"
    if device == "cpu":
        return device, None
    if device.startswith("cuda:") and device[5:].isdigit():
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA GPU is visible here: use --device cpu")
        index = int(device[5:])
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) here")
        return device, torch.cuda.get_device_capability(index)
    raise UsageError(f"--device '{device}' not understood: use auto, cpu, cuda or cuda:N")


_NVML_READY = False


def open_nvml(index: int | None = None):
    """pynvml, initialised once a process, and NVML's handle for torch's cuda:`index` (None
    without an index). Raises where NVML is absent or not permitted: each caller records what
    it then could not learn."""
    global _NVML_READY
    import pynvml

    if not _NVML_READY:
        pynvml.nvmlInit()
        _NVML_READY = True
    return pynvml, (None if index is None else nvml_handle(pynvml, index))


def nvml_handle(pynvml, index: int):
    """NVML's handle for torch's cuda:`index`. NVML numbers GPUs by PCI bus and ignores
    CUDA_VISIBLE_DEVICES, CUDA by speed and the mask: the UUID is the one name both share (a
    sweep runs each cell with only its GPU visible, where it is always cuda:0)."""
    try:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            text = str(uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith(("GPU-", "MIG-"))
                                                    else "GPU-" + text)
    except Exception:  # no torch CUDA here, or an NVML without UUID lookup
        pass
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:  # NVML counts every GPU of the host; torch the visible ones
        parts = [p.strip() for p in visible.split(",")]
        if index < len(parts) and parts[index].isdigit():
            index = int(parts[index])
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def resolve_pool(device: str) -> tuple[str, tuple[int, int] | None, list[str]]:
    """(the device as cells name it, its capability, the devices that may measure them).

    On a machine with several GPUs of one model, `cuda` and `auto` name all of them: the cells
    say `cuda` (which of the identical cards measured one is recorded, not part of what it is)
    and the executor places each comparison on a free one. Anywhere else as resolve_device."""
    import torch

    spec = "auto" if device is None else str(device).strip()
    if spec in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        if len(names) == 1:
            return ("cuda", torch.cuda.get_device_capability(0),
                    [f"cuda:{i}" for i in range(torch.cuda.device_count())])
    resolved, capability = resolve_device(spec)
    return resolved, capability, [resolved]


def visible_mask(device: str) -> str | None:
    """CUDA_VISIBLE_DEVICES for a worker that should see only `device` (then as cuda:0), or
    None where nothing needs hiding (the CPU, or a machine with one GPU). Hiding the others
    keeps libraries that spread over every visible GPU (llama.cpp) on the cell's own."""
    import os

    if not device.startswith("cuda:"):
        return None
    import torch

    if torch.cuda.device_count() <= 1:
        return None
    index = int(device.split(":")[1])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        parts = [p.strip() for p in visible.split(",")]
        return parts[index]
    return str(index)
