"""Change points of one case's series, judged against the case's own noise.

Two steps, each with a reason:

1. **Candidates** from ruptures (a maintained change-point library): PELT with its rank cost
   (Lung-Yut-Fong et al. 2015), so a run slowed 60 % by a loaded host counts as one rank, not as
   60 %; its penalty is generous (a candidate is proposed when its rank statistic Z has Z^2 above
   log n): the judgement decides.
2. **Judgement** of each candidate: the Mann-Whitney statistic (standardized) between the runs on
   either side of it, against the largest one that runs with no step show at **any** split of a
   window that long (a permutation test of the scan: picking the best split is paid for; runs of a
   history are separate processes, exchangeable when nothing changed, so the test is exact whatever
   the noise's shape). A step stands beyond that threshold at ``alpha`` and when its change (the
   ratio of the medians) is at least ``min_change``; the weakest failing candidate is merged away
   and the rest judged again.

A step is reported with its band: the smallest step that these same runs (the ones after it moved
back to the level before it) would need to show to stand, so "regressed by +12 % (band ±5 %)" says
how far beyond the case's own noise it is. The case's band of one run (the trend's shading) is
1.96 robust standard deviations of its runs around their segments' medians. The permutations use a
fixed seed: the same history gives the same verdict. bench/history_gate_power.py measures false
alarms and power on this machine's own run-to-run noise.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import rankdata

#: the false-alarm rate of one judged step (the permutation test's level)
DEFAULT_ALPHA = 0.01
#: the smallest change worth a verdict, whatever the band (a 0.3 % step on a very quiet case is real
#: and irrelevant)
DEFAULT_MIN_CHANGE = 0.02
#: the fewest runs on each side of a step
DEFAULT_MIN_SEGMENT = 3
#: permutations of the scan's null per window length; the most runs on either side of a step judged
PERMUTATIONS = 1999
MAX_SEGMENT = 60
#: the run-to-run band of one point: 95 % of a single run's values around the case's level
POINT_BAND_Z = 1.96
COSTS = ("rank", "l1", "l2")


@dataclass(frozen=True)
class Step:
    index: int            # the caller's index of the first value after the step
    before: float         # median of the segment before
    after: float          # median of the segment after
    change_rel: float     # after / before - 1
    band_rel: float       # the smallest step these runs would need to show to stand (at alpha)

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
    algo = rpt.Pelt(model=cost, min_size=min_segment, jump=1).fit(logs.reshape(-1, 1))
    # the penalty in the cost's own units: a rank cost's drop at a split is about Z^2 (no scale),
    # an L1 cost's is in units of sigma, an L2 cost's of sigma^2
    scale = {"rank": 1.0, "l1": sigma, "l2": sigma ** 2}[cost]
    return [b for b in algo.predict(pen=max(scale, 1e-12) * math.log(n)) if b < n]


def rank_z(left: np.ndarray, right: np.ndarray) -> float:
    """The Mann-Whitney statistic of ``right`` against ``left``, standardized (+: right is higher)."""
    n1, n2 = len(left), len(right)
    n = n1 + n2
    ranks = rankdata(np.concatenate([left, right]))
    return float((ranks[n1:].sum() - n2 * (n + 1) / 2) / math.sqrt(n1 * n2 * (n + 1) / 12))


@lru_cache(maxsize=512)
def scan_threshold(n: int, min_segment: int, alpha: float) -> float:
    """The (1 - alpha) quantile of the largest |Z| over every split of n exchangeable runs (at
    least ``min_segment`` on each side): what no step shows, once in 1/alpha windows."""
    rng = np.random.default_rng(0)   # the same history, the same verdict
    sums = np.cumsum(rng.permuted(np.tile(np.arange(1.0, n + 1), (PERMUTATIONS, 1)), axis=1), axis=1)
    k = np.arange(min_segment, n - min_segment + 1)
    right = (n * (n + 1) / 2 - sums[:, k - 1])   # the rank sum right of each split
    z = (right - (n - k) * (n + 1) / 2) / np.sqrt(k * (n - k) * (n + 1) / 12)
    return float(np.quantile(np.abs(z).max(axis=1), 1 - alpha))


def _band(left: np.ndarray, right: np.ndarray, threshold: float, sign: float) -> float:
    """The smallest log step (>= 0) that ``right``, moved back to the level of ``left`` and then
    stepped by it (in the direction ``sign``), needs for its |Z| to pass ``threshold``; inf when
    these few runs cannot pass it at all."""
    base = right - np.median(right) + np.median(left)
    hi = float(np.ptp(np.concatenate([left, base]))) * 2 + 1e-9
    if sign * rank_z(left, base + sign * hi) <= threshold:
        return math.inf
    lo = 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sign * rank_z(left, base + sign * mid) <= threshold else (lo, mid)
    return hi


def _residuals(logs: np.ndarray, bkps: list[int]) -> np.ndarray:
    """The runs' noise with the steps taken out: each segment's values around its median."""
    edges = [0, *bkps, len(logs)]
    return np.concatenate([logs[a:b] - np.median(logs[a:b]) for a, b in zip(edges, edges[1:])])


def _judge(logs: np.ndarray, bkps: list[int], alpha: float, min_change: float, min_segment: int) -> list[tuple]:
    """(breakpoint, log change, log band, strength, stands) for each breakpoint, between its neighbours."""
    edges = [0, *bkps, len(logs)]
    out = []
    for k, b in enumerate(bkps):
        left, right = logs[max(edges[k], b - MAX_SEGMENT):b], logs[b:min(edges[k + 2], b + MAX_SEGMENT)]
        change = float(np.median(right) - np.median(left))
        z = rank_z(left, right)
        threshold = scan_threshold(len(left) + len(right), min_segment, alpha)
        stands = abs(z) > threshold and abs(math.expm1(change)) >= min_change and change * z > 0
        band = _band(left, right, threshold, 1.0 if change >= 0 else -1.0) if stands else math.inf
        out.append((b, change, band, abs(z) / threshold, stands))
    return out


def detect(indices: Sequence[int], values: Sequence[float], *, min_points: int = 8, alpha: float = DEFAULT_ALPHA,
           min_change: float = DEFAULT_MIN_CHANGE, min_segment: int = DEFAULT_MIN_SEGMENT,
           cost: str = "rank") -> Detection:
    """The steps of ``values`` (positive, oldest first; ``indices`` are the caller's positions of
    them, which a step reports). Fewer than ``min_points`` values: no band and no steps.
    ``cost``: ruptures' cost of the candidates, "rank" (the gate's), "l1" or "l2" (to compare with)."""
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
        failing = [j for j in judged if not j[4]]
        if not failing:
            break
        # merge away the weakest candidate (its statistic the smallest share of its threshold)
        # and judge the rest again
        bkps.remove(min(failing, key=lambda j: j[3])[0])
    edges = [0, *bkps, len(logs)]
    steps = tuple(Step(int(indices[b]), float(np.median(raw[edges[k]:b])), float(np.median(raw[b:edges[k + 2]])),
                       math.expm1(change), math.expm1(band)) for k, (b, change, band, _, _) in enumerate(judged))
    sigma = 1.4826 * float(np.median(np.abs(_residuals(logs, bkps))))
    return Detection(math.expm1(POINT_BAND_Z * sigma), sigma, steps)
