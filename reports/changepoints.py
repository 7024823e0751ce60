"""Change points of one case's series, judged against the case's own noise.

Two steps, each with a reason:

1. **Candidates** from ruptures (a maintained change-point library): PELT with the L1 cost on the
   log of the values, so a step is a ratio and one wild run moves a median, not a mean.
2. **Judgement** of each candidate by the case's own noise: the step between the medians of the
   segments on either side of it is compared with the largest step that the case's noise alone
   shows at **any** split of a window that long (its runs' residuals around their segments'
   medians, resampled: a bootstrap of the scan, so picking the best split is paid for, and the
   noise's own shape, outliers included, is what is resampled). A step stands when it is beyond
   that band at ``alpha`` and at least ``min_change``; the weakest failing candidate is merged away
   and the rest judged again.

A step is reported with its band, so "regressed by +12 % (band ±5 %)" says how far beyond the
case's own noise it is; the case's band of one run (for the trend's shading) is 1.96 robust
standard deviations of its runs around their segments' medians. The permutations use a fixed seed:
the same history gives the same verdict. bench/history_gate_power.py measures false alarms and
power on this machine's own run-to-run noise.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: the false-alarm rate of one judged step (the permutation test's level)
DEFAULT_ALPHA = 0.01
#: the smallest change worth a verdict, whatever the band (a 0.3 % step on a very quiet case is real
#: and irrelevant)
DEFAULT_MIN_CHANGE = 0.02
#: the fewest runs on each side of a step
DEFAULT_MIN_SEGMENT = 3
#: resamples of the noise per window length (p resolution 1/500); the most runs on either side of a step judged
PERMUTATIONS = 499
MAX_SEGMENT = 60
#: the run-to-run band of one point: 95 % of a single run's values around the case's level
POINT_BAND_Z = 1.96
COSTS = ("l1", "l2")


@dataclass(frozen=True)
class Step:
    index: int            # the caller's index of the first value after the step
    before: float         # median of the segment before
    after: float          # median of the segment after
    change_rel: float     # after / before - 1
    band_rel: float       # the largest step the case's noise alone shows in this window (at alpha)

    def __post_init__(self) -> None:
        if not (self.before > 0 and self.after > 0 and self.band_rel >= 0):
            raise ValueError(f"Step before={self.before!r}, after={self.after!r}, band={self.band_rel!r}: "
                             "expected positive values and a band >= 0")


@dataclass(frozen=True)
class Detection:
    band_rel: float | None      # one run's noise band (None: too few values)
    sigma: float | None         # run-to-run sd of log values
    steps: tuple[Step, ...]


def robust_sigma(logs: np.ndarray) -> float:
    """The run-to-run sd of log values from the MAD of successive differences: a level shift
    moves one difference of many, so the noise is measured, not the step."""
    diffs = np.diff(logs)
    mad = float(np.median(np.abs(diffs - np.median(diffs))))
    return 1.4826 * mad / math.sqrt(2)


def _candidates(logs: np.ndarray, sigma: float, min_segment: int, cost: str) -> list[int]:
    import ruptures as rpt   # imported where it is used: `infermatrix watch --help` stays light

    n = len(logs)
    if n < 2 * min_segment:
        return []
    # generous penalty (an L1 cost is in units of sigma): PELT proposes, the judgement decides
    algo = rpt.Pelt(model=cost, min_size=min_segment, jump=1).fit(logs.reshape(-1, 1))
    scale = sigma if cost == "l1" else sigma ** 2   # an L1 cost is in units of sigma, an L2 cost of sigma^2
    return [b for b in algo.predict(pen=max(scale, 1e-12) * math.log(n)) if b < n]


def _scan(rows: np.ndarray, min_segment: int) -> np.ndarray:
    """Per row: the largest standardized step between the medians left and right of any split."""
    n = rows.shape[1]
    best = np.zeros(rows.shape[0])
    for k in range(min_segment, n - min_segment + 1):
        step = np.abs(np.median(rows[:, k:], axis=1) - np.median(rows[:, :k], axis=1)) / math.sqrt(1 / k + 1 / (n - k))
        np.maximum(best, step, out=best)
    return best


def _residuals(logs: np.ndarray, bkps: list[int]) -> np.ndarray:
    """The runs' noise with the steps taken out: each segment's values around its median, scaled up
    for the spread a segment's own median hides (sqrt(n / (n - 1)))."""
    edges = [0, *bkps, len(logs)]
    parts = [(logs[a:b] - np.median(logs[a:b])) * math.sqrt((b - a) / max(b - a - 1, 1)) for a, b in zip(edges, edges[1:])]
    return np.concatenate(parts)


def _judge(logs: np.ndarray, bkps: list[int], alpha: float, min_change: float, min_segment: int) -> list[tuple]:
    """(breakpoint, log change, log band, stands) for each breakpoint, between its neighbours."""
    edges = [0, *bkps, len(logs)]
    noise = _residuals(logs, bkps)
    rng = np.random.default_rng(0)   # the same history, the same verdict
    band_of: dict[int, float] = {}   # the scan's quantile, per window length
    out = []
    for k, b in enumerate(bkps):
        left, right = logs[max(edges[k], b - MAX_SEGMENT):b], logs[b:min(edges[k + 2], b + MAX_SEGMENT)]
        change = float(np.median(right) - np.median(left))
        n = len(left) + len(right)
        if n not in band_of:
            null = _scan(rng.choice(noise, size=(PERMUTATIONS, n), replace=True), min_segment)
            band_of[n] = float(np.quantile(null, 1 - alpha))
        band = band_of[n] * math.sqrt(1 / len(left) + 1 / len(right))
        out.append((b, change, band, abs(change) > band and abs(math.expm1(change)) >= min_change))
    return out


def detect(indices: Sequence[int], values: Sequence[float], *, min_points: int = 8, alpha: float = DEFAULT_ALPHA,
           min_change: float = DEFAULT_MIN_CHANGE, min_segment: int = DEFAULT_MIN_SEGMENT,
           cost: str = "l1") -> Detection:
    """The steps of ``values`` (positive, oldest first; ``indices`` are the caller's positions of
    them, which a step reports). Fewer than ``min_points`` values: no band and no steps.
    ``cost``: ruptures' cost of the candidates, "l1" (the gate's) or "l2" (to compare with)."""
    if cost not in COSTS:
        raise ValueError(f"cost {cost!r} is not one of {', '.join(COSTS)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha!r}: expected a probability in (0, 1)")
    if len(indices) != len(values):
        raise ValueError(f"{len(indices)} indices for {len(values)} values")
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(f"values must be positive and finite: {[v for v in values if not (v > 0)][:3]}")
    if len(values) < max(min_points, 2 * min_segment):
        return Detection(None, None, ())
    raw = np.asarray(values, dtype=float)
    logs = np.log(raw)
    bkps = _candidates(logs, robust_sigma(logs), min_segment, cost)
    while True:
        judged = _judge(logs, bkps, alpha, min_change, min_segment)
        failing = [j for j in judged if not j[3]]
        if not failing:
            break
        # merge away the weakest candidate (smallest change over its band) and judge the rest again
        weakest = min(failing, key=lambda j: abs(j[1]) / j[2] if j[2] > 0 else math.inf)
        bkps.remove(weakest[0])
    edges = [0, *bkps, len(logs)]
    steps = tuple(Step(int(indices[b]), float(np.median(raw[edges[k]:b])), float(np.median(raw[b:edges[k + 2]])),
                       math.expm1(change), math.expm1(band)) for k, (b, change, band, _) in enumerate(judged))
    sigma = 1.4826 * float(np.median(np.abs(_residuals(logs, bkps))))
    return Detection(math.expm1(POINT_BAND_Z * sigma), sigma, steps)
