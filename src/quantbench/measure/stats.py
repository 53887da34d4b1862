"""Summary statistics and confidence intervals, recomputable from the raw samples."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps


@dataclass
class Summary:
    n: int
    mean: float
    median: float
    std: float
    cv: float
    min: float
    max: float
    p90: float
    ci95: list[float]  # Student-t interval for the mean (also as mean_ci95)
    median_ci: list[float]  # distribution-free interval for the median (order statistics)
    median_ci_level: float  # its exact coverage: below 0.95 when n < 6
    samples: list[float]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["mean_ci95"] = list(self.ci95)  # the same interval, named for what it bounds
        return out


def summarize(samples) -> Summary:
    x = np.asarray(list(samples), dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("no samples")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        half = float(sps.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    else:
        ci = [mean, mean]
    lo, hi, level = median_interval(x)
    return Summary(n=n, mean=mean, median=float(np.median(x)), std=std,
                   cv=std / mean if mean else float("nan"), min=float(x.min()),
                   max=float(x.max()), p90=float(np.percentile(x, 90)), ci95=ci,
                   median_ci=[lo, hi], median_ci_level=level, samples=x.tolist())


def median_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """The narrowest symmetric order-statistic interval covering the median with >= `level`,
    or [min, max] with its (lower) exact coverage when the sample is too small for `level`."""
    s = np.sort(x)
    n = len(s)
    if n == 1:
        return float(s[0]), float(s[0]), 0.0
    best = (float(s[0]), float(s[-1]), 1 - 2 * sps.binom.cdf(0, n, 0.5))
    for k in range(1, n // 2):
        coverage = 1 - 2 * sps.binom.cdf(k, n, 0.5)
        if coverage < level:
            break
        best = (float(s[k]), float(s[n - 1 - k]), coverage)
    return best[0], best[1], float(best[2])


def median_ci_halfwidth(samples) -> tuple[float, float]:
    """(largest distance from the median to an end of its interval, relative to the median;
    that interval's coverage): what an adaptive run stops on."""
    x = np.asarray(list(samples), dtype=float)
    lo, hi, level = median_interval(x)
    median = float(np.median(x))
    if median == 0:
        return float("inf"), level
    return max(median - lo, hi - median) / abs(median), level


def ratio_of_medians(a, b, n_boot: int = 2000, seed: int = 0) -> dict:
    """median(a) / median(b) with a 95% percentile-bootstrap interval, resampling both."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ratio = float(np.median(a) / np.median(b))
    rng = np.random.default_rng(seed)
    ra = np.median(rng.choice(a, size=(n_boot, len(a)), replace=True), axis=1)
    rb = np.median(rng.choice(b, size=(n_boot, len(b)), replace=True), axis=1)
    boots = ra / rb
    low, high = np.percentile(boots, [2.5, 97.5])
    return {"ratio": ratio, "ci95": [float(low), float(high)],
            "significant": bool(low > 1 or high < 1)}


MIN_RUNS_FOR_CLAIM = 5
DEFAULT_MARGIN = 0.02


def verdict(ratio: dict, n_a: int, n_b: int, margin: float = DEFAULT_MARGIN,
            noise_floor: float | None = None, comparable: bool = True,
            why_not: str | None = None) -> dict:
    """What a ratio of medians may claim, held against practical equivalence.

    The threshold is the larger of `margin` (a difference too small to matter) and the
    noise floor (how far the baseline moved between its two measurements in the run). A
    difference is `faster`/`slower` only when the whole bootstrap interval lies beyond the
    threshold; `equivalent` when the ratio lies within it; otherwise `inconclusive`. Fewer
    than MIN_RUNS_FOR_CLAIM timed runs on either side, or cells of different environments,
    make no claim at all. `significant` is kept for older readers: faster or slower.
    """
    threshold = max(margin, noise_floor or 0.0)
    out = dict(ratio)
    out.update({"margin": margin, "noise_floor": noise_floor, "threshold": threshold})
    low, high = ratio["ci95"]
    if not comparable:
        out.update(verdict="not comparable", significant=False,
                   reason=why_not or "measured in different environments")
    elif min(n_a, n_b) < MIN_RUNS_FOR_CLAIM:
        out.update(verdict="no claim", significant=False,
                   reason=f"fewer than {MIN_RUNS_FOR_CLAIM} timed runs")
    elif low > 1 + threshold:
        out.update(verdict="faster", significant=True)
    elif high < 1 - threshold:
        out.update(verdict="slower", significant=True)
    elif abs(ratio["ratio"] - 1) <= threshold:
        out.update(verdict="equivalent", significant=False)
    else:
        out.update(verdict="inconclusive", significant=False,
                   reason="the interval reaches inside the equivalence threshold")
    return out


def trend(samples) -> dict:
    """Whether a series drifts with its index (Kendall's tau): warm-up not finished, thermal
    throttling, a neighbour starting work. Reported beside the samples, never hidden."""
    x = np.asarray(list(samples), dtype=float)
    if len(x) < 4:
        return {"n": len(x), "tau": None, "p": None, "drifting": False}
    tau, p = sps.kendalltau(np.arange(len(x)), x)
    tau = 0.0 if tau != tau else float(tau)
    p = 1.0 if p != p else float(p)
    return {"n": len(x), "tau": tau, "p": p, "drifting": bool(p < 0.01)}


def warmup_steady(rates, window: int = 3, tolerance: float = 0.05) -> bool:
    """A trend test on the last `window` warm-up rates: steady once they no longer move
    one way by more than `tolerance` (relative). Two rates suffice when they agree."""
    w = list(rates)[-window:]
    if len(w) < 2:
        return False
    change = abs(w[-1] - w[0]) / float(np.median(w))
    if change <= tolerance:
        return True
    rising = all(b > a for a, b in zip(w, w[1:]))
    falling = all(b < a for a, b in zip(w, w[1:]))
    return len(w) >= window and not (rising or falling)
