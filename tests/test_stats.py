import numpy as np
import pytest
from scipy import stats as sps

from quantbench.measure.stats import median_interval, ratio_of_medians, summarize


def test_summary_matches_independent_computation():
    x = [10.0, 12.0, 11.0, 13.0, 9.0, 10.5]
    s = summarize(x)
    assert s.n == 6
    assert s.mean == pytest.approx(np.mean(x))
    assert s.median == pytest.approx(10.75)
    assert s.std == pytest.approx(np.std(x, ddof=1))
    assert s.cv == pytest.approx(s.std / s.mean)
    assert (s.min, s.max) == (9.0, 13.0)
    assert s.p90 == pytest.approx(np.percentile(x, 90))
    low, high = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert s.ci95 == pytest.approx([low, high])
    assert s.samples == x


def test_single_sample_has_a_degenerate_interval():
    s = summarize([5.0])
    assert s.std == 0.0 and s.ci95 == [5.0, 5.0]


def test_median_interval_coverage_is_exact_and_honest():
    # n=5 cannot reach 95%: [min, max] with coverage 1 - 2/32.
    lo, hi, level = median_interval(np.arange(5.0))
    assert (lo, hi) == (0.0, 4.0) and level == pytest.approx(0.9375)
    # n=10: the 2nd and 9th order statistics cover the median with 97.85%.
    lo, hi, level = median_interval(np.arange(10.0))
    assert (lo, hi) == (1.0, 8.0) and level == pytest.approx(1 - 2 * sps.binom.cdf(1, 10, 0.5))
    assert level >= 0.95


def test_ratio_of_medians_tells_a_real_difference_from_noise():
    rng = np.random.default_rng(1)
    a = rng.normal(100, 2, 20)
    b = rng.normal(80, 2, 20)
    diff = ratio_of_medians(a, b)
    assert diff["ratio"] == pytest.approx(np.median(a) / np.median(b))
    assert diff["significant"] and diff["ci95"][0] > 1
    same = ratio_of_medians(a, rng.normal(100, 2, 20))
    assert not same["significant"] and same["ci95"][0] < 1 < same["ci95"][1]
