"""Scalability under load with MLPerf LoadGen: SingleStream, MultiStream, Server, Offline,
plus a concurrency sweep with perf_analyzer semantics.

LoadGen schedules the queries, measures their latency and gives the verdict (fixtures/loadgen.py);
every query's inputs are prepared before the test starts. Durations are CI-sized by default
(--load-seconds, --load-queries, --server-queries run longer). Each scenario checks
equivalence first (at the batch it serves), runs once inside ``benchmark.pedantic`` (the
benchmark's time is the scenario's wall time) and records LoadGen's figures, verdict and the
folder of its logs in ``extra_info``. An INVALID verdict is a measurement, recorded with its
reasons; an engine that raises under load fails the test. Marked ``scenario``.
"""
from __future__ import annotations

import pytest

from fixtures import load
from fixtures.load_target import LoadTarget
from fixtures.loadgen import run_scenario, server_search
from fixtures.matrix import Case

pytestmark = pytest.mark.scenario
INTERFERENCE = 1.5   # LoadGen p50 over a direct call's beyond which the run is flagged


@pytest.fixture
def target(load_case, run_session) -> LoadTarget:
    return LoadTarget(run_session, load_case)


@pytest.fixture
def log_dir(request, loadgen_run_dir):
    return loadgen_run_dir / request.node.name.replace("/", "_")


def record(benchmark, case: Case, scenario: str, figures: dict) -> None:
    benchmark.group = f"load-{case.model}-{scenario}"
    benchmark.extra_info.update({"model": case.model, "engine": case.engine, "precision": case.precision,
                                 "device": case.device, "scenario": scenario, **figures})
    failures = figures.get("failures") or []
    assert not failures, f"{case.id} {scenario}: the engine failed under load: {failures} (partial figures recorded)"


def once(benchmark, fn):
    """Run the scenario once as the benchmark (pedantic returns the function's result)."""
    return benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)


def _loadgen_case(scenario, batch, target, load_options, log_dir, benchmark, load_case) -> dict:
    settings = load_options.loadgen
    prepared = target.prepared(batch, 1, settings.samples)
    expected = target.expected_latency(batch, prepared[0][0])
    engine = target.engine(batch)
    res = once(benchmark, lambda: run_scenario(scenario, engine.run, prepared, settings, log_dir / scenario,
                                               expected, batch=batch))
    figures = {**res.figures(), "batch_size": batch, "direct_latency_s": expected}
    one_in_flight = scenario in ("SingleStream", "MultiStream")  # a query's latency is one call's
    if one_in_flight and figures["p50_s"] and figures["p50_s"] > INTERFERENCE * expected:
        # measured here: tiny models on 2 cores with PyTorch's default OpenMP team (spin-waiting
        # at every barrier) ran 250x slower under LoadGen than called directly; LoadGen's own
        # threads preempt a spinning worker. Recorded, not hidden: the figure is LoadGen's.
        figures["interference_note"] = (
            f"LoadGen's p50 {figures['p50_s'] * 1e3:.3f} ms is {figures['p50_s'] / expected:.1f}x the "
            f"{expected * 1e3:.3f} ms of a direct call: the engine's threads compete with LoadGen's for the "
            "cores (try --threads N-1, or OMP_WAIT_POLICY=PASSIVE in the environment)")
    record(benchmark, load_case, scenario, figures)
    assert figures["query_count"], f"LoadGen completed no query; see {log_dir / scenario}"
    return figures


def test_single_stream(load_case, target, load_options, log_dir, benchmark):
    figures = _loadgen_case("SingleStream", 1, target, load_options, log_dir, benchmark, load_case)
    assert figures["p90_s"] and figures["p90_s"] >= figures["p50_s"]


def test_multi_stream(load_case, target, load_options, log_dir, benchmark):
    figures = _loadgen_case("MultiStream", load_options.loadgen.multistream_samples, target, load_options,
                            log_dir, benchmark, load_case)
    assert figures["p99_per_query_s"]


def test_offline(load_case, target, load_options, log_dir, benchmark):
    figures = _loadgen_case("Offline", load_options.offline_batch, target, load_options, log_dir, benchmark,
                            load_case)
    assert figures["samples_per_s"] and figures["samples_per_s"] > 0


def test_server(load_case, target, load_options, run_session, log_dir, benchmark):
    settings = load_options.loadgen
    bound = load_options.server_bound_s or target_bound(run_session, load_case, settings)
    prepared = target.prepared(1, settings.server_workers, settings.samples)
    latency = target.expected_latency(1, prepared[0][0])
    engine = target.engine(1)

    def trial(qps: float, step: int):
        return run_scenario("Server", engine.run, prepared, settings, log_dir / f"Server-trial{step}-{qps:.2f}qps",
                            latency, target_qps=qps, latency_bound_s=bound)
    # start at half of what one worker serves back to back; the search doubles or bisects from there
    best, trials = once(benchmark, lambda: server_search(trial, 0.5 / latency, load_options.search_steps))
    inconclusive = [t for t in trials if t.get("inconclusive")]
    record(benchmark, load_case, "Server", {
        "latency_bound_s": bound, "max_valid_qps": best, "trials": trials,
        "search_note": ("stopped: a trial was INVALID for want of queries or duration; raise --server-queries "
                        "or --load-max-seconds" if inconclusive else None),
        "failures": [f for t in trials for f in t["failures"]]})
    assert trials and all(t["verdict"] in ("VALID", "INVALID") for t in trials), trials


def target_bound(run_session, case: Case, settings) -> float:
    """2.5x eager fp32's p50 at batch 1 on the same model: one bound for every engine."""
    base = LoadTarget(run_session, run_session.baseline_case(case))
    prepared = base.prepared(1, 1, 1)[0][0]
    return 2.5 * base.expected_latency(1, prepared, calls=9)


def test_concurrency_sweep(load_case, target, load_options, benchmark):
    levels = load_options.concurrency
    engine = target.engine(1)
    prepared = target.prepared(1, max(levels), 1)   # one prepared input per concurrent caller, made now
    callers = [lambda p=p[0]: engine.run(p) for p in prepared]
    rows = once(benchmark, lambda: load.concurrency_sweep(callers, levels, load_options.window_s,
                                                          load_options.max_windows))
    unstable = [r["concurrency"] for r in rows if not r["stable"]]
    record(benchmark, load_case, "Concurrency", {"levels": rows, "unstable_levels": unstable,
                                                  "failures": [f for r in rows for f in r["failures"]]})
    assert [r["concurrency"] for r in rows] == list(levels)
