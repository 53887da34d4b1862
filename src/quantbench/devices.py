"""Which device a spec names (auto, cpu, cuda, cuda:N), checked against what is here."""

from __future__ import annotations

from quantbench.errors import UsageError


def _device_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(int(device.split(":")[1]))


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
