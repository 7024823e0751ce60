"""The load drivers on fake services: MLPerf LoadGen's verdicts and figures, failures, the
Server search, and the concurrency sweep."""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from infermatrix.scenarios import concurrency
from infermatrix.scenarios.loadgen import LoadGenSettings, run_scenario
from infermatrix.scenarios.loadgen_result import LoadGenResult, read_detail_log
from infermatrix.scenarios.server_search import server_search

FAST = LoadGenSettings(min_duration_s=0.3, max_duration_s=10, min_queries=64, server_min_queries=64, samples=4)


def sleeper(seconds: float):
    def run(_prepared):
        time.sleep(seconds)
    return run


def prepared(workers: int = 1, samples: int = 4):
    return [[f"w{w}s{i}" for i in range(samples)] for w in range(workers)]


def test_single_stream_is_valid_and_reports_loadgen_figures(tmp_path):
    res = run_scenario("SingleStream", sleeper(0.001), prepared(), FAST, tmp_path, 0.001)
    fig = res.figures()
    assert res.valid and fig["loadgen_result"] == "VALID" and fig["invalid_reasons"] == []
    assert fig["query_count"] >= 64 and 0.001 <= fig["p50_s"] <= fig["p90_s"] < 0.05
    assert fig["early_stopping_p90_s"] >= fig["p90_s"] * 0.99
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlperf_log_detail.txt", "mlperf_log_summary.txt"]
    assert read_detail_log(tmp_path / "mlperf_log_detail.txt")["result_validity"] == "VALID"


def test_offline_serves_every_sample_in_batches_of_the_engine(tmp_path):
    calls = []
    res = run_scenario("Offline", lambda p: calls.append(p), prepared(), FAST, tmp_path, 0.0005, batch=8)
    fig = res.figures()
    samples = read_detail_log(tmp_path / "mlperf_log_detail.txt")["result_query_count"]
    assert samples >= 1 and fig["samples_per_s"] > 0
    generated = read_detail_log(tmp_path / "mlperf_log_detail.txt")["generated_query_count"]
    assert generated == 1 and len(calls) >= 2          # one Offline query, served batch by batch


def test_an_invalid_run_says_why(tmp_path):
    # MultiStream's p99 early stopping needs ~660 queries; 64 cannot give a VALID result
    settings = LoadGenSettings(min_duration_s=0.01, min_queries=64, multistream_samples=4, samples=4)
    res = run_scenario("MultiStream", sleeper(0.0005), prepared(), settings, tmp_path, 0.0005, batch=4)
    fig = res.figures()
    assert not res.valid and fig["loadgen_result"] == "INVALID"
    assert any("early stopping" in r for r in fig["invalid_reasons"])
    # 64 queries: LoadGen prints a p99, we record none (a p99 needs 100 samples) and say why
    assert fig["p99_per_query_s"] is None and "needs >= 100" in fig["percentile_notes"]["p99_s"]
    assert fig["p90_s"] and fig["p50_s"]


def test_an_engine_failing_mid_load_fails_the_scenario_and_voids_loadgens_figures(tmp_path):
    counter = itertools.count()

    def flaky(_p):
        if next(counter) >= 5:
            raise RuntimeError("device lost")
    res = run_scenario("Server", flaky, prepared(2), FAST, tmp_path, 0.001, target_qps=200, latency_bound_s=0.05)
    fig = res.figures()
    assert not res.valid and fig["loadgen_result"] == "ERROR" and "device lost" in fig["failures"][0]
    assert any(r.startswith("engine failed") for r in fig["invalid_reasons"])
    # the queries after the failure were answered without running: no latency or rate is kept
    assert fig["p50_s"] is None and fig["completed_samples_per_s"] is None and fig["query_count"] is None
    assert fig["served_before_failure"] == 5 and (tmp_path / "mlperf_log_detail.txt").is_file()


def test_server_search_finds_the_valid_boundary(tmp_path):
    # one worker, 1 ms per query: capacity 1000/s; a 20 ms p99 bound holds well below that.
    # 512 queries per trial: p99 early stopping needs ~460 even when every query is in time
    settings = LoadGenSettings(min_duration_s=0.3, server_min_queries=512, samples=4)

    def trial(qps, step):
        return run_scenario("Server", sleeper(0.001), prepared(1), settings, tmp_path / str(step), 0.001,
                            target_qps=qps, latency_bound_s=0.02)
    search = server_search(trial, 250, steps=4)
    assert search.trials[0]["verdict"] == "VALID", search.trials[0]
    assert search.max_valid_qps is not None and 250 <= search.max_valid_qps < 1300
    assert all({"target_qps", "achieved_qps", "p99_s", "verdict", "reasons"} <= set(t) for t in search.trials)


def fake(capacity: float, short_below: float = 0.0):
    """A trial that LoadGen would judge VALID up to ``capacity`` (too short below ``short_below``)."""
    def trial(qps, step):
        log = {"result_validity": "VALID" if short_below <= qps <= capacity else "INVALID",
               "result_query_count": 600, "result_99.00_percentile_latency_ns": 1_000_000,
               "result_perf_constraints_met": qps <= capacity, "result_min_queries_met": qps >= short_below,
               "early_stopping_met": qps <= capacity, "result_overlatency_query_count": 0 if qps <= capacity else 50}
        return LoadGenResult("Server", Path(f"trial{step}"), log)
    return trial


def test_server_search_brackets_the_capacity_and_says_what_its_answer_means():
    search = server_search(fake(100.0), 40, steps=10)
    assert 98 <= search.max_valid_qps <= 100 and search.note is None
    assert [t["verdict"] for t in search.trials[:3]] == ["VALID", "VALID", "INVALID"]   # 40, 80, 160
    unfinished = server_search(fake(100.0), 40, steps=4)          # 40, 80, 160, 120
    assert unfinished.max_valid_qps == 80 and "between 80/s (VALID) and 120/s (INVALID)" in unfinished.note
    lower = server_search(fake(1e9), 40, steps=3)
    assert lower.max_valid_qps == 160 and "lower bound" in lower.note
    none = server_search(fake(1.0), 40, steps=3)
    assert none.max_valid_qps is None and "no target was VALID down to 10" in none.note
    short = server_search(fake(100.0, short_below=50), 40, steps=5)
    assert short.max_valid_qps is None and short.trials[0]["inconclusive"] and "want of queries" in short.note
    with pytest.raises(ValueError):
        server_search(fake(1.0), 0, steps=3)


def test_bad_settings_and_scenarios_are_refused(tmp_path):
    with pytest.raises(ValueError, match="min_queries=0"):
        LoadGenSettings(min_queries=0)
    with pytest.raises(ValueError, match="expected one of"):
        run_scenario("Burst", sleeper(0), prepared(), FAST, tmp_path, 0.001)
    with pytest.raises(ValueError, match="target_qps"):
        run_scenario("Server", sleeper(0), prepared(), FAST, tmp_path, 0.001)
    assert not LoadGenResult("Server", tmp_path).valid and LoadGenResult("Server", tmp_path).invalid_reasons()


def test_concurrency_sweep_accepts_stable_levels_and_gives_up_on_unstable_ones():
    def service():
        time.sleep(0.002)
    rows = concurrency.concurrency_sweep([service, service], [1, 2], window_s=0.1, max_windows=8)
    assert [r["concurrency"] for r in rows] == [1, 2] and all(r["stable"] for r in rows)
    assert rows[1]["throughput_qps"] > rows[0]["throughput_qps"] * 1.3  # sleeping service scales

    def drifting():  # phases of two windows, alternately 1 ms and 5 ms per call
        time.sleep(0.005 if int(time.perf_counter() / 0.1) % 2 else 0.001)
    rows = concurrency.concurrency_sweep([drifting], [1], window_s=0.05, max_windows=5)
    assert rows[0]["windows"] == 5 and not rows[0]["stable"]
    with pytest.raises(ValueError, match="prepared callers"):
        concurrency.concurrency_sweep([service], [1, 2], window_s=0.05, max_windows=2)


def test_concurrency_sweep_stops_on_a_failing_engine():
    def broken():
        raise RuntimeError("out of memory")
    rows = concurrency.concurrency_sweep([broken, broken], [1, 2], window_s=0.05, max_windows=3)
    assert len(rows) == 1 and "out of memory" in rows[0]["failures"][0]


def test_offline_builds_a_fixed_batch_engine_for_its_batch_and_checks_it_there(tmp_path):
    """A traced TorchScript graph is specialised to one batch: Offline at batch 8 must not run
    the batch-1 artifact, but a batch-8 build that passed the equivalence check at batch 8."""
    from infermatrix.engines.cache import EngineCache
    from infermatrix.runner.load_target import LoadTarget
    from infermatrix.core.schema import Case
    from infermatrix.runner.session import RunSession
    session = RunSession(EngineCache(tmp_path))
    target = LoadTarget(session, Case("tiny-cnn", "torchscript", "fp32", 1, "cpu"))
    one, eight = target.engine(1), target.engine(8)
    assert one is not eight                                            # two artifacts, one per batch
    assert Case("tiny-cnn", "torchscript", "fp32", 8, "cpu") in session._reports
    batches = {tuple(m["fields"]["batch_profile"] for m in [json.loads(p.read_text())])
               for p in (tmp_path / "torchscript").glob("*/meta.json")}
    assert batches == {(1,), (8,)}
    (prepared,) = target.prepared(eight, 8, 1, 1)[0]
    assert eight.to_host(eight.run(prepared))["logits"].shape[0] == 8
    session.close()
