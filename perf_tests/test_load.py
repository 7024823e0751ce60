"""Scalability under load: SingleStream, Offline, Server (Poisson, QPS search), concurrency sweep.

MLPerf LoadGen / perf_analyzer semantics at CI size (seconds, not MLPerf's 10 minutes;
--load-queries/--load-seconds run longer). Each scenario checks equivalence first, runs once
inside ``benchmark.pedantic`` (the benchmark's time is the scenario's wall time) and records
its figures in ``extra_info``. Marked ``scenario``: the default matrix job leaves them out.
"""
from __future__ import annotations

import pytest

from fixtures import load
from fixtures.matrix import Case

pytestmark = pytest.mark.scenario


@pytest.fixture
def target(load_case, run_session):
    report = run_session.equivalence(load_case)
    if not report.passed:
        pytest.fail(f"not loaded: outputs differ from the baseline\n{report.render()}", pytrace=False)
    engine = run_session.engine(load_case).engine

    def make_caller(batch_size: int = 1):
        prepared = engine.prepare(run_session.inputs(Case(load_case.model, load_case.engine, load_case.precision,
                                                          batch_size, load_case.device)))
        return lambda: engine.run(prepared)
    return make_caller


def record(benchmark, case: Case, scenario: str, figures: dict) -> None:
    benchmark.group = f"load-{case.model}-{scenario}"
    benchmark.extra_info.update({"model": case.model, "engine": case.engine, "precision": case.precision,
                                 "device": case.device, "scenario": scenario, **figures})
    failures = figures.get("failures") or []
    assert not failures, f"{case.id} {scenario}: the engine failed under load: {failures} (partial figures recorded)"


def once(benchmark, fn):
    """Run the scenario once as the benchmark (pedantic returns the function's result)."""
    return benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)


def test_single_stream(load_case, target, load_options, benchmark):
    res = once(benchmark, lambda: load.single_stream(target(1), load_options.queries, load_options.seconds))
    record(benchmark, load_case, "SingleStream", res.figures())
    assert res.completed > 0


def test_offline(load_case, target, load_options, benchmark):
    bs = load_options.offline_batch
    res = once(benchmark, lambda: load.offline(target(bs), bs, load_options.queries, load_options.seconds))
    record(benchmark, load_case, "Offline", res.figures())
    assert res.completed > 0


def test_server(load_case, target, load_options, run_session, benchmark):
    bound = load_options.server_bound_s or load_options.derived_bound(run_session, load_case)
    single = load.single_stream(target(1), 8, load_options.seconds)
    start = 0.5 / max(single.figures()["p50_s"], 1e-6)  # half of what one worker could serve
    best, trials = once(benchmark, lambda: load.max_qps_within(
        target, bound, start, load_options.queries, load_options.seconds, load_options.workers,
        steps=load_options.search_steps))
    record(benchmark, load_case, "Server", {"latency_bound_s": bound, "max_qps_within_bound": best,
                                             "trials": trials, "failures": []})
    assert trials and all(t["p99_s"] is not None for t in trials)


def test_concurrency_sweep(load_case, target, load_options, benchmark):
    rows = once(benchmark, lambda: load.concurrency_sweep(target, load_options.concurrency,
                                                          load_options.window_s, load_options.max_windows))
    unstable = [r["concurrency"] for r in rows if not r["stable"]]
    record(benchmark, load_case, "Concurrency", {"levels": rows, "unstable_levels": unstable,
                                                  "failures": [f for r in rows for f in r["failures"]]})
    assert [r["concurrency"] for r in rows] == list(load_options.concurrency)
