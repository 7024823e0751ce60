"""The rounds policy (runner/rounds.py, runner/median_ci.py) on fake engines whose latencies come
from seeded lists and advance a fake clock: a steady engine stops at the floor, a noisy one takes
the rounds its median's precision needs, a slow warm-up is waited out, the caps hold, p99 gets its
100 rounds only when asked, and the record carries what was planned and reached."""
from __future__ import annotations

import random

import pytest

from infermatrix.core.records import LatencyRecord
from infermatrix.core.schema import Case, read_record
from infermatrix.core.percentiles import latency_summary
from infermatrix.fixtures.config import build_run_config
from infermatrix.runner import median_ci, rounds
from infermatrix.runner.rounds import MAX_ROUNDS, MIN_ROUNDS, plan_rounds, precision_figures

MS = 1e-3


class FakeEngine:
    """``run`` takes the next latency of ``latencies(i)`` on a fake clock: no real time passes."""

    def __init__(self, latency):
        self.latency, self.calls, self.now = latency, 0, 0.0

    def clock(self) -> float:
        return self.now

    def run(self, prepared) -> None:
        assert prepared == "inputs"
        self.now += self.latency(self.calls)
        self.calls += 1


def noisy(median_s: float, noise: float, seed: int = 0):
    """Latencies around ``median_s`` with a relative Gaussian spread ``noise``, seeded."""
    rng = random.Random(seed)
    return lambda i: median_s * max(0.05, 1 + rng.gauss(0, noise))


def plan(engine: FakeEngine, latency_time: float = 1.5, latency_rounds=None, **kw):
    return plan_rounds(engine.run, "inputs", latency_time, latency_rounds, clock=engine.clock, **kw)


def test_a_steady_engine_settles_at_once_and_stops_at_the_floor():
    engine = FakeEngine(noisy(2 * MS, 0.002))
    p = plan(engine)
    # 2 first calls, then two windows of 10 that agree
    assert p.plan_calls == engine.calls == 22 and p.warmup_settled is True
    assert p.rounds == MIN_ROUNDS and p.reason.startswith("floor: p90 needs 10")
    assert p.warmup_rounds == rounds.PEDANTIC_WARMUP and p.precision_target == 0.01
    assert p.pilot_median_s == pytest.approx(2 * MS, rel=0.01)
    # today's plan filled 1.5 s: 750 rounds of 2 ms; this one times 10
    assert p.rounds * p.pilot_median_s < 0.05


def test_a_noisy_engine_takes_the_rounds_its_median_needs_and_reaches_about_the_target():
    steady, wobbly = plan(FakeEngine(noisy(2 * MS, 0.01, seed=1))), plan(FakeEngine(noisy(2 * MS, 0.08, seed=1)))
    assert steady.rounds < wobbly.rounds < 750
    assert wobbly.reason.startswith("precision: +/-1.00% median CI needs")
    assert wobbly.rounds == median_ci.rounds_for(0.01 * rounds.PLAN_MARGIN, wobbly.pilot_iqr_ratio, MAX_ROUNDS)
    # what those rounds reach on the same distribution: near the target (the pilot's IQR is an estimate)
    draw = noisy(2 * MS, 0.08, seed=7)
    reached = median_ci.median_ci_rel([draw(i) for i in range(wobbly.rounds)])
    assert 0.005 < reached < 0.015


def test_a_warm_up_that_is_slow_for_k_calls_is_waited_out():
    def slow_then_steady(k):
        steady = noisy(1 * MS, 0.005, seed=3)
        return lambda i: (5 * MS if i < k else 0) + steady(i)  # 6x slower: windows stay 10 calls

    assert plan(FakeEngine(slow_then_steady(0))).plan_calls == 22
    # 20 slow calls: the first window is slow, the second holds 8 slow ones (its median is still
    # slow: the mean sees the step), the third and fourth are steady
    slow = FakeEngine(slow_then_steady(20))
    p = plan(slow)
    assert p.warmup_settled is True
    assert p.plan_calls == 2 + 10 * 4 and slow.calls == p.plan_calls
    assert p.pilot_median_s == pytest.approx(1 * MS, rel=0.02)  # the pilot saw the settled runtime only


@pytest.mark.parametrize("latency_ms, window", [(2, 10), (18, 5), (31, 3), (90, 3), (95, 2), (600, 2)])
def test_a_slow_model_warms_up_in_short_windows(latency_ms, window):
    # two windows fit half the warm-up's 0.375 s, 3 calls at least; 2 where 2 + 2 x 2 calls and the
    # floor's 10 rounds exceed --latency-time (1.5 s: above 94 ms a call), whose count the pilot cannot change
    p = plan(FakeEngine(noisy(latency_ms * MS, 0.002)))
    assert p.warmup_settled is True and p.plan_calls == 2 + 2 * window
    if window == rounds.FLOOR_WINDOW:
        assert p.rounds == rounds.MIN_ROUNDS and p.reason.startswith("floor")


def test_a_fast_model_whose_second_call_is_slow_gets_windows_of_the_usual_size():
    # a lazy initialisation makes the second call 200 ms; the model runs at 5 ms after it
    steady = noisy(5 * MS, 0.05, seed=2)
    p = plan(FakeEngine(lambda i: 200 * MS if i < 2 else steady(i)))
    assert p.pilot_median_s == pytest.approx(0.005, rel=0.1)
    # the 2-call windows found 5 ms, so the warm-up went on in windows of 10 and the pilot has 20 calls
    assert p.plan_calls >= 2 + 2 * rounds.FLOOR_WINDOW + 2 + 2 * rounds.WINDOW
    assert p.reason.startswith(("precision", "cap")) and p.rounds > rounds.MIN_ROUNDS


def test_a_slow_model_still_warming_after_its_two_short_windows_is_recorded_unsettled():
    # as with windows of 3: two windows spend the warm-up's budget, and the record says the runtime had not settled
    engine = FakeEngine(lambda i: max(400 - 40 * i, 200) * MS)  # faster each call until the 6th: 400 ... 200 ms
    p = plan(engine)
    assert p.warmup_settled is False and p.plan_calls == 2 + 2 * rounds.FLOOR_WINDOW and p.rounds == rounds.MIN_ROUNDS
    settled = plan(FakeEngine(lambda i: (400 if i == 0 else 200) * MS))
    assert settled.warmup_settled is True and settled.pilot_median_s == pytest.approx(0.2)


def test_a_runtime_that_keeps_getting_faster_stops_at_the_warm_up_budget_unsettled():
    engine = FakeEngine(lambda i: 10 * MS * 0.97 ** i + 1 * MS)  # 3 % faster every call: never settles
    p = plan(engine, latency_time=1.0)
    budget = rounds.WARMUP_SHARE * 1.0
    assert p.warmup_settled is False
    assert budget <= p.warmup_s < budget + 5 * 10 * MS  # stops at the first window past the budget


def test_a_clock_that_never_moves_still_ends_the_warm_up():
    engine = FakeEngine(lambda i: 0.0 if i % 2 else 1 * MS * 0.9 ** i)
    p = plan_rounds(engine.run, "inputs", 1.0, clock=lambda: 0.0)
    assert p.plan_calls <= rounds.MAX_WARMUP_CALLS + 5 and p.rounds >= MIN_ROUNDS


def test_latency_time_caps_the_rounds_and_the_reason_says_so():
    engine = FakeEngine(noisy(10 * MS, 0.2, seed=2))  # wants far more than 0.2 s / 10 ms = 20
    p = plan(engine, latency_time=0.2)
    # the cap holds the warm-up and the timed rounds together, at the mean: what seconds are spent at
    assert p.rounds == int((0.2 - p.warmup_s) / p.pilot_mean_s) > MIN_ROUNDS
    assert p.warmup_s + p.rounds * p.pilot_mean_s <= 0.2
    assert p.reason.startswith(f"cap: --latency-time 0.2 s less {p.warmup_s:.3g} s of warm-up at ")


def test_the_time_cap_holds_when_preempted_calls_make_the_mean_far_above_the_median():
    base = noisy(0.1 * MS, 0.3, seed=8)
    engine = FakeEngine(lambda i: base(i) + (10 * MS if i % 10 == 9 else 0))  # every 10th call preempted
    p = plan(engine, latency_time=0.5)
    assert p.pilot_mean_s > 5 * p.pilot_median_s
    # planned at the median, the rounds would have been 2000 (about 2.2 s of 1.1 ms calls)
    assert p.rounds == int((0.5 - p.warmup_s) / p.pilot_mean_s) < 1000 and "(pilot mean)" in p.reason
    start = engine.now
    for _ in range(p.rounds):
        engine.run("inputs")
    assert engine.now - start < 0.6


def test_max_rounds_caps_a_fast_noisy_engine():
    p = plan(FakeEngine(noisy(0.05 * MS, 0.5, seed=4)), latency_time=100.0)
    assert p.rounds == MAX_ROUNDS and p.reason.startswith(f"cap: MAX_ROUNDS {MAX_ROUNDS}")


@pytest.mark.parametrize("latency_ms", [2, 100])  # 100 ms: 1.5 s allows 15, p99 still gets its 100
def test_p99_asked_gets_100_rounds_and_only_then(latency_ms):
    asked = plan(FakeEngine(noisy(latency_ms * MS, 0.002)), percentiles=(50, 90, 99))
    assert asked.rounds == 100 and asked.reason.startswith("floor: p99 asked: needs 100")
    not_asked = plan(FakeEngine(noisy(latency_ms * MS, 0.002)))
    assert not_asked.rounds == MIN_ROUNDS


def test_latency_rounds_fixes_the_count_and_the_warm_up_as_before():
    engine = FakeEngine(noisy(2 * MS, 0.3))
    p = plan(engine, latency_rounds=200, percentiles=(50, 90, 99))
    assert (p.rounds, p.warmup_rounds, p.plan_calls, engine.calls) == (200, 20, 2, 2)
    assert p.warmup_settled is None and p.precision_target is None and p.reason == "fixed: --latency-rounds 200"
    assert plan(FakeEngine(noisy(2 * MS, 0.3)), latency_rounds=5).warmup_rounds == 2


def test_unknown_percentiles_are_refused_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"percentiles \[95\]: no minimum sample count; valid: \[50, 90, 99\]"):
        plan(FakeEngine(noisy(2 * MS, 0.01)), percentiles=(50, 95))


@pytest.mark.parametrize("n, j", [(5, None), (6, 1), (10, 2), (20, 6), (100, 40)])
def test_the_order_statistic_ranks_are_the_binomial_ones(n, j):
    # e.g. n=10: P(X <= 1) = 11/1024 <= 2.5 % < P(X <= 2) = 56/1024, so [x_(2), x_(9)]
    assert median_ci.lower_rank(n) == j


def test_the_reached_precision_is_half_the_intervals_width_over_the_median():
    samples = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 1.3, 1.4]  # ranks 2 and 9: [1.0, 1.3], median 1.0
    assert median_ci.median_ci(samples) == (1.0, 1.3)
    assert median_ci.median_ci_rel(samples) == pytest.approx(0.15)


def test_a_p99_not_asked_for_is_null_saying_so_and_too_few_samples_give_no_ci():
    samples = [1 * MS] * 30
    summary = latency_summary(samples, 1)
    out = precision_figures(samples, (50, 90), summary["percentile_notes"])
    assert summary["p99_s"] is None and out["median_ci_rel"] == 0.0
    assert out["percentile_notes"]["p99_s"] == ("p99 needs >= 100 samples; 30 were taken (not asked for: "
                                                "--latency-percentiles 50,90; add 99 for >= 100 rounds)")
    fixed = precision_figures(samples[:5], None, latency_summary(samples[:5], 1)["percentile_notes"])
    assert fixed["median_ci_rel"] is None
    assert fixed["percentile_notes"]["median_ci_rel"] == "a 95% CI of the median needs >= 6 samples; 5 were taken"
    assert "not asked" not in fixed["percentile_notes"]["p99_s"]  # --latency-rounds: nothing was asked


def test_the_latency_record_carries_the_plan_and_the_precision_reached():
    engine = FakeEngine(noisy(2 * MS, 0.05, seed=5))
    p = plan(engine)
    draw = noisy(2 * MS, 0.05, seed=6)
    samples = [draw(i) for i in range(p.rounds)]
    summary = latency_summary(samples, 1)
    summary.update(precision_figures(samples, (50, 90), summary["percentile_notes"]))
    record = LatencyRecord.of(Case("tiny-cnn", "torch", "fp32", 1, "cpu"), None, **summary, **p.figures())
    info = record.to_extra_info()
    back = read_record(info)
    assert back.rounds == p.rounds and back.warmup_rounds == p.plan_calls + p.warmup_rounds
    assert back.warmup_settled is True and back.latency_precision_target == 0.01
    assert back.rounds_reason == p.reason and back.warmup_s == pytest.approx(p.warmup_s)
    assert back.median_ci_rel == pytest.approx(median_ci.median_ci_rel(samples)) and back.median_ci_rel > 0
    assert back.median_ci_method.startswith("order-statistic 95% CI")


def test_the_options_reach_the_matrix_and_bad_percentiles_are_usage_errors(tmp_path):
    run = build_run_config({"latency_precision": "0.02", "latency_percentiles": "99,50"}, rootdir=tmp_path, env={})
    assert run.matrix.latency_precision == 0.02 and run.matrix.latency_percentiles == (50, 99)
    default = build_run_config({}, rootdir=tmp_path, env={})
    assert default.matrix.latency_precision == 0.01 and default.matrix.latency_percentiles == (50, 90)
    with pytest.raises(pytest.UsageError, match=r"--latency-percentiles = '50,95': unknown percentile\(s\) 95; "
                                                r"valid: 50, 90, 99"):
        build_run_config({"latency_percentiles": "50,95"}, rootdir=tmp_path, env={})
    with pytest.raises(pytest.UsageError, match="expected a positive fraction such as 0.01"):
        build_run_config({"latency_precision": "0"}, rootdir=tmp_path, env={})
