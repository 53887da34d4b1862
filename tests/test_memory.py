"""Weight bytes are counted from the tensors actually held, for every storage kind."""

import pytest
import torch

from quantbench import models
from quantbench.measure.memory import weight_bytes
from quantbench.schemes import get

TINY = {"kind": "random", "preset": "tiny"}


def _float_linear_params(model):
    return sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head"))


def test_float_models_count_every_tensor_once():
    model = models.load(TINY, torch.float32, "cpu")
    # Tied embeddings are one tensor: counted once.
    unique = {p.data_ptr(): p.numel() * 4 for p in model.parameters()}
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert weight_bytes(model) == sum(unique.values()) + buffers
    half = models.load(TINY, torch.bfloat16, "cpu")
    assert weight_bytes(half) == pytest.approx(weight_bytes(model) / 2, rel=0.01)


@pytest.mark.parametrize("scheme,bytes_per_weight,tolerance", [
    ("torchao-int8wo", 1.0, 0.1),   # int8 + a per-row scale
    ("torchao-int4wo", 1.0, 0.2),   # CPU: int4 values kept in int8 bytes + group scales
    ("bnb-int8", 1.0, 0.1),         # int8 + SCB row statistics
    ("bnb-nf4", 0.5, 0.1),          # two weights a byte + absmax per 64
    ("bnb-nf4-dq", 0.5, 0.1),
    ("bnb-fp4", 0.5, 0.1),
    ("torchao-int8dq", 1.0, 0.1),
    ("quanto-int8", 1.0, 0.1),
    ("quanto-int4", 0.5, 0.15),
    ("hqq-int8", 1.0, 0.1),         # + fp32 scale and zero-point per group of 64
    ("hqq-int4", 0.5, 0.1),
])
def test_quantized_linears_hold_what_their_format_says(scheme, bytes_per_weight, tolerance):
    float_model = models.load(TINY, torch.float32, "cpu")
    n_linear = _float_linear_params(float_model)
    float_bytes = weight_bytes(float_model)
    model = get(scheme).apply(models.load(TINY, torch.float32, "cpu"), "cpu")
    saved = float_bytes - weight_bytes(model)
    # Only the linears changed: they went from 4 bytes a weight to about `bytes_per_weight`.
    assert saved / n_linear == pytest.approx(4 - bytes_per_weight, abs=tolerance * 4)


def test_random_presets_are_initialised_like_transformers_would():
    model = models.load(TINY, torch.float32, "cpu", seed=1)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as the config says
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        if p.ndim >= 2:
            assert p.std().item() == pytest.approx(0.02, rel=0.1), name
        elif "norm" in name:
            assert (p == 1).all(), name
    again = models.load(TINY, torch.float32, "cpu", seed=1)
    assert torch.equal(again.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)


def test_an_untied_embedding_table_is_left_out_of_the_bytes_a_token_reads():
    from transformers import LlamaConfig, LlamaForCausalLM

    from quantbench.analysis import _unread_from_config
    from quantbench.measure.memory import unread_embedding_bytes

    tied = models.load({"kind": "random", "preset": "tiny"}, torch.float32, "cpu", seed=0)
    assert unread_embedding_bytes(tied) == 0  # the head reads the whole table each step
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                         tie_word_embeddings=False)
    untied = LlamaForCausalLM(config).to(torch.bfloat16)
    assert unread_embedding_bytes(untied) == 300 * 64 * 2
    # Cells stored before workers recorded it: derived from the preset's config.
    assert _unread_from_config({"model": {"kind": "random", "preset": "llama-3.1-8b"},
                                "scheme_settings": {"compute_dtype": "bfloat16"}}) == 128256 * 4096 * 2
    assert _unread_from_config({"model": {"kind": "random", "preset": "llama-3.2-1b"},
                                "scheme_settings": {"compute_dtype": "bfloat16"}}) == 0
