"""The torch side of the KV-cache formats: the cache object a decode starts with, an fp8 static
cache the compiled runtime can capture, and the bytes a cache holds."""

from __future__ import annotations

from quantbench.kvcache.formats import KVFormat

FP8_MAX = 448.0  # largest finite float8 e4m3fn


def _has_native_fp8() -> bool:
    """transformers >= 5.2x ships an fp8 backend; 5.17 (the GPU image) does not."""
    import transformers.cache_utils as cache_utils

    return hasattr(cache_utils, "Fp8QuantizedLayer")


def eager_cache(fmt: KVFormat, config):
    """A fresh cache for one generation or one scored window; None for the runtime's own."""
    if fmt.native:
        return None
    from transformers.cache_utils import Cache, QuantizedCache

    if fmt.eager_backend == "fp8":
        if _has_native_fp8():
            return QuantizedCache("fp8", config)
        layers = config.get_text_config(decoder=True).num_hidden_layers
        return Cache(layers=[Fp8DynamicLayer() for _ in range(layers)])
    return QuantizedCache(fmt.eager_backend, config, nbits=fmt.nbits, q_group_size=fmt.group,
                          residual_length=fmt.residual)


def eager_implementation(fmt: KVFormat) -> str:
    if fmt.native:
        return "transformers DynamicCache"
    if fmt.eager_backend == "fp8":
        return ("transformers QuantizedCache(backend='fp8')" if _has_native_fp8() else
                "quantbench Fp8DynamicLayer (transformers' fp8 cache, for versions without it)")
    return f"transformers QuantizedCache(backend='{fmt.eager_backend}', nbits={fmt.nbits})"


def _fp8_scale(tensor):
    import torch

    # clamp: an all-zero tensor would give a zero scale
    return (tensor.abs().amax().float() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)


def _to_fp8(tensor, scale):
    import torch

    return (tensor.float() / scale).to(torch.float8_e4m3fn)


from transformers.cache_utils import DynamicLayer, StaticLayer  # noqa: E402  (runtimes import this lazily)


class Fp8DynamicLayer(DynamicLayer):
    """transformers 5.2x's fp8 cache layer, for transformers without it: K and V stored in e4m3
    with a per-tensor scale fixed at the first update (the prefill), which that update itself
    attends to exactly; every later position is stored and read back in fp8."""

    def __init__(self):
        super().__init__()
        self.cumulative_length = 0
        self._quantized_keys = self._quantized_values = None

    def update(self, key_states, value_states, *args, **kwargs):
        import torch

        self.cumulative_length += key_states.shape[-2]
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._quantized_keys = (_to_fp8(key_states, s := _fp8_scale(key_states)), s)
            self._quantized_values = (_to_fp8(value_states, t := _fp8_scale(value_states)), t)
            return key_states, value_states
        (keys, k_scale), (values, v_scale) = self._quantized_keys, self._quantized_values
        self._quantized_keys = (torch.cat([keys, _to_fp8(key_states, k_scale)], dim=-2), k_scale)
        self._quantized_values = (torch.cat([values, _to_fp8(value_states, v_scale)], dim=-2),
                                  v_scale)
        dtype = key_states.dtype
        return ((self._quantized_keys[0].float() * k_scale).to(dtype),
                (self._quantized_values[0].float() * v_scale).to(dtype))

    def get_seq_length(self) -> int:
        return self.cumulative_length


class Fp8StaticLayer(StaticLayer):
    """A static cache layer in float8 e4m3 for the compiled runtime: fixed buffers (CUDA graphs
    replay them), one scale per layer's K and V, set by each prefill (which runs eager) and
    read by the captured decode steps. Attention runs in the compute dtype on the dequantized
    buffer: the cache holds half the bytes of bf16, the step still reads it all."""

    def lazy_initialization(self, key_states, value_states) -> None:
        import torch

        dtype = key_states.dtype
        super().lazy_initialization(key_states, value_states)
        self.compute_dtype = dtype
        self.keys = self.keys.to(torch.float8_e4m3fn)
        self.values = self.values.to(torch.float8_e4m3fn)
        self.k_scale = torch.ones((), dtype=torch.float32, device=self.device)
        self.v_scale = torch.ones((), dtype=torch.float32, device=self.device)
        if not torch.compiler.is_compiling():
            for tensor in (self.keys, self.values, self.k_scale, self.v_scale):
                torch._dynamo.mark_static_address(tensor)

    def update(self, key_states, value_states, *args, **kwargs):
        import torch

        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = key_states.shape[-2]
        if length > 1 and not torch.compiler.is_compiling():  # a prefill: set the scales
            self.k_scale.copy_(_fp8_scale(key_states))
            self.v_scale.copy_(_fp8_scale(value_states))
        position = torch.arange(length, device=self.device) + self.cumulative_length
        self.cumulative_length.add_(length)
        # As bytes: index_copy_ has no float8 kernel (CPU at least); the bits are the same.
        self.keys.view(torch.uint8).index_copy_(
            2, position, _to_fp8(key_states, self.k_scale).view(torch.uint8))
        self.values.view(torch.uint8).index_copy_(
            2, position, _to_fp8(value_states, self.v_scale).view(torch.uint8))
        return ((self.keys.float() * self.k_scale).to(self.compute_dtype),
                (self.values.float() * self.v_scale).to(self.compute_dtype))


def static_cache(fmt: KVFormat, config, max_cache_len: int):
    """The compiled runtime's cache: transformers' StaticCache, or the fp8 one."""
    from transformers import StaticCache
    from transformers.cache_utils import Cache

    if fmt.native:
        return StaticCache(config=config, max_cache_len=max_cache_len)
    layers = config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[Fp8StaticLayer(max_cache_len) for _ in range(layers)])


def stored_bytes(cache) -> int | None:
    """Bytes the cache holds for its keys and values, scales, zero points and full-precision
    residual included (quanto's and HQQ's packed tensors, fp8 tuples, HQQ's meta dicts)."""
    from quantbench.measure.memory import tensor_bytes

    layers = getattr(cache, "layers", None)
    if layers is None:
        return None
    seen: set = set()

    def walk(value) -> int:
        import torch

        if isinstance(value, torch.Tensor):
            return tensor_bytes(value, seen)
        if isinstance(value, (tuple, list)):
            return sum(walk(v) for v in value)
        if isinstance(value, dict):
            return sum(walk(v) for v in value.values())
        return 0

    total = 0
    for layer in layers:
        for name in ("keys", "values", "_quantized_keys", "_quantized_values", "k_scale",
                     "v_scale"):
            total += walk(getattr(layer, name, None))
    return total
