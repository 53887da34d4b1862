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
