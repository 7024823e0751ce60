"""How many timed rounds a latency case gets (the measurement policy of perf_tests/test_latency.py
and of anything else that times an engine the same way).

pytest-benchmark's fixture times once, with a round count fixed beforehand, so the count is planned
before the timed rounds, in three steps:

1. **Warm-up until settled.** After 2 calls (the first allocate), calls run in windows (10 calls,
   fewer down to 3 for a model so slow that two windows of 10 would not fit half the warm-up's time)
   until a window's median and mean are each no more than 3 % faster than the window before it:
   the runtime has stopped getting faster (allocation, autotuning, caches, lazy compilation). The
   median alone would miss a plateau of slow calls that ends late in a window (8 slow calls of 10
   leave its median slow, equal to the window before); the mean sees the step. One-sided on
   purpose: warm-up only ever makes calls faster, so a window slower than the one before is noise,
   not warm-up still going on, and demanding two-sided agreement on a noisy host would spend the
   warm-up's whole budget on noise. It stops unsettled at ``WARMUP_SHARE`` of ``latency_time``
   (after two windows at least); the record says so. A model so slow that the floor's rounds are all
   ``latency_time`` allows checks in windows of 2 calls: the pilot cannot change its count (if the
   pilot's latency says otherwise, the warm-up goes on in windows of the usual size).
2. **Pilot.** The last two windows (20 calls, down to 4) give the median latency and the spread
   (IQR / median).
3. **Rounds.** The fewest rounds whose median's 95 % interval (runner/median_ci.py) is predicted
   within ``PLAN_MARGIN`` x ``precision`` (default +/-1 %), at least ``MIN_ROUNDS`` (p90 needs 10)
   and at least 100 when p99 is asked for; capped by what is left of ``latency_time`` after the
   warm-up / the pilot's mean, and by ``MAX_ROUNDS``: ``latency_time`` bounds the warm-up and the
   timed rounds together (a cap on the rounds alone let a noisy resnet18 case spend 2.1 s where
   the fixed-fraction plan spent 1.8 s). A percentile the user asked for wins over the time cap, as ``MIN_ROUNDS`` always
   did: a p99 asked for and then recorded as null would answer a question nobody asked.

The precision actually reached is computed from the timed samples afterwards (``median_ci_rel``).
``--latency-rounds N`` fixes the count and the warm-up as before (2 calls, then ``max(2, N // 10)``
warm-up rounds): no adaptivity.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from infermatrix.core.percentiles import MIN_SAMPLES, NOTES_KEY

from . import median_ci

MIN_ROUNDS, MAX_ROUNDS = 10, 2000
DEFAULT_PRECISION = 0.01
DEFAULT_PERCENTILES = (50, 90)
WINDOW, SHORT_WINDOW = 10, 3
#: the window of a model so slow that the floor's rounds are all the time allows (``warm_up``)
FLOOR_WINDOW = 2
#: plan for this share of the target: the pilot's IQR is an estimate and the interval's width varies
#: from sample to sample (simulated on Gaussian noise with a 20-call pilot: at 1.0 the reached
#: half-width's median is 1.06x the target and 58 % of cases miss it; at 0.85 the median is 0.9x,
#: 36 % miss and 18-22 % miss by more than 20 %; 0.7 costs 1.4x the rounds of 0.85 for 0.75x)
PLAN_MARGIN = 0.85
#: a window this much faster than the one before means the runtime is still warming up
SETTLE_TOLERANCE = 0.03
#: the warm-up's time budget, as a share of ``latency_time``, and a count that ends it whatever the clock says
WARMUP_SHARE = 0.25
MAX_WARMUP_CALLS = 2000
#: warm-up rounds pytest-benchmark runs after the plan: gc.collect() and the host snapshot run
#: between the plan and the rounds, and one call touches the caches again (one, not more: on a
#: model of 0.6 s a call, each untimed call is 0.6 s of the case)
PEDANTIC_WARMUP = 1


@dataclass(frozen=True)
class RoundsPlan:
    rounds: int
    warmup_rounds: int          # pytest-benchmark's warmup_rounds (after the plan's own calls)
    plan_calls: int             # untimed calls the plan made: warm-up and pilot
    warmup_settled: bool | None  # None: not checked (--latency-rounds)
    warmup_s: float             # seconds the plan's calls took
    reason: str                 # why this many rounds
    precision_target: float | None  # None: the count was fixed
    pilot_median_s: float | None = None
    pilot_mean_s: float | None = None
    pilot_iqr_ratio: float | None = None

    def figures(self) -> dict[str, Any]:
        """The plan's fields of a LatencyRecord (core/records.py)."""
        return {"rounds": self.rounds, "warmup_rounds": self.plan_calls + self.warmup_rounds,
                "rounds_reason": self.reason, "warmup_settled": self.warmup_settled, "warmup_s": self.warmup_s,
                "latency_precision_target": self.precision_target}


def _timed(run: Callable[[Any], Any], prepared: Any, clock: Callable[[], float]) -> float:
    start = clock()
    run(prepared)
    return clock() - start


def warm_up(run: Callable[[Any], Any], prepared: Any, budget_s: float,
            clock: Callable[[], float] = time.perf_counter,
            latency_time: float | None = None) -> tuple[list[float], int, bool]:
    """(the last two windows' latencies, calls made, settled): calls until a window's median and
    mean are no more than SETTLE_TOLERANCE faster than the previous window's, or until ``budget_s``."""
    start = clock()
    first = [_timed(run, prepared, clock) for _ in range(2)]  # the first calls allocate: never in a window
    # two windows fit half the budget at the second call's latency (room for a window more when the
    # first two disagree), between 3 calls (a median that ignores one outlier) and 10 (a 20-call
    # pilot); measured: windows sized to the whole budget spent 0.43 s on a 31 ms resnet18 where
    # the fixed-fraction plan spent 0.28 s
    window = min(WINDOW, max(SHORT_WINDOW, int(budget_s / (4 * max(first[1], 1e-9)))))
    # the floor's rounds are all --latency-time allows: the count is the floor whatever the pilot's
    # spread, so the windows only check that the runtime settled, with 2 calls each (measured: 35 of
    # the default matrix's 106 cases, 61 s of its 74 s of warm-up, spent 8 calls before 10 rounds
    # of 0.1-0.6 s)
    short = floor_forced(first[1], latency_time)
    if short:
        window = FLOOR_WINDOW
    windows: list[list[float]] = []
    while True:
        windows.append([_timed(run, prepared, clock) for _ in range(window)])
        calls = 2 + window * len(windows)
        settled = len(windows) >= 2 and all(f(windows[-1]) >= f(windows[-2]) * (1 - SETTLE_TOLERANCE)
                                            for f in (statistics.median, statistics.fmean))
        if settled or (len(windows) >= 2 and (clock() - start >= budget_s or calls >= MAX_WARMUP_CALLS)):
            break
    pilot = windows[-2] + windows[-1]
    if short and not floor_forced(statistics.fmean(pilot), latency_time):
        # the second call was slow for a reason of its own (a lazy initialisation): at the pilot's
        # latency the count is not the floor's, so it is planned from windows of the usual size
        more, extra, settled = warm_up(run, prepared, budget_s, clock)
        return more, calls + extra, settled
    return pilot, calls, settled


def floor_forced(latency_s: float, latency_time: float | None) -> bool:
    """Whether at ``latency_s`` a call the two first calls, two windows of FLOOR_WINDOW and the
    floor's MIN_ROUNDS exceed ``latency_time`` (None: never): the round count is then the floor."""
    return latency_time is not None and latency_s * (2 + 2 * FLOOR_WINDOW + MIN_ROUNDS) > latency_time


def _floor(percentiles: Sequence[int]) -> tuple[int, str]:
    """The fewest rounds the asked percentiles need, and which percentile sets it."""
    unknown = [q for q in percentiles if q not in MIN_SAMPLES]
    if unknown:
        raise ValueError(f"percentiles {unknown}: no minimum sample count; valid: {sorted(MIN_SAMPLES)}")
    q = max(percentiles, key=lambda p: MIN_SAMPLES[p], default=90)
    need = MIN_SAMPLES[q]
    if need <= MIN_ROUNDS:
        return MIN_ROUNDS, f"p90 needs {MIN_ROUNDS}" if q == 90 else f"the minimum {MIN_ROUNDS}"
    return need, f"p{q} asked: needs {need}"


def choose_rounds(pilot: Sequence[float], latency_time: float, precision: float,
                  percentiles: Sequence[int], spent_s: float = 0.0) -> tuple[int, str]:
    """(rounds, why) from a pilot's latencies, ``spent_s`` of ``latency_time`` gone to the warm-up;
    see the module's step 3."""
    # the time cap divides by the mean: seconds are spent at the mean, and under interference a
    # call's mean is several times its median (measured: 13.9 s of rounds for a 1.5 s cap planned
    # at the median of a tiny model whose preempted calls took 100x it)
    mean = max(statistics.fmean(pilot), 1e-9)
    spread = median_ci.iqr_ratio(pilot)
    floor, floor_why = _floor(percentiles)
    wanted = median_ci.rounds_for(precision * PLAN_MARGIN, spread, MAX_ROUNDS)
    time_cap = int(max(latency_time - spent_s, 0.0) / mean)
    want = (f"+/-{precision:.2%} median CI needs {wanted if wanted <= MAX_ROUNDS else f'> {MAX_ROUNDS}'}"
            f" (pilot IQR/median {spread:.3f})")
    if wanted <= floor:
        return floor, f"floor: {floor_why} ({want})"
    cap = min(time_cap, MAX_ROUNDS)
    if wanted <= cap:
        return wanted, f"precision: {want}"
    if cap <= floor:
        return floor, f"floor: {floor_why}, above the --latency-time cap of {time_cap} ({want})"
    which = (f"--latency-time {latency_time:g} s less {spent_s:.3g} s of warm-up at {mean * 1e3:.3g} ms a call "
             "(pilot mean)"
             if time_cap <= MAX_ROUNDS else f"MAX_ROUNDS {MAX_ROUNDS}")
    return cap, f"cap: {which} ({want})"


def plan_rounds(run: Callable[[Any], Any], prepared: Any, latency_time: float,
                latency_rounds: int | None = None, *, precision: float = DEFAULT_PRECISION,
                percentiles: Sequence[int] = DEFAULT_PERCENTILES,
                clock: Callable[[], float] = time.perf_counter) -> RoundsPlan:
    """Warm ``run`` up and plan the timed rounds (the module's docstring); ``clock`` is for tests."""
    start = clock()
    if latency_rounds:
        for _ in range(2):
            run(prepared)  # first calls allocate, autotune, fill caches
        return RoundsPlan(latency_rounds, max(2, latency_rounds // 10), 2, None, clock() - start,
                          f"fixed: --latency-rounds {latency_rounds}", None)
    pilot, calls, settled = warm_up(run, prepared, WARMUP_SHARE * latency_time, clock, latency_time)
    rounds, reason = choose_rounds(pilot, latency_time, precision, percentiles, spent_s=clock() - start)
    return RoundsPlan(rounds, PEDANTIC_WARMUP, calls, settled, clock() - start, reason, precision,
                      statistics.median(pilot), statistics.fmean(pilot), median_ci.iqr_ratio(pilot))


def precision_figures(samples: Sequence[float], percentiles: Sequence[int] | None,
                      notes: dict[str, str]) -> dict[str, Any]:
    """The precision the timed rounds reached (``median_ci_rel``, its method) and ``notes`` (the
    percentile reasons) completed: why the CI is null, and that a null percentile was not asked
    for (``percentiles``: those asked; None when --latency-rounds fixed the count)."""
    notes = dict(notes)
    reached = median_ci.median_ci_rel(samples)
    if reached is None:
        notes["median_ci_rel"] = median_ci.ci_note(samples) or "no CI"
    for q, need in MIN_SAMPLES.items():
        key = f"p{q}_s"
        if percentiles is not None and key in notes and q not in percentiles:
            asked = ",".join(map(str, percentiles))
            notes[key] += f" (not asked for: --latency-percentiles {asked}; add {q} for >= {need} rounds)"
    return {"median_ci_rel": reached, "median_ci_method": median_ci.METHOD, NOTES_KEY: notes}
