"""Token-level scores from log-probabilities, and their summaries with uncertainty.

Windows follow the strided scheme of the transformers perplexity guide: each window holds
`context` tokens, windows start every `stride` tokens, and each target token is scored once, by
the first window that contains it with history (so every scored token after the first window
sees at least context - stride tokens of context).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Window:
    begin: int  # first input token (absolute index)
    end: int  # one past the last input token
    first_target: int  # first token scored in this window (absolute index)

    @property
    def targets(self) -> range:
        return range(self.first_target, self.end)


def plan_windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """Needs stride < context: then every token after the first is scored exactly once."""
    if not 0 < stride < context:
        raise ValueError("windows need 0 < stride < context")
    windows, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        windows.append(Window(begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n_tokens:
            break
    return windows


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64, copy=False)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


def window_rows(window: Window) -> slice:
    """Rows of a window's logits that predict its scored targets (row t predicts token t+1)."""
    return slice(window.first_target - 1 - window.begin, window.end - 1 - window.begin)


@dataclass
class TokenScores:
    """Per scored token: the scheme's and the baseline's NLL, KL(base || scheme), whether the top
    tokens agree, and p_scheme(correct) - p_base(correct)."""

    nll: np.ndarray
    base_nll: np.ndarray
    kl: np.ndarray
    agree: np.ndarray
    dp: np.ndarray

    @classmethod
    def empty(cls) -> "TokenScores":
        return cls(*(np.empty(0) for _ in range(5)))

    def extend(self, logp: np.ndarray, base_logp: np.ndarray, targets: np.ndarray) -> None:
        rows = np.arange(len(targets))
        lp = logp[rows, targets].astype(np.float64)
        blp = base_logp[rows, targets].astype(np.float64)
        p_base = np.exp(base_logp.astype(np.float64))
        kl = (p_base * (base_logp.astype(np.float64) - logp.astype(np.float64))).sum(axis=-1)
        self.nll = np.concatenate([self.nll, -lp])
        self.base_nll = np.concatenate([self.base_nll, -blp])
        self.kl = np.concatenate([self.kl, np.maximum(kl, 0.0)])  # rounding can dip below 0
        self.agree = np.concatenate([self.agree, logp.argmax(-1) == base_logp.argmax(-1)])
        self.dp = np.concatenate([self.dp, np.exp(lp) - np.exp(blp)])


def _se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def summarize(scores: TokenScores) -> dict:
    """Perplexities with 95% CIs (from the SE of the mean NLL, as llama-perplexity reports),
    the perplexity ratio from the paired NLL differences, and the KL distribution."""
    n = len(scores.nll)
    mean_nll, se_nll = float(scores.nll.mean()), _se(scores.nll)
    base_mean, base_se = float(scores.base_nll.mean()), _se(scores.base_nll)
    diff = scores.nll - scores.base_nll
    mean_diff, se_diff = float(diff.mean()), _se(diff)
    kl_mean, kl_se = float(scores.kl.mean()), _se(scores.kl)
    agree = float(scores.agree.mean())
    return {
        "tokens_scored": n,
        "ppl": math.exp(mean_nll),
        "ppl_ci95": [math.exp(mean_nll - Z95 * se_nll), math.exp(mean_nll + Z95 * se_nll)],
        "nll_mean": mean_nll, "nll_se": se_nll,
        "baseline_ppl": math.exp(base_mean),
        "baseline_ppl_ci95": [math.exp(base_mean - Z95 * base_se), math.exp(base_mean + Z95 * base_se)],
        "ppl_ratio": math.exp(mean_diff),
        "ppl_ratio_ci95": [math.exp(mean_diff - Z95 * se_diff), math.exp(mean_diff + Z95 * se_diff)],
        "kl_mean": kl_mean, "kl_se": kl_se,
        "kl_ci95": [kl_mean - Z95 * kl_se, kl_mean + Z95 * kl_se],
        "kl_median": float(np.median(scores.kl)),
        "kl_p99": float(np.percentile(scores.kl, 99)),
        "kl_max": float(scores.kl.max()),
        "top1_agreement_pct": 100 * agree,
        "top1_agreement_se_pct": 100 * math.sqrt(agree * (1 - agree) / n) if n else float("nan"),
        "rms_dp_pct": 100 * math.sqrt(float((scores.dp ** 2).mean())),
    }


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token, None when identical."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
