"""Warm-ups until the rate is steady, then timed runs until the median is known well enough.

Both stopping rules are recorded with the cell, so a reader can tell a tight interval from a
run that ran out of time, and a steady start from one that never settled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from quantbench.measure.stats import median_ci_halfwidth, trend, warmup_steady


@dataclass
class TimedRuns:
    samples: dict[str, list[float]] = field(default_factory=dict)
    token_ms: list[float] = field(default_factory=list)
    output_ids: list | None = None
    warmup: dict = field(default_factory=dict)
    stop: dict = field(default_factory=dict)


def _rate(metrics: dict) -> float:
    """The rate the stopping rules watch: decode, or end-to-end when only one token is made."""
    return metrics.get("decode_tok_s", metrics["e2e_tok_s"])


def run(generate, ids, workload, reps, before_timed=None, progress=None) -> TimedRuns:
    """`generate(ids, new_tokens) -> GenerationTiming`; `before_timed()` runs between the
    warm-ups and the first timed run (peak-memory resets belong there)."""
    w = workload
    out = TimedRuns()
    progress = progress or (lambda **event: None)

    rates: list[float] = []
    start = time.perf_counter()
    steady = False
    while len(rates) < reps.max_warmup:
        if len(rates) >= reps.warmup and (steady or reps.warmup == 0):
            break
        progress(phase="warmup", i=len(rates) + 1, n=reps.warmup)
        timing = generate(ids, w.new_tokens)
        rates.append(_rate(timing.metrics(w.batch_size, w.prompt_tokens, w.new_tokens)))
        steady = warmup_steady(rates)
    out.warmup = {"done": len(rates), "minimum": reps.warmup, "steady": steady or reps.warmup == 0,
                  "rates": rates, "seconds": time.perf_counter() - start}
    if reps.warmup and not steady:
        out.warmup["reason"] = (f"still moving after {len(rates)} warm-ups (--max-warmup): the "
                                "timed runs may start before the rate settled")

    if before_timed:
        before_timed()
    timed_s = 0.0
    runs: list[float] = []
    fixed = None if reps.adaptive else reps.runs
    limit = fixed or reps.max_runs
    reason = f"fixed count (--runs {fixed})" if fixed else "--max-runs reached"
    while len(runs) < limit:
        progress(phase="run", i=len(runs) + 1, n=fixed)
        timing = generate(ids, w.new_tokens)
        metrics = timing.metrics(w.batch_size, w.prompt_tokens, w.new_tokens)
        timed_s += timing.ttft_s + timing.decode_s
        for name, value in metrics.items():
            out.samples.setdefault(name, []).append(value)
        out.token_ms.extend(t * 1e3 for t in timing.token_s)
        if out.output_ids is None:
            out.output_ids = timing.tokens
        if any(len(row) != w.new_tokens for row in timing.tokens):
            raise RuntimeError("the decode loop produced a different number of tokens than asked")
        runs.append(_rate(metrics))
        if fixed or len(runs) < reps.min_runs or timed_s < reps.min_seconds:
            continue
        half, level = median_ci_halfwidth(runs)
        if level >= 0.95 and half <= reps.target_ci:
            reason = f"the median's 95% CI reached ±{reps.target_ci:.1%}"
            break
        if timed_s >= reps.max_seconds:
            reason = "--max-seconds reached"
            break
    half, level = median_ci_halfwidth(runs)
    out.stop = {"runs": len(runs), "reason": reason, "timed_s": timed_s,
                "median_ci_halfwidth_pct": 100 * half, "median_ci_level": level,
                "trend": trend(runs)}
    return out
