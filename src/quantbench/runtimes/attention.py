"""quantbench's decode attention inside a transformers model: registered as an attention
implementation ("quantbench_decode") so no model code is rewritten. A decode step (one query
token, a plain causal mask, no padding) runs quantbench.kernels.attention; everything else (the
prefill, a padded batch, a sliding window) runs transformers' SDPA as before.

The causal mask of a decode step is what the kernel already knows (positions 0..pos), so the
mask function registered with it builds none: that removes the mask's kernels from the step too.
"""

from __future__ import annotations

import torch
from transformers import masking_utils
from transformers.cache_utils import StaticLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from quantbench.kernels import attention

NAME = "quantbench_decode"

# _mask and DecodeAttention.__call__ run inside the traced decode step, so they import nothing:
# torch 2.11's Dynamo refuses an import whose result is not exactly a module ("Bad import
# result"), and transformers' top-level package is a lazy module. torch 2.13 accepts it, so the
# CPU suite alone would not show it (tests/test_attention.py checks the bytecode).


def _mask(*args, q_length=None, attention_mask=None, mask_function=None, **kwargs):
    if (q_length == 1 and attention_mask is None
            and mask_function is masking_utils.causal_mask_function):
        return None  # the kernel masks by position
    return masking_utils.sdpa_mask(*args, q_length=q_length, attention_mask=attention_mask,
                                   mask_function=mask_function, **kwargs)


class DecodeAttention:
    """The attention function; `record` is what the cell's record says of it."""

    def __init__(self, device: str):
        from quantbench.kernels.layers import kernel_runs_on

        self.on_kernel = kernel_runs_on(device)
        self.plans = {}  # (batch, KV heads, cache length) -> attention.Plan
        self.folded_calls = 0
        self.sms = 4  # under the interpreter no GPU to count: 4 stands for its multiprocessors
        if device.startswith("cuda"):
            self.sms = torch.cuda.get_device_properties(device).multi_processor_count
        if self.on_kernel:
            attention.register()
        self.record = {
            "implementation": NAME,
            "decode": ("quantbench Triton decode attention (torch.ops.quantbench.decode_attention):"
                       " reads the positions written so far, one program per KV head's query "
                       "group, the cache split across programs" if self.on_kernel else
                       "reference: quantbench's decode attention in torch math (its Triton "
                       "kernel runs on CUDA devices)"),
            "prefill": "transformers SDPA",
            "launches": {}}

    def __call__(self, module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                 **kwargs):
        pos = kwargs.get("position_ids")
        if query.shape[2] != 1 or attention_mask is not None or dropout:
            return sdpa_attention_forward(module, query, key, value, attention_mask,
                                          dropout=dropout, scaling=scaling, **kwargs)
        if pos is None:  # no mask was built for this step either: SDPA would read every slot
            raise RuntimeError(
                f"quantbench's decode attention needs each step's position_ids, and this "
                f"{type(module).__name__} does not pass them to its attention function: use "
                "--runtime compiled-fused for this model")
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        if not self.on_kernel:
            return attention.reference(query, key, value, pos, scale), None
        chosen = self._plan(key.shape[0], query.shape[1], key.shape[1], key.shape[2],
                            query.shape[-1])
        return attention.decode_attention(query, key, value, pos, scale, chosen), None

    def _plan(self, batch: int, q_heads: int, kv_heads: int, length: int, dim: int):
        """Planned in the eager step the compiled runtime runs before tracing, so the trace
        only looks the plan up (no dataclass built under Dynamo)."""
        chosen = self.plans.get((batch, kv_heads, length))
        if chosen is None:
            chosen = attention.plan(batch, kv_heads, length, self.sms)
            if not torch.compiler.is_compiling():
                self.plans[(batch, kv_heads, length)] = chosen
                self.record["launches"][
                    f"B{batch} Hq{q_heads} Hkv{kv_heads} L{length} D{dim}"] = chosen.short()
        return chosen

    def folded(self, query, key, value, cos, sin, k_cache, v_cache, pos, scale):
        """A decode step from its projections before RoPE: rotate, write the cache, attend."""
        if not torch.compiler.is_compiling():
            self.folded_calls += 1  # eager calls only: what shows the glue took this path
        if not self.on_kernel:
            return attention.reference_folded(query, key, value, cos, sin, k_cache, v_cache,
                                              pos, scale)
        chosen = self._plan(k_cache.shape[0], query.shape[1], k_cache.shape[1],
                            k_cache.shape[2], query.shape[-1])
        return attention.decode_attention_folded(query, key, value, cos, sin, k_cache, v_cache,
                                                 pos, scale, chosen)


# Attention modules whose forward is Llama's (q/k/v/o projections, with or without biases,
# rotate-half RoPE over the whole head, the cache's update, the attention function): only these
# are folded, and not a layer with a sliding window. Others run their own forward, with the
# decode attention above.
FOLDABLE = ("LlamaAttention", "Qwen2Attention")


def _folded_forward(module, function: DecodeAttention, original):
    """`module`'s forward with RoPE and the cache write inside the decode attention kernel, at
    decode steps into a static cache; every other call runs `original`."""

    def forward(hidden_states, position_embeddings=None, attention_mask=None, *args, **kwargs):
        # transformers 5.17 names the cache past_key_values; later versions cache
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        pos = kwargs.get("position_ids")
        layer = getattr(cache, "layers", None)
        layer = layer[module.layer_idx] if layer is not None else None
        if (args or hidden_states.shape[1] != 1 or attention_mask is not None or pos is None
                or position_embeddings is None or type(layer) is not StaticLayer
                or not layer.is_initialized
                or position_embeddings[0].shape[-1] != module.head_dim
                or not isinstance(layer.cumulative_length, torch.Tensor)):
            return original(hidden_states, position_embeddings, attention_mask, *args, **kwargs)
        shape = (*hidden_states.shape[:-1], -1, module.head_dim)
        query = module.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = module.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = module.v_proj(hidden_states).view(shape).transpose(1, 2)
        cos, sin = position_embeddings
        out = function.folded(query, key, value, cos, sin, layer.keys, layer.values, pos,
                              module.scaling)
        layer.cumulative_length.add_(1)  # as the cache's own update counts what it holds
        out = out.reshape(*hidden_states.shape[:-1], -1).contiguous()
        return module.o_proj(out), None

    return forward


def _rope_once(original):
    """A rotary embedding's forward whose decode-step cos/sin are realized once for every
    folded layer (kernels.attention.rope_table); the prefill's are left as they are."""

    def forward(x, position_ids, *args, **kwargs):
        cos, sin = original(x, position_ids, *args, **kwargs)
        if position_ids.shape[-1] != 1:
            return cos, sin
        return attention.rope_table(cos, sin)

    return forward


def _fold(model, function: DecodeAttention) -> dict:
    folded, kept = 0, set()
    for module in model.modules():
        name = type(module).__name__
        if not name.endswith("Attention") or not hasattr(module, "o_proj"):
            continue
        if name not in FOLDABLE or getattr(module, "sliding_window", None):
            kept.add(name if name not in FOLDABLE else f"{name} with a sliding window")
            continue
        module.forward = _folded_forward(module, function, module.forward)
        folded += 1
    record = {"layers": folded}
    if folded:
        record["how"] = ("RoPE of q and of the new key, and the write of the new key and value "
                         "into the static cache, inside the decode attention's split kernel "
                         "(the new token attended from registers)")
        rotaries = [m for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding")]
        if rotaries:
            attention.register()  # before any trace: a traced step finds the operator there
            for rotary in rotaries:
                rotary.forward = _rope_once(rotary.forward)
            record["rope_table"] = ("the step's cos/sin computed once and kept as buffers "
                                    "(torch.ops.quantbench.rope_table) for every folded layer")
    if kept:
        record["not_folded"] = (f"{', '.join(sorted(kept))}: quantbench folds only "
                                f"{', '.join(FOLDABLE)}, without a sliding window")
    return record


def install(model, device: str, fold: bool = False) -> dict:
    """Make `model` attend through quantbench's decode attention; returns the record. `fold`:
    RoPE and the cache write too (Llama-family attention)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    function = DecodeAttention(device)
    if fold:
        function.record["rope_and_cache_write"] = _fold(model, function)
    AttentionInterface.register(NAME, function)
    AttentionMaskInterface.register(NAME, _mask)
    try:
        model.set_attn_implementation(NAME)
    except (AttributeError, ValueError):  # versions that vet the name against their own list
        model.config._attn_implementation_internal = NAME
    if model.config._attn_implementation != NAME:
        raise RuntimeError(f"transformers kept attention {model.config._attn_implementation!r} "
                           f"after {NAME!r} was set")
    return function.record
