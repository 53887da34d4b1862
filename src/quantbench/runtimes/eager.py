"""The eager runtime: prefill, then one token at a time, greedy, EOS ignored (fixed length)."""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass


@dataclass
class GenerationTiming:
    ttft_s: float  # prefill forward + first token chosen
    decode_s: float  # the remaining new_tokens - 1 steps
    token_s: list[float]  # each decode step
    tokens: list[list[int]]  # generated ids, batch x new_tokens

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


def generate(model, input_ids, new_tokens: int, device: str) -> GenerationTiming:
    import torch

    cache_arg = _cache_arg(model)
    # no_grad, as HF generate uses: inference_mode breaks quanto's int4 kernels ("Cannot set
    # version_counter for inference tensor").
    with torch.no_grad():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        clock = _Clock(device)
        clock.mark()
        # Logits of the last position only, as generate() does: the rest would be thrown away.
        out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
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
    return GenerationTiming(ttft_s=intervals[0], decode_s=sum(intervals[1:]),
                            token_s=intervals[1:], tokens=ids)


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

        progress(phase="quantize")
        start = time.perf_counter()
        calibration: dict = {}
        model = scheme.quantize(model, device, cell.calibration, calibration,
                                progress=lambda i, n: progress(phase="calibrate", i=i, n=n))
        _sync(device)
        quantize_s = time.perf_counter() - start
        memory.release_freed_memory()  # the float weights a quantizer replaced

        def eager_generate(ids, new_tokens):
            input_ids = torch.tensor(ids, dtype=torch.long, device=device)
            return generate(model, input_ids, new_tokens, device)

        info = {"load_s": load_s, "quantize_s": quantize_s,
                "dtype": str(dtype).replace("torch.", ""),
                "unread_weight_bytes": memory.unread_embedding_bytes(model),
                "tables": memory.table_facts(model), "weight_kinds": memory.weight_kinds(model)}
        if calibration:  # its seconds are part of quantize_s, and shown apart
            info["calibration"] = calibration
        timed = self.decoder(model, cell, device, info, eager_generate, progress)

        def logits(ids):
            with torch.no_grad():
                out = model(input_ids=torch.tensor([ids], dtype=torch.long, device=device),
                            use_cache=False)
            return out.logits[0].float().cpu().numpy()

        def greedy(ids, new_tokens):  # any prompt length: a compiled decoder is sized for one
            return eager_generate([ids], new_tokens).tokens[0]

        return Engine(timed, memory.weight_bytes(model), memory.parameter_count(model), info,
                      for_quality=lambda plan: (logits, greedy, lambda: None), torch_model=model)

    def decoder(self, model, cell, device, info, eager_generate, progress):
        """The generate function the timed runs call (here: the eager loop itself)."""
        return eager_generate


register(EagerRuntime())
