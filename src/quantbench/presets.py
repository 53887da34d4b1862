"""Random-weight architectures: valid for speed and memory, never for quality."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    model_type: str  # "llama" or "qwen2"
    config: dict
    description: str

    @property
    def max_context(self) -> int:
        return self.config["max_position_embeddings"]

    @property
    def vocab_size(self) -> int:
        return self.config["vocab_size"]

    def approx_params(self) -> int:
        c = self.config
        h, inter, layers, vocab = (c["hidden_size"], c["intermediate_size"],
                                   c["num_hidden_layers"], c["vocab_size"])
        head_dim = h // c["num_attention_heads"]
        kv = c["num_key_value_heads"] * head_dim
        per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter + 2 * h
        embed = vocab * h * (1 if c.get("tie_word_embeddings") else 2)
        return layers * per_layer + embed + h


def _llama(hidden, inter, layers, heads, kv_heads, vocab, ctx, tie):
    return dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                max_position_embeddings=ctx, tie_word_embeddings=tie)


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("tiny", "llama", _llama(64, 128, 2, 4, 2, 512, 2048, True),
           "2-layer Llama, ~0.1 M parameters: for tests"),
    Preset("gpt2-124m", "llama", _llama(768, 2048, 12, 12, 12, 50257, 1024, True),
           "GPT-2 / DialoGPT-small size (124 M) in Llama form (a 3-matrix MLP of 2048 holds "
           "what GPT-2's 2 x 3072 does), so every scheme quantizes it"),
    Preset("qwen2-0.5b", "qwen2", _llama(896, 4864, 24, 14, 2, 151936, 32768, True),
           "Qwen2-0.5B shape (~0.5 B)"),
    Preset("llama-3.2-1b", "llama", _llama(2048, 8192, 16, 32, 8, 128256, 131072, True),
           "Llama-3.2-1B shape (~1.2 B)"),
    Preset("llama-3.1-8b", "llama", _llama(4096, 14336, 32, 32, 8, 128256, 131072, False),
           "Llama-3.1-8B shape (~8.0 B)"),
]}


def build_config(preset: Preset):
    if preset.model_type == "qwen2":
        from transformers import Qwen2Config as Config
    else:
        from transformers import LlamaConfig as Config
    return Config(**preset.config)
