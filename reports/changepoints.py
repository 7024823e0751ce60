"""Change points of one case's series, judged against the case's own noise.

Two steps, each with a reason:

1. **Candidates** from ruptures (a maintained change-point library): PELT with its rank cost
   (Lung-Yut-Fong et al. 2015) on the log of the values, so a run slowed 60 % by a loaded host
   counts as one rank, not as 60 %; its penalty is generous (a split whose rank statistic Z has
   Z^2 above log n is proposed): the judgement decides.
2. **Judgement** of each candidate by the case's own noise. A segment's level is the mean of its
   fastest third of runs: a host's interference or a process that lands in a slow mode only ever
   slows a run (on the 2-core EPYC, one process in five ran tiny-cnn 30 to 55 % slower), so the
   slow tail is noise and the fast core is the level. The noise is the runs' residuals around
   their segments' levels (the step itself is not noise), drawn again and again into windows as
   long as the judged one; at every split of such a window (``min_segment`` runs on each side at
   least) the difference of the two sides' levels is scaled by that split's own 95th percentile,
   and the largest over all splits is taken. A step stands when its own scaled difference is
   beyond the (1 - ``alpha``) quantile of those largest ones (picking the best split is paid for,
   with the noise's own shape, slow runs included) and when the change of the levels is at least
   ``min_change``; the weakest failing candidate is merged away and the rest judged again, then
   each step is moved to where its own scan puts it.

A step is reported with its band: the smallest difference of levels that would have stood at that
split, so "regressed by +12 % (band ±5 %)" says how far beyond the case's own noise it is. The
case's band of one run (the trend's shading) is 1.96 robust standard deviations of its runs around
their segments' medians. The draws use a fixed seed: the same history gives the same verdict.
bench/history_gate_power.py measures false alarms and power on this machine's own run-to-run noise
(and the choices made here: the rank cost against L1/L2, the fast level against the median, asv's
step detection).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: the false-alarm rate of one judged step (the test's level; the gate fails on a regression only,
#: about half of the false steps)
DEFAULT_ALPHA = 0.05
#: the smallest change worth a verdict, whatever the band (a 0.3 % step on a very quiet case is real
#: and irrelevant)
DEFAULT_MIN_CHANGE = 0.02
#: the fewest runs on each side of a step: below five, the fast third of a side is one or two runs,
#: and two slow runs of three would pass for a step
DEFAULT_MIN_SEGMENT = 5
#: noise windows drawn per judged step; the most runs on either side of a step judged
DRAWS = 999
#: the share of a segment's runs, fastest first, whose mean is its level
FAST_SHARE = 1 / 3
MAX_SEGMENT = 60
#: the run-to-run band of one point: 95 % of a single run's values around the case's level
POINT_BAND_Z = 1.96
COSTS = ("rank", "l1", "l2")


@dataclass(frozen=True)
class Step:
    index: int            # the caller's index of the first value after the step
    before: float         # the level of the runs before (the mean of their fastest third, geometric)
    after: float          # ... and after
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


def _fast_level(rows: np.ndarray) -> np.ndarray:
    """Per row: the mean of its fastest FAST_SHARE of values (a one-sided trim: a host's
    interference or a slow process only ever slows a run, so the slow tail is noise, the fast core
    is the level)."""
    keep = max(1, math.ceil(FAST_SHARE * rows.shape[1]))
    return np.sort(rows, axis=1)[:, :keep].mean(axis=1)


def _median_level(rows: np.ndarray) -> np.ndarray:
    return np.median(rows, axis=1)


#: the judgement's level of a segment: "fast" (the gate's) or "median" (to compare with)
LEVELS = {"fast": _fast_level, "median": _median_level}


def scan(window: np.ndarray, split: int, noise: np.ndarray, min_segment: int, alpha: float,
         test: str) -> tuple[float, float, float]:
    """(Z at ``split``, the threshold, the standard error at ``split``) of a bootstrap test of the
    scan: windows of the case's own ``noise`` (its runs' residuals around their segments' levels:
    the step itself is not noise) are drawn; at every split k (``min_segment`` runs on each side at
    least) the difference of the two sides' levels is standardized by its spread over those
    windows (so a short side, whose level is wild, weighs no more than a long one), and the
    threshold is the (1 - alpha) quantile of the largest |Z| over all splits: what runs with no
    step show somewhere, once in 1/alpha windows, with the noise's own shape (slow outliers
    included)."""
    level = LEVELS[test]
    rng = np.random.default_rng(0)   # the same history, the same verdict
    rows = np.vstack([window, rng.choice(noise, size=(DRAWS, len(window)), replace=True)])
    splits = range(min_segment, len(window) - min_segment + 1)
    diffs = np.stack([level(rows[:, k:]) - level(rows[:, :k]) for k in splits], axis=1)
    # each split's scale is its own null's 95th percentile, not its sd: a short side's level has
    # heavy tails (two slow runs of three), and scaling by the tail keeps those splits from setting
    # the threshold for all
    se = np.quantile(np.abs(diffs[1:]), 0.95, axis=0)
    se[se == 0] = np.inf   # a split the noise never moves (all runs equal) shows nothing
    z = diffs / se
    threshold = float(np.quantile(np.abs(z[1:]).max(axis=1), 1 - alpha))
    at = split - min_segment
    return float(z[0, at]), threshold, float(se[at])


def _residuals(logs: np.ndarray, bkps: list[int], test: str = "median") -> np.ndarray:
    """The runs' noise with the steps taken out: each segment's values around its level."""
    edges = [0, *bkps, len(logs)]
    return np.concatenate([logs[a:b] - LEVELS[test](logs[None, a:b])[0] for a, b in zip(edges, edges[1:])])


def _place(window: np.ndarray, min_segment: int) -> int:
    """Where one step fits the window best (ruptures' exact search, L1 cost: medians, so slow runs
    barely pull it)."""
    import ruptures as rpt

    return int(rpt.Dynp(model="l1", min_size=min_segment, jump=1).fit(window.reshape(-1, 1)).predict(n_bkps=1)[0])


def _judge(logs: np.ndarray, bkps: list[int], alpha: float, min_change: float, min_segment: int,
           test: str) -> list[tuple]:
    """(breakpoint, log change, log band, strength, stands, best split) for each breakpoint, between
    its neighbours (the best split: the one step that fits the window best, L1 cost)."""
    edges = [0, *bkps, len(logs)]
    noise = _residuals(logs, bkps, test)
    out = []
    for k, b in enumerate(bkps):
        lo, hi = max(edges[k], b - MAX_SEGMENT), min(edges[k + 2], b + MAX_SEGMENT)
        level = LEVELS[test]
        change = float(level(logs[None, b:hi])[0] - level(logs[None, lo:b])[0])
        z, threshold, se = scan(logs[lo:hi], b - lo, noise, min_segment, alpha, test)
        stands = abs(z) > threshold and abs(math.expm1(change)) >= min_change and change * z > 0
        out.append((b, change, threshold * se, abs(z) / threshold, stands, lo + _place(logs[lo:hi], min_segment)))
    return out


def detect(indices: Sequence[int], values: Sequence[float], *, min_points: int = 10, alpha: float = DEFAULT_ALPHA,
           min_change: float = DEFAULT_MIN_CHANGE, min_segment: int = DEFAULT_MIN_SEGMENT,
           cost: str = "rank", test: str = "fast") -> Detection:
    """The steps of ``values`` (positive, oldest first; ``indices`` are the caller's positions of
    them, which a step reports). Fewer than ``min_points`` values: no band and no steps.
    ``cost``: ruptures' cost of the candidates, "rank" (the gate's), "l1" or "l2"; ``test``: the
    judgement's level of a segment, "fast" (the gate's) or "median"; the others are there to be
    compared with (bench/history_gate_power.py)."""
    if cost not in COSTS:
        raise ValueError(f"cost {cost!r} is not one of {', '.join(COSTS)}")
    if test not in LEVELS:
        raise ValueError(f"test {test!r} is not one of {', '.join(LEVELS)}")
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
        judged = _judge(logs, bkps, alpha, min_change, min_segment, test)
        failing = [j for j in judged if not j[4]]
        if not failing:
            break
        # merge away the weakest candidate (its statistic the smallest share of its threshold)
        # and judge the rest again
        bkps.remove(min(failing, key=lambda j: j[3])[0])
    # each step where one step fits its window best (PELT's rank cost over the whole series places
    # a step among slow runs less well), kept when every step still stands there
    moved = sorted({j[5] for j in judged})
    lengths = np.diff([0, *moved, len(logs)])
    if moved != bkps and len(moved) == len(bkps) and lengths.min() >= min_segment:
        again = _judge(logs, moved, alpha, min_change, min_segment, test)
        if all(j[4] for j in again):
            bkps, judged = moved, again
    edges = [0, *bkps, len(logs)]
    steps = []
    for k, (b, change, band, *_) in enumerate(judged):
        lo = max(edges[k], b - MAX_SEGMENT)
        before = math.exp(LEVELS[test](logs[None, lo:b])[0])
        # the band in the step's own direction, so that a step that stands is always beyond it
        band_rel = math.expm1(band) if change > 0 else -math.expm1(-band)
        steps.append(Step(int(indices[b]), before, before * math.exp(change), math.expm1(change), band_rel))
    sigma = 1.4826 * float(np.median(np.abs(_residuals(logs, bkps))))
    return Detection(math.expm1(POINT_BAND_Z * sigma), sigma, tuple(steps))
