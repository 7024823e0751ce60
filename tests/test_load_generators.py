"""The load generators on fake services: bounded, queueing counted, failures reported."""
from __future__ import annotations

import itertools
import time

import pytest

from fixtures import load


def service(seconds: float):
    def call():
        time.sleep(seconds)
    return call


def test_single_stream_stops_at_its_count_or_its_time_limit():
    assert load.single_stream(service(0.001), queries=20, max_seconds=10).completed == 20
    res = load.single_stream(service(0.01), queries=10_000, max_seconds=0.3)
    assert 5 < res.completed < 40 and res.duration_s < 1.0
    assert res.figures()["p50_s"] >= 0.01


def test_offline_counts_items_per_batch():
    res = load.offline(service(0.002), batch_size=8, queries=10, max_seconds=5)
    assert res.figures()["throughput_items_per_s"] == pytest.approx(8 * res.achieved_qps)


def test_server_latency_includes_queueing_and_the_run_is_bounded():
    relaxed = load.server(lambda: service(0.002), qps=50, queries=40, max_seconds=5, workers=1)
    assert relaxed.completed == 40 and relaxed.figures()["p50_s"] < 0.02
    overloaded = load.server(lambda: service(0.02), qps=200, queries=10_000, max_seconds=0.5, workers=1)
    figures = overloaded.figures()
    assert figures["p99_s"] > 0.1, "queued queries must count their wait"
    assert overloaded.duration_s < 2.0 and overloaded.scheduled < 10_000
    assert overloaded.achieved_qps < 80


def test_an_engine_failing_mid_load_is_reported_with_partial_figures():
    counter = itertools.count()

    def make_caller():
        def call():
            if next(counter) >= 5:
                raise RuntimeError("device lost")
        return call
    res = load.server(make_caller, qps=500, queries=100, max_seconds=5, workers=1)
    assert res.failures and "device lost" in res.failures[0]
    assert res.completed == 5
    single = load.single_stream(make_caller(), queries=100, max_seconds=5)
    assert single.completed == 0 and single.failures


def test_max_qps_search_finds_the_service_capacity():
    best, trials = load.max_qps_within(lambda: service(0.005), bound_s=0.05, start_qps=20, queries=40,
                                       max_seconds=2, workers=1, steps=6)
    # capacity is 200/s; a 40-query burst can run somewhat above it before p99 hits 50 ms
    assert 20 <= best < 400
    assert any(not t["met"] for t in trials) and any(t["met"] for t in trials)


def test_concurrency_sweep_accepts_stable_levels_and_gives_up_on_unstable_ones():
    rows = load.concurrency_sweep(lambda: service(0.002), [1, 2], window_s=0.1, max_windows=8)
    assert [r["concurrency"] for r in rows] == [1, 2] and all(r["stable"] for r in rows)
    assert rows[1]["throughput_qps"] > rows[0]["throughput_qps"] * 1.3  # sleeping service scales

    def drifting():  # phases of two windows, alternately 1 ms and 5 ms per call
        time.sleep(0.005 if int(time.perf_counter() / 0.1) % 2 else 0.001)
    rows = load.concurrency_sweep(lambda: drifting, [1], window_s=0.05, max_windows=5)
    assert rows[0]["windows"] == 5 and not rows[0]["stable"]
