"""Write a Llama-family HF model (Llama, Qwen2) as an F32 GGUF that llama.cpp loads.

Tensor names come from the `gguf` package's maps; the Q/K row permutation and the metadata keys
follow llama.cpp's convert_hf_to_gguf.py. quantbench gives llama.cpp token ids, never text, so the
vocabulary only has to load: it is copied from the source GGUF when there is one, built from
tokenizer.json otherwise, and made of placeholders for random-weight models.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

ARCHES = {"llama": "LLAMA", "qwen2": "QWEN2"}


class ExportError(RuntimeError):
    pass


def _rope_parameters(config) -> dict:
    """transformers >= 5 keeps rope settings in `rope_parameters`; older ones in rope_theta/rope_scaling."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    scaling = getattr(config, "rope_scaling", None) or {}
    params = {**scaling, **params}
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return params


def _permute(weights, n_head: int):
    """HF stores Q/K rows for rotate-half RoPE; llama.cpp's LLAMA graph wants them interleaved."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _llama3_rope_factors(config, head_dim: int, rope: dict):
    import numpy as np

    base = rope.get("rope_theta", 10000.0)
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _copy_tokenizer(writer, source: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(source)
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)


def _hf_tokenizer(writer, model_dir: Path, vocab_size: int) -> bool:
    import gguf

    path = model_dir / "tokenizer.json"
    if not path.exists():
        return False
    data = json.loads(path.read_text())
    if data.get("model", {}).get("type") != "BPE":
        return False
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    special = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
    vocab.update(special)
    by_id = {i: tok for tok, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        tok = by_id.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(tok)
            types.append(gguf.TokenType.CONTROL if tok in special else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    return True


def _placeholder_tokenizer(writer, vocab_size: int) -> None:
    import gguf

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([f"<t{i}>" for i in range(vocab_size)])
    writer.add_token_types([gguf.TokenType.NORMAL] * vocab_size)
    writer.add_token_merges(["<t 0>"])  # llama.cpp refuses a BPE vocabulary without merges


def export_f32(model, target: Path, model_dir: str | None = None,
               source_gguf: str | None = None) -> dict:
    """Write `model` (an HF causal LM, fp32, on the CPU) to `target` atomically; returns facts."""
    import gguf
    import numpy as np
    import torch

    config = model.config
    arch_name = ARCHES.get(config.model_type)
    if arch_name is None:
        raise ExportError(f"GGUF export supports {', '.join(ARCHES)} models, not "
                          f"'{config.model_type}'")
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    n_layer = config.num_hidden_layers
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    rope = _rope_parameters(config)
    names = gguf.get_tensor_name_map(arch, n_layer)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(getattr(config, "_name_or_path", "") or "quantbench-export")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if config.bos_token_id is not None:
        writer.add_bos_token_id(int(config.bos_token_id))
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
    if eos is not None:
        writer.add_eos_token_id(int(eos))
    if source_gguf:
        _copy_tokenizer(writer, Path(source_gguf))
    elif not (model_dir and _hf_tokenizer(writer, Path(model_dir), config.vocab_size)):
        _placeholder_tokenizer(writer, config.vocab_size)

    rope_type = rope.get("rope_type") or rope.get("type")
    tensors = []
    if arch_name == "LLAMA" and rope_type == "llama3":
        tensors.append((gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                        _llama3_rope_factors(config, head_dim, rope)))
    elif rope_type not in (None, "default"):
        raise ExportError(f"RoPE type '{rope_type}' is not exported to GGUF by quantbench")
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp falls back to token_embd for the output
        if "rotary_emb" in name:
            continue
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ExportError(f"no GGUF name for tensor '{name}'")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if arch_name == "LLAMA" and name.endswith("q_proj.weight"):
            data = _permute(data, n_head)
        elif arch_name == "LLAMA" and name.endswith("k_proj.weight"):
            data = _permute(data, n_kv)
        tensors.append((mapped, np.ascontiguousarray(data)))
    try:
        for name, data in tensors:
            writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"tensors": len(tensors), "bytes": target.stat().st_size}
