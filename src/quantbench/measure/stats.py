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
    ci95: list[float]  # Student-t interval for the mean
    median_ci: list[float]  # distribution-free interval for the median (order statistics)
    median_ci_level: float  # its exact coverage: below 0.95 when n < 6
    samples: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


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
