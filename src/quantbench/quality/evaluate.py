"""Quality of one cell, in its worker: the scheme's log-probabilities on the planned windows
against the cached baseline ones, and greedy generations of the fixed prompts."""

from __future__ import annotations

import time

import numpy as np

from quantbench.quality import cache
from quantbench.quality.metrics import TokenScores, log_softmax, plan_windows, summarize, window_rows


def _windows(quality: dict):
    return plan_windows(len(quality["plan"]["ids"]), quality["plan"]["context"],
                        quality["plan"]["stride"])


def compute_baseline(quality: dict, logits_fn, progress=None):
    """Write the baseline's log-probabilities for every scored token into the cache."""
    ids = quality["plan"]["ids"]
    windows = _windows(quality)
    writer = None
    try:
        for i, window in enumerate(windows):
            if progress:
                progress(phase="baseline_logits", i=i + 1, n=len(windows))
            logp = log_softmax(logits_fn(ids[window.begin:window.end])[window_rows(window)])
            if writer is None:
                writer = cache.Writer(quality["cache_key"], len(ids) - 1, logp.shape[-1],
                                      {"baseline": quality["baseline"], "source": quality["plan"]["source"],
                                       "rows": len(ids) - 1, "vocab": int(logp.shape[-1]),
                                       "dtype": "float32 log-probabilities"})
            writer.write(window.first_target - 1, logp)
        return writer.commit()
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise


def score(quality: dict, logits_fn, base, progress=None) -> dict:
    ids = np.asarray(quality["plan"]["ids"])
    windows = _windows(quality)
    scores = TokenScores.empty()
    for i, window in enumerate(windows):
        if progress:
            progress(phase="quality", i=i + 1, n=len(windows))
        logits = logits_fn(ids[window.begin:window.end].tolist())[window_rows(window)]
        if logits.shape[-1] != base.shape[-1]:
            raise RuntimeError(f"the scheme's vocabulary ({logits.shape[-1]}) differs from the "
                               f"baseline's ({base.shape[-1]})")
        targets = ids[window.first_target:window.end]
        scores.extend(log_softmax(logits), np.asarray(base[window.first_target - 1:window.end - 1]),
                      targets)
    return summarize(scores)


def generations(quality: dict, generate, tokenizer) -> list[dict]:
    gen = quality["plan"]["generation"]
    out = []
    for prompt in gen["prompts"]:
        ids = generate(prompt["ids"], gen["new_tokens"])
        out.append({"prompt": prompt["text"], "ids": ids,
                    "pieces": [tokenizer.decode([t]) for t in ids]})
    return out


def evaluate(quality: dict, logits_fn, generate, tokenizer, progress=None) -> dict:
    start = time.perf_counter()
    base = cache.load(quality["cache_key"])
    if base is None:  # only the baseline cell gets here: others had it made before loading
        base = compute_baseline(quality, logits_fn, progress)
    result = score(quality, logits_fn, base, progress)
    result["generations"] = generations(quality, generate, tokenizer)
    plan = quality["plan"]
    result.update({"context": plan["context"], "stride": plan["stride"],
                   "eval_tokens": plan["eval_tokens"], "source": plan["source"],
                   "baseline": quality["baseline"], "baseline_cache": str(cache.path_for(quality["cache_key"])),
                   "quality_s": time.perf_counter() - start})
    return result
