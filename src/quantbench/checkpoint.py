"""`quantbench quantize`: a scheme applied once and written as a Hugging Face checkpoint
(safetensors + a `quantization_config` transformers reads back), so that what was measured can be
shipped, and a shipped checkpoint measured as it is (`--model DIR --baseline-model SPEC`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from quantbench.errors import UsageError

# What transformers can write and read back as safetensors today: torchao's tensors (flattened
# by torchao.prototype.safetensors). bitsandbytes, quanto and HQQ modules are quantbench's own
# swaps, not transformers' quantizers, so their state dicts would not load as shipped.
WRITABLE_BACKENDS = ("torchao",)


def quantize(model_spec: str, scheme_name: str, out: str, device: str = "cpu",
             progress=print) -> dict:
    from quantbench import models
    from quantbench.schemes import get as get_scheme
    from quantbench.schemes.registry import torch_dtype

    scheme = get_scheme(scheme_name)
    if scheme.backend not in WRITABLE_BACKENDS or scheme.bits >= 16:
        writable = ", ".join(s for s in _writable_names())
        raise UsageError(f"'{scheme.name}' cannot be written as a checkpoint transformers loads "
                         f"back: choose one of {writable}")
    target = Path(out).expanduser()
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"--out '{target}' exists and is not empty: quantbench never overwrites "
                         "a checkpoint; pick a new folder or remove it")
    if scheme.kv != "auto":
        raise UsageError(f"'{scheme.name}': a KV-cache format is chosen when the model runs, not "
                         "stored in a checkpoint: quantize without ':kv=' and measure the "
                         "checkpoint with --kv-cache")
    device_type = device.split(":")[0]
    ok, why = scheme.availability(device_type)
    if not ok:
        raise UsageError(f"scheme '{scheme.name}' cannot run on {device_type} here: {why}")
    resolved = models.resolve(model_spec)
    if resolved.kind != "hf_dir" and not resolved.random_weights:
        raise UsageError(f"'{model_spec}' cannot be quantized into a checkpoint: pass a local "
                         "Hugging Face directory, the default model or a random preset")
    calibration = None
    tokenizer = None if resolved.random_weights else models.load_tokenizer(resolved)
    if scheme.calibrated:
        from quantbench.calibration import data

        calibration = data.for_model(resolved, tokenizer, scheme.samples, scheme.length)
    dtype = torch_dtype(scheme.compute_dtype(device_type))
    progress(f"loading {resolved.name} in {str(dtype).replace('torch.', '')} on {device}")
    model = models.load(resolved.to_dict(), dtype, device)
    progress(f"quantizing with {scheme.name}")
    start = time.perf_counter()
    info: dict = {}
    model = scheme.quantize(model, device, calibration, info,
                            progress=lambda i, n: progress(f"calibrated layer {i}/{n}")
                            if i == n or i % 8 == 0 else None)
    quantize_s = time.perf_counter() - start
    _describe(model, scheme, device_type)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    if tokenizer is not None:
        tokenizer.save_pretrained(target)
    provenance = {"scheme": scheme.name, "scheme_settings": scheme.settings(device_type),
                  "source_model": {"spec": resolved.spec, "fingerprint": resolved.fingerprint,
                                   "name": resolved.name},
                  "device": device, "quantize_s": quantize_s, "calibration": info or None,
                  "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (target / "quantbench.json").write_text(json.dumps(provenance, indent=2) + "\n")
    from quantbench.measure.memory import weight_bytes

    provenance["weights_bytes"] = weight_bytes(model)
    provenance["files"] = sorted(p.name for p in target.iterdir())
    return provenance


def _describe(model, scheme, device_type: str) -> None:
    """Say in transformers' terms what the weights are, so that from_pretrained loads them as
    they are (pre-quantized) instead of as floats."""
    from transformers import TorchAoConfig
    from transformers.quantizers.auto import AutoHfQuantizer

    from quantbench.schemes.torchao_schemes import Int4WeightOnly, _compiler_untouched

    if scheme.calibrated:  # GPTQ/AWQ values in the RTN layout of the same group
        layout = Int4WeightOnly("layout", "torchao", 4, ("cpu", "cuda"),
                                group=scheme.group_size(device_type)).config(device_type)
    else:
        layout = scheme.config(device_type)
    config = TorchAoConfig(quant_type=_compiler_untouched(layout),
                           modules_to_not_convert=list(scheme.skipped()) or None)
    model.config.quantization_config = config
    model.hf_quantizer = AutoHfQuantizer.from_config(config, pre_quantized=False)


def _writable_names() -> list[str]:
    from quantbench.schemes.registry import all_schemes

    return [s.name for s in all_schemes() if s.backend in WRITABLE_BACKENDS and s.bits < 16]
