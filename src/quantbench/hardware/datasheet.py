"""Datasheet figures of common GPUs (dense, no sparsity): for context beside what quantbench
measures, never instead of it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPUSpec:
    name: str
    match: tuple[str, ...]  # substrings of the torch/NVML device name, all required
    memory_bandwidth_gbs: float  # GB/s
    bf16_tflops: float | None  # dense tensor-core bf16 (fp16 where bf16 is absent: T4, V100)
    note: str = ""


GPUS = (
    GPUSpec("NVIDIA T4", ("T4",), 320, 65, "fp16 (no bf16)"),
    GPUSpec("NVIDIA V100", ("V100",), 900, 125, "fp16 (no bf16)"),
    # Longer names first: "A10" is in "A100", "L4" in "L40S".
    GPUSpec("NVIDIA A100 40GB", ("A100", "40GB"), 1555, 312),
    GPUSpec("NVIDIA A100 80GB", ("A100", "80GB"), 2039, 312),
    GPUSpec("NVIDIA A10", ("A10",), 600, 125),
    GPUSpec("NVIDIA L40S", ("L40S",), 864, 362),
    GPUSpec("NVIDIA L4", ("L4",), 300, 121),
    GPUSpec("NVIDIA RTX 4090", ("4090",), 1008, 165),
    GPUSpec("NVIDIA H100 PCIe", ("H100", "PCIe"), 2000, 756),
    GPUSpec("NVIDIA H100 SXM", ("H100",), 3350, 989),
    GPUSpec("NVIDIA H200", ("H200",), 4800, 989),
)


def lookup(device_name: str) -> GPUSpec | None:
    name = device_name or ""
    for spec in GPUS:  # more specific entries come first where names overlap
        if all(part in name for part in spec.match):
            return spec
    return None
