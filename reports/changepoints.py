"""Change points of one case's series, judged against the case's own noise band.

Two steps, each with a reason:

1. **Candidates** from ruptures (a maintained change-point library): PELT with the L1 cost on the
   log of the values, so a step is a ratio and one wild run moves a median, not a mean.
2. **Judgement** of each candidate against the case's own noise: ``sigma`` is the robust spread of
   one run's log value from run to run (1.4826 x the MAD of successive differences / sqrt(2), which
   a step barely moves). A step between two segments stands when the log ratio of their medians is
   beyond ``z`` standard errors of that difference (a median's is 1.2533 sigma / sqrt(n)) and at
   least ``min_change``; the weakest failing candidate is merged away and the rest judged again.

The band a step was judged against is reported with it, so "regressed by 12 % (band ±5 %)" says
how far beyond noise it is. bench/history_gate_power.py measures false alarms and power on this
machine's own run-to-run noise.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: how many standard errors a step must be to stand (two-sided 0.1 % for one test; the candidates
#: are the best positions PELT found, so the threshold sits above a single test's 1.96)
DEFAULT_Z = 3.3
#: the smallest change worth a verdict, whatever the band (a 0.3 % step on a very quiet case is real
#: and irrelevant)
DEFAULT_MIN_CHANGE = 0.02
#: the fewest runs on each side of a step
DEFAULT_MIN_SEGMENT = 3
#: the run-to-run band of one point: 95 % of a single run's values around the case's level
POINT_BAND_Z = 1.96
MEDIAN_SE = math.sqrt(math.pi / 2)   # a median's standard error over a mean's, normal noise


@dataclass(frozen=True)
class Step:
    index: int            # the caller's index of the first value after the step
    before: float         # median of the segment before
    after: float          # median of the segment after
    change_rel: float     # after / before - 1
    band_rel: float       # what noise alone moves this difference of medians (z standard errors)

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


def _candidates(logs: np.ndarray, sigma: float, min_segment: int) -> list[int]:
    import ruptures as rpt   # imported where it is used: `infermatrix watch --help` stays light

    n = len(logs)
    if n < 2 * min_segment:
        return []
    # generous penalty (an L1 cost is in units of sigma): PELT proposes, the judgement decides
    algo = rpt.Pelt(model="l1", min_size=min_segment, jump=1).fit(logs.reshape(-1, 1))
    return [b for b in algo.predict(pen=max(sigma, 1e-9) * math.log(n)) if b < n]


def _judge(logs: np.ndarray, bkps: list[int], sigma: float, z: float, min_change: float) -> list[tuple]:
    """(breakpoint, before, after, log change, log band, stands) for each breakpoint."""
    edges = [0, *bkps, len(logs)]
    out = []
    for k, b in enumerate(bkps):
        left, right = logs[edges[k]:b], logs[b:edges[k + 2]]
        before, after = float(np.median(left)), float(np.median(right))
        change = after - before
        band = z * MEDIAN_SE * sigma * math.sqrt(1 / len(left) + 1 / len(right))
        stands = abs(change) > band and abs(math.expm1(change)) >= min_change
        out.append((b, before, after, change, band, stands))
    return out


def detect(indices: Sequence[int], values: Sequence[float], *, min_points: int = 8, z: float = DEFAULT_Z,
           min_change: float = DEFAULT_MIN_CHANGE, min_segment: int = DEFAULT_MIN_SEGMENT) -> Detection:
    """The steps of ``values`` (positive, oldest first; ``indices`` are the caller's positions of
    them, which a step reports). Fewer than ``min_points`` values: no band and no steps."""
    if len(indices) != len(values):
        raise ValueError(f"{len(indices)} indices for {len(values)} values")
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(f"values must be positive and finite: {[v for v in values if not (v > 0)][:3]}")
    if len(values) < max(min_points, 2 * min_segment):
        return Detection(None, None, ())
    logs = np.log(np.asarray(values, dtype=float))
    sigma = robust_sigma(logs)
    bkps = _candidates(logs, sigma, min_segment)
    while True:
        judged = _judge(logs, bkps, sigma, z, min_change)
        failing = [j for j in judged if not j[5]]
        if not failing:
            break
        # merge away the weakest candidate (smallest change over its band) and judge the rest again
        weakest = min(failing, key=lambda j: abs(j[3]) / j[4] if j[4] > 0 else math.inf)
        bkps.remove(weakest[0])
    steps = tuple(Step(int(indices[b]), math.exp(before), math.exp(after), math.expm1(change), math.expm1(band))
                  for b, before, after, change, band, _ in judged)
    return Detection(math.expm1(POINT_BAND_Z * sigma), sigma, steps)
