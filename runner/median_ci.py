"""How well a median is known: the distribution-free confidence interval of the median from order
statistics, and the rounds a case needs for that interval to be within a relative half-width.

Why order statistics and not the notch (1.57 * IQR / sqrt(n)) or a bootstrap: latency samples are
skewed and often two-moded (a preempted round, a cache miss), so an interval that assumes a shape
may claim a precision the samples do not have. The order-statistic interval [x_(j), x_(n-j+1)]
covers the median with at least the stated confidence for any continuous distribution (the count
of samples below the median is Binomial(n, 1/2)), it is exact rather than resampled (the same
samples always give the same figure), and it costs one sort. The notch's 1.57 is also not a 95 %
interval of one median: McGill et al. chose it so that two notches that do not overlap differ at
about 95 %, which makes it narrower than one median's 95 % interval. Pure Python, no engine.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from infermatrix.core.percentiles import percentile

CONFIDENCE = 0.95
#: how ``median_ci_rel`` was computed, recorded with it
METHOD = "order-statistic 95% CI of the median (binomial ranks, distribution-free)"
#: the IQR of a normal distribution in standard deviations (2 * 0.6745): the pilot's spread in sigmas
_IQR_SIGMAS = 1.349


def lower_rank(n: int, confidence: float = CONFIDENCE) -> int | None:
    """The 1-based rank j of the interval's lower end [x_(j), x_(n-j+1)]: the largest j with
    P(Binomial(n, 1/2) <= j-1) <= (1 - confidence) / 2; None when even [min, max] covers less
    (fewer than 6 samples at 95 %)."""
    if n < 1:
        raise ValueError(f"n={n}; expected at least 1 sample")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}; expected a fraction in (0, 1)")
    tail = (1 - confidence) / 2
    log_half_n = n * math.log(0.5)  # in logs: 0.5 ** 2000 underflows a float
    cumulative, j = 0.0, 0
    for i in range(n // 2 + 1):
        cumulative += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
        if cumulative > tail:
            break
        j = i + 1
    return j or None


def median_ci(samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """(low, high) of the median's interval, or None with too few samples (see :func:`lower_rank`)."""
    xs = sorted(samples)
    j = lower_rank(len(xs), confidence) if xs else None
    if j is None:
        return None
    return xs[j - 1], xs[len(xs) - j]


def median_ci_rel(samples: Sequence[float], confidence: float = CONFIDENCE) -> float | None:
    """Half the interval's width over the median (0.01: the median is known to +/-1 %), the usual
    relative half-width of a confidence interval; a skewed sample's interval is lopsided, so one
    side may be wider than this."""
    ci = median_ci(samples, confidence)
    if ci is None:
        return None
    med = statistics.median(samples)
    if med <= 0:
        return None
    return (ci[1] - ci[0]) / 2 / med


def ci_note(samples: Sequence[float]) -> str | None:
    """Why :func:`median_ci_rel` is null for these samples (None when it is not)."""
    if lower_rank(max(len(samples), 1)) is None:
        return f"a {CONFIDENCE:.0%} CI of the median needs >= 6 samples; {len(samples)} were taken"
    if statistics.median(samples) <= 0:
        return "the median is 0: no relative precision"
    return None


def iqr_ratio(samples: Sequence[float]) -> float:
    """Interquartile range over the median (0 when the median is 0)."""
    med = statistics.median(samples)
    return (percentile(samples, 75) - percentile(samples, 25)) / med if med > 0 else 0.0


def predicted_ci_rel(n: int, spread: float, confidence: float = CONFIDENCE) -> float:
    """The relative half-width :func:`median_ci_rel` is expected to reach with ``n`` samples whose
    IQR / median is ``spread``: where the interval's ranks fall in a normal of that IQR.
    The ranks are the exact ones, so a small n is not promised the asymptotic width (with 10
    samples the interval is [x_(2), x_(9)], about 1.3 sigma wide, not 2 * 1.96 * 1.25 / sqrt(10))."""
    j = lower_rank(n, confidence)
    if j is None:
        return math.inf
    sigma = spread / _IQR_SIGMAS
    return sigma * statistics.NormalDist().inv_cdf((n - j + 1) / (n + 1))


def rounds_for(target: float, spread: float, limit: int, confidence: float = CONFIDENCE) -> int:
    """The fewest rounds (6 to ``limit``) whose predicted interval is within ``target``; ``limit``
    + 1 when even ``limit`` is not enough (the caller says it was capped)."""
    if not target > 0:
        raise ValueError(f"target={target}; expected a positive fraction such as 0.01")
    if predicted_ci_rel(limit, spread, confidence) > target:
        return limit + 1
    lo, hi = 6, limit  # the prediction shrinks with n (up to the ranks' steps): bisect it
    while lo < hi:
        mid = (lo + hi) // 2
        if predicted_ci_rel(mid, spread, confidence) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo
