"""The compiled runtimes: each decode step torch.compile'd and replayed as one CUDA graph
(runtimes/static_decoder.py), in variants that differ in the compiler's tuning
(runtimes/inductor_setup.py), in fused projections (quantbench.fusion) and in the decode
attention (runtimes/attention.py)."""

from __future__ import annotations

import time

from quantbench.runtimes.base import register
from quantbench.runtimes.eager import EagerRuntime
from quantbench.runtimes.static_decoder import CompiledDecoder


class CompiledRuntime(EagerRuntime):
    name = "compiled"
    kv_formats = ("auto", "fp8")
    description = ("static KV cache, prefill apart, each decode step torch.compile'd and "
                   "replayed as one CUDA graph (checked per cell; on the CPU: compiled, no graph)")

    tuning = "one-direction"
    # Sibling projections fused at load (quantbench.fusion): compiled-fused only, until a
    # same-machine comparison shows it does not slow the bf16 baseline (docs/results,
    # 2026-11-29-h200-speed-of-light.md: on the 1B preset inductor already ran q/k/v as one
    # kernel, and the 8B bf16 figure fused was below an earlier unfused one on another machine).
    fuse = False
    # "sdpa": transformers' attention at every step; "quantbench": its decode attention kernel
    # at decode steps (runtimes/attention.py), SDPA for the prefill.
    attention = "sdpa"
    # With quantbench's attention: RoPE and the cache write inside its kernel too.
    fold_rope = False

    def prepare_model(self, model, scheme):
        if not self.fuse:
            return {"fused": {}, "reason": f"the {self.name} runtime keeps the model's layers apart"}
        if not scheme.fusable:
            return {"fused": {}, "reason": f"{scheme.name} quantizes each layer as the model "
                                           "names it (calibrated or as shipped)"}
        from quantbench.fusion import fuse_projections

        return fuse_projections(model).as_info()

    def install_attention(self, model, device: str, kv) -> dict:
        """quantbench's decode attention in `model`, folded where this runtime folds and the
        KV format allows; returns what the record says of it."""
        from quantbench.runtimes.attention import install

        # the folded kernel writes the model's dtype: a quantized cache keeps its own update
        record = install(model, device, fold=self.fold_rope and kv.native)
        if self.fold_rope and not kv.native:
            record["rope_and_cache_write"] = {
                "layers": 0, "not_folded": f"the {kv.name} KV cache writes its own format"}
        return record

    def decoder(self, model, cell, device, info, eager_generate, progress):
        w = cell.workload
        progress(phase="compile")
        from quantbench import kvcache
        from quantbench.kvcache.layers import stored_bytes
        from quantbench.schemes import get as get_scheme

        kv = kvcache.get(get_scheme(cell.scheme).kv)
        if self.attention == "quantbench":
            info["attention"] = self.install_attention(model, device, kv)
        decoder = CompiledDecoder(model, device, w.batch_size, w.prompt_tokens, w.new_tokens,
                                  tuning=self.tuning, kv=kv)
        start = time.perf_counter()
        info["compiled"] = decoder.prepare(cell.prompt["ids"])
        info["compiled"]["prepare_s"] = time.perf_counter() - start  # never inside the timings
        if self.attention == "sdpa":  # SDPA reads the whole static cache, masked
            info["kv_positions_read"] = decoder.max_cache_len
        held = stored_bytes(decoder.cache)
        if held:  # the static buffers, whole: what each step reads
            info["kv_cache"].update({
                "static": True, "implementation": "transformers StaticCache" if decoder.kv.native
                else "quantbench Fp8StaticLayer", "stored_bytes": held,
                "positions": decoder.max_cache_len, "sequences": w.batch_size,
                "bytes_per_position": held / (w.batch_size * decoder.max_cache_len)})
        return decoder.generate


class FusedRuntime(CompiledRuntime):
    name = "compiled-fused"
    description = ("as compiled, with q/k/v and gate/up fused into one layer each at load "
                   "(one matmul each per step, for every scheme that quantizes per row or group)")
    fuse = True


class QbRuntime(FusedRuntime):
    name = "compiled-qb"
    description = ("as compiled-fused, with quantbench's Triton decode attention at each step "
                   "(reads only the positions written so far, no mask, no K/V copies for "
                   "grouped-query heads); SDPA for the prefill")
    attention = "quantbench"


class QbFoldRuntime(QbRuntime):
    name = "compiled-qb-fold"
    description = ("as compiled-qb, with RoPE and the KV-cache write inside the decode "
                   "attention kernel (Llama and Qwen2 attention without a sliding window; the "
                   "fastest compiled runtime measured on an H100, not yet on an H200)")
    fold_rope = True


class PlainRuntime(CompiledRuntime):
    name = "compiled-plain"
    description = ("as compiled, without coordinate-descent tuning: batch-1 matmuls on cuBLAS, "
                   "the shortest compile")
    tuning = "plain"


class TunedRuntime(CompiledRuntime):
    name = "compiled-tuned"
    description = ("as compiled, tuning every kernel in every direction (torchao's recommended "
                   "setting): the longest compile")
    tuning = "all-directions"


register(CompiledRuntime())
register(FusedRuntime())
register(QbRuntime())
register(QbFoldRuntime())
register(PlainRuntime())
register(TunedRuntime())
