"""Scalability under load with MLPerf LoadGen: SingleStream, MultiStream, Server, Offline,
plus a concurrency sweep with perf_analyzer semantics.

LoadGen schedules the queries, measures their latency and gives the verdict (scenarios/loadgen.py);
every query's inputs are prepared before the test starts. Durations are CI-sized by default
(--load-seconds, --load-queries, --server-queries run longer). Each scenario checks
equivalence first (at the batch it serves), runs once inside ``benchmark.pedantic`` (the
benchmark's time is the scenario's wall time) and records LoadGen's figures, verdict and the
folder of its logs in ``extra_info``. An INVALID verdict is a measurement, recorded with its
reasons; an engine that raises under load fails the test. Marked ``scenario``.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from infermatrix.core.records import ConcurrencyRecord, LoadRecord
from infermatrix.scenarios import concurrency
from infermatrix.runner.load_target import LoadTarget, ServerBounds, direct_latency, interference_note, loadgen_p50
from infermatrix.scenarios.loadgen import run_scenario
from infermatrix.core.schema import Case
from infermatrix.scenarios.server_search import server_search

pytestmark = pytest.mark.scenario


@pytest.fixture
def target(load_case, run_session) -> LoadTarget:
    return LoadTarget(run_session, load_case)


@pytest.fixture
def log_dir(request, loadgen_run_dir):
    return loadgen_run_dir / request.node.name.replace("/", "_")


def record(benchmark, run_session, case: Case, scenario: str, figures: dict) -> None:
    """The scenario's record (core/records.py): LoadGen's scenarios as ``load`` records with
    ``loadgen_scenario``, the sweep as a ``concurrency`` record."""
    benchmark.group = f"load-{case.model}-{scenario}"
    figures = {k: v for k, v in figures.items() if k not in ("scenario", "batch_size")}
    at = replace(run_session.resolved(case), batch_size=figures.pop("served_batch_size", case.batch_size))
    if scenario == "Concurrency":
        rec = ConcurrencyRecord.of(at, run_session.reference(at), **figures)
    else:
        rec = LoadRecord.of(at, run_session.reference(at), loadgen_scenario=scenario, **figures)
    benchmark.extra_info.update(rec.to_extra_info())
    failures = figures.get("failures") or []
    assert not failures, f"{case.id} {scenario}: the engine failed under load: {failures} (partial figures recorded)"


def once(benchmark, fn):
    """Run the scenario once as the benchmark (pedantic returns the function's result)."""
    return benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)


def _loadgen_case(scenario, batch, target, load_options, log_dir, benchmark, load_case) -> dict:
    settings = load_options.loadgen
    engine = target.engine(batch)
    prepared = target.prepared(engine, batch, 1, settings.samples)
    expected = direct_latency(engine, prepared[0][0])
    res = once(benchmark, lambda: run_scenario(scenario, engine.run, prepared, settings, log_dir / scenario,
                                               expected, batch=batch))
    figures = {**res.figures(), "served_batch_size": batch, "direct_latency_s": expected}
    if scenario in ("SingleStream", "MultiStream"):  # a query's latency is one call's
        note = interference_note(figures["p50_s"], expected)
        if note:
            figures["interference_note"] = note
    record(benchmark, target.session, load_case, scenario, figures)
    assert figures["query_count"], f"LoadGen completed no query; see {log_dir / scenario}"
    return figures


def _enough(figures: dict, key: str) -> bool:
    """A percentile is there, or null with the reason (too few queries for it)."""
    return bool(figures[key]) or key in figures["percentile_notes"]


def test_single_stream(load_case, target, load_options, log_dir, benchmark):
    figures = _loadgen_case("SingleStream", 1, target, load_options, log_dir, benchmark, load_case)
    assert _enough(figures, "p90_s") and _enough(figures, "p99_s"), figures
    assert figures["p90_s"] is None or figures["p90_s"] >= figures["p50_s"]


def test_multi_stream(load_case, target, load_options, log_dir, benchmark):
    figures = _loadgen_case("MultiStream", load_options.loadgen.multistream_samples, target, load_options,
                            log_dir, benchmark, load_case)
    # p99 per query (MLPerf's MultiStream metric), or null with the reason (fewer than 100 queries)
    assert figures["p99_per_query_s"] or "p99_s" in figures["percentile_notes"], figures


def test_offline(load_case, target, load_options, log_dir, benchmark):
    figures = _loadgen_case("Offline", load_options.offline_batch, target, load_options, log_dir, benchmark,
                            load_case)
    assert figures["samples_per_s"] and figures["samples_per_s"] > 0


@pytest.fixture(scope="session")
def server_bounds(load_options) -> ServerBounds:
    """The Server latency bound per model and device (runner/load_target.py): measured once."""
    return ServerBounds(load_options.server_bound_s)


def test_server(load_case, target, load_options, run_session, log_dir, benchmark, server_bounds):
    settings = load_options.loadgen
    bound = server_bounds.bound(run_session, load_case, settings, log_dir / "bound-eager-SingleStream")
    engine = target.engine(1)
    prepared = target.prepared(engine, 1, settings.server_workers, settings.samples)
    latency = loadgen_p50(engine, prepared[0], settings, log_dir / "start-SingleStream")

    def trial(qps: float, step: int):
        return run_scenario("Server", engine.run, prepared, settings, log_dir / f"Server-trial{step}-{qps:.2f}qps",
                            latency, target_qps=qps, latency_bound_s=bound)
    # start at half of what one worker serves back to back; the search doubles or bisects from there
    search = once(benchmark, lambda: server_search(trial, 0.5 / latency, load_options.search_steps))
    record(benchmark, run_session, load_case, "Server", {
        "latency_bound_s": bound, "max_valid_qps": search.max_valid_qps, "trials": search.trials,
        "search_note": search.note, "failures": [f for t in search.trials for f in t["failures"]]})
    assert search.trials and all(t["verdict"] in ("VALID", "INVALID") for t in search.trials), search.trials
    assert (search.max_valid_qps is not None) or search.note, "a search without an answer must say why"


def test_concurrency_sweep(load_case, target, load_options, run_session, benchmark):
    levels = load_options.concurrency
    engine = target.engine(1)
    prepared = target.prepared(engine, 1, max(levels), 1)   # one prepared input per concurrent caller, made now
    callers = [lambda p=p[0]: engine.run(p) for p in prepared]
    rows = once(benchmark, lambda: concurrency.concurrency_sweep(callers, levels, load_options.window_s,
                                                          load_options.max_windows))
    unstable = [r["concurrency"] for r in rows if not r["stable"]]
    record(benchmark, run_session, load_case, "Concurrency", {"levels": rows, "unstable_levels": unstable,
                                                  "failures": [f for r in rows for f in r["failures"]]})
    assert [r["concurrency"] for r in rows] == list(levels)
