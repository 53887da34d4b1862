"""The eager runtime: prefill, then one token at a time, greedy, EOS ignored (fixed length)."""

from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass


@dataclass
class GenerationTiming:
    ttft_s: float  # prefill forward + first token chosen
    decode_s: float  # the remaining new_tokens - 1 steps
    token_s: list[float]  # each decode step
    tokens: list[list[int]]  # generated ids, batch x new_tokens
    # What the KV cache held at the end (keys and values of every layer and sequence), measured
    # after the timings; None where the runtime cannot see its cache.
    kv_bytes: int | None = None
    kv_positions: int | None = None

    def metrics(self, batch: int, prompt_tokens: int, new_tokens: int) -> dict[str, float]:
        out = {
            "ttft_ms": self.ttft_s * 1e3,
            "prefill_tok_s": batch * prompt_tokens / self.ttft_s,
            "e2e_tok_s": batch * new_tokens / (self.ttft_s + self.decode_s),
            "e2e_s": self.ttft_s + self.decode_s,
        }
        if new_tokens > 1:
            out["decode_tok_s"] = batch * (new_tokens - 1) / self.decode_s
            out["decode_ms_per_token"] = self.decode_s * 1e3 / (new_tokens - 1)
        return out


class _Clock:
    """perf_counter on the CPU; CUDA events on a GPU (one sync at the end, not per token)."""

    def __init__(self, device: str):
        import torch

        self.cuda = device.startswith("cuda")
        self.torch = torch
        self.marks = []

    def mark(self):
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals(self) -> list[float]:
        if self.cuda:
            self.torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def _cache_arg(model) -> str:
    """transformers >= 5.2x calls the KV cache `cache`; 5.17 still `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    return out["cache"] if "cache" in out else out["past_key_values"]


def generate(model, input_ids, new_tokens: int, device: str, new_cache=None) -> GenerationTiming:
    """`new_cache()` makes the cache the prefill fills (a quantized one); None: the model's own
    dynamic cache."""
    import torch

    from quantbench.kvcache.layers import stored_bytes

    cache_arg = _cache_arg(model)
    first = {cache_arg: new_cache()} if new_cache else {}
    # no_grad, as HF generate uses: inference_mode breaks quanto's int4 kernels ("Cannot set
    # version_counter for inference tensor").
    with torch.no_grad():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        clock = _Clock(device)
        clock.mark()
        # Logits of the last position only, as generate() does: the rest would be thrown away.
        out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **first)
        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        if not clock.cuda:
            token = token.clone()  # keeps the CPU clock honest: the argmax is done here
        clock.mark()
        past = _cache_of(out)
        generated = [token]
        for _ in range(new_tokens - 1):
            out = model(input_ids=token, use_cache=True, **{cache_arg: past})
            past = _cache_of(out)
            token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            generated.append(token)
            clock.mark()
        intervals = clock.intervals()
    ids = torch.cat(generated, dim=1).tolist()
    positions = past.get_seq_length() if hasattr(past, "get_seq_length") else None
    return GenerationTiming(ttft_s=intervals[0], decode_s=sum(intervals[1:]),
                            token_s=intervals[1:], tokens=ids, kv_bytes=stored_bytes(past),
                            kv_positions=int(positions) if positions is not None else None)


def _logits_through_cache(model, device: str, new_cache, ids: list[int]):
    """fp32 logits of every position of `ids`, fed through a fresh cache `EVAL_CHUNK`
    positions a step, so each step reads the positions before it as the cache stores them."""
    import torch

    from quantbench.kvcache import EVAL_CHUNK

    cache_arg = _cache_arg(model)
    cache = new_cache()
    rows = []
    with torch.no_grad():
        for begin in range(0, len(ids), EVAL_CHUNK):
            chunk = torch.tensor([ids[begin:begin + EVAL_CHUNK]], dtype=torch.long, device=device)
            out = model(input_ids=chunk, use_cache=True, **{cache_arg: cache})
            cache = _cache_of(out)
            rows.append(out.logits[0].float().cpu())
    return torch.cat(rows).numpy()


# ---- the runtime plug-in ------------------------------------------------------------------
from quantbench.runtimes.base import Engine, Runtime, register  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class EagerRuntime(Runtime):
    name = "eager"
    description = ("a plain Python decode loop over the HF model with a dynamic KV cache "
                   "(what most people run)")
    kv_formats = ("auto", "fp8", "int8", "int4", "int2")

    def engine(self, cell, scheme, device: str, progress) -> Engine:
        """Load the model, apply the scheme, and wrap it: the timed decode is `decoder`'s."""
        import torch

        from quantbench import models
        from quantbench.measure import memory
        from quantbench.schemes.registry import torch_dtype

        device_type = device.split(":")[0]
        dtype = torch_dtype(scheme.compute_dtype(device_type))
        progress(phase="load")
        start = time.perf_counter()
        model = models.load(cell.model, dtype, "cpu" if scheme.build_on_cpu else device, cell.seed)
        _sync(device)
        load_s = time.perf_counter() - start

        fusion = self.prepare_model(model, scheme)
        progress(phase="quantize")
        start = time.perf_counter()
        calibration: dict = {}
        model = scheme.quantize(model, device, cell.calibration, calibration,
                                progress=lambda i, n: progress(phase="calibrate", i=i, n=n))
        _sync(device)
        quantize_s = time.perf_counter() - start
        memory.release_freed_memory()  # the float weights a quantizer replaced

        from quantbench import kvcache
        from quantbench.kvcache import layers as kv_layers

        kv = kvcache.get(scheme.kv)
        new_cache = (lambda: kv_layers.eager_cache(kv, model.config)) if not kv.native else None
        kv_info = {"format": kv.name, "implementation": kv_layers.eager_implementation(kv)}

        def eager_generate(ids, new_tokens, record=True):
            input_ids = torch.tensor(ids, dtype=torch.long, device=device)
            timing = generate(model, input_ids, new_tokens, device, new_cache)
            if record and timing.kv_bytes and timing.kv_positions and not kv_info.get("static"):
                # Per position of one sequence, at the length the decode ends with: a
                # quantized cache keeps its newest positions in full precision, so this is
                # what this workload's cache costs, not the format's asymptote.
                kv_info.update({"stored_bytes": timing.kv_bytes, "positions": timing.kv_positions,
                                "sequences": len(ids),
                                "bytes_per_position": timing.kv_bytes / (len(ids) * timing.kv_positions)})
            return timing

        info = {"load_s": load_s, "quantize_s": quantize_s,
                "dtype": str(dtype).replace("torch.", ""),
                "unread_weight_bytes": memory.unread_embedding_bytes(model),
                "tables": memory.table_facts(model), "weight_kinds": memory.weight_kinds(model),
                "kv_cache": kv_info}
        if calibration:  # its seconds are part of quantize_s, and shown apart
            info["calibration"] = calibration
        if fusion is not None:
            info["fusion"] = fusion
        from quantbench.kernels.layers import launch_record

        qb_kernel = launch_record(model, device)  # filled with launch configs as layers run
        if qb_kernel is not None:
            info["qb_kernel"] = qb_kernel
        if device.startswith("cuda") and scheme.backend == "gemlite":
            from quantbench.kernels import gemlite_layers

            info["gemlite"] = gemlite_layers.launch_record(model, cell.workload.batch_size)
        timed = self.decoder(model, cell, device, info, eager_generate, progress)

        def logits(ids):
            with torch.no_grad():
                out = model(input_ids=torch.tensor([ids], dtype=torch.long, device=device),
                            use_cache=False)
            return out.logits[0].float().cpu().numpy()

        if not kv.native:  # quality through the quantized cache, as a decode reads it
            logits = functools.partial(_logits_through_cache, model, device,
                                       lambda: kv_layers.eager_cache(kv, model.config))
            kv_info["quality"] = (f"scored through the {kv.name} cache (eager implementation), "
                                  f"{kvcache.EVAL_CHUNK} positions a step: each step attends to "
                                  "the stored cache and, exactly, to its own positions")

        def greedy(ids, new_tokens):  # any prompt length: a compiled decoder is sized for one
            return eager_generate([ids], new_tokens, record=False).tokens[0]

        return Engine(timed, memory.weight_bytes(model), memory.parameter_count(model), info,
                      for_quality=lambda plan: (logits, greedy, lambda: None), torch_model=model)

    def prepare_model(self, model, scheme) -> dict | None:
        """Reshape the float model before the scheme quantizes it; what was done, for the
        record (None: nothing, as here: the eager runtime runs the model as published)."""
        return None

    def decoder(self, model, cell, device, info, eager_generate, progress):
        """The generate function the timed runs call (here: the eager loop itself)."""
        return eager_generate


register(EagerRuntime())
