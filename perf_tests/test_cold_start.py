"""Cold start per engine: a fresh process to its first answer (scenarios/cold_start.py).

The engine is built (or taken from the cache) and checked against its baseline first, outside any
timing; then ``--cold-start-runs`` fresh processes each import, load that artifact and answer once.
The benchmark's time is the series' wall time; the figures are in the record.
"""
from __future__ import annotations

import pytest

from infermatrix.core.records import ColdStartRecord
from infermatrix.models.handoff import model_handoff
from infermatrix.models.registry import EVAL_SEED, EXPORT_BATCH
from infermatrix.scenarios.cold_start import cold_starts

pytestmark = pytest.mark.scenario


def test_cold_start(cold_start_case, run_session, scenario_settings, benchmark, tmp_path):
    case = cold_start_case
    loaded = run_session.engine(case)  # built here, outside the starts: a deployment ships the artifact
    report = run_session.equivalence(case)
    if not report.passed:
        pytest.fail(f"not timed: outputs differ from the baseline\n{report.render()}", pytrace=False)
    engine = loaded.engine
    request = {**model_handoff(case.model), "engine": case.engine, "runtime_modules": list(engine.runtime_modules),
               "precision": case.precision,
               "device": case.device, "threads": run_session.threads, "entry": str(loaded.entry.path),
               "example_batch": EXPORT_BATCH if engine.dynamic_batch else case.batch_size,
               "int8_scheme": run_session.scheme(case), "batch_size": case.batch_size, "seed": EVAL_SEED,
               "cache_root": str(run_session.cache.root)}
    starts = scenario_settings["cold_start"]["cold_start_runs"]
    benchmark.group = f"cold-start-{case.model}-{case.device}"
    figures = benchmark.pedantic(lambda: cold_starts(request, starts, tmp_path), rounds=1, iterations=1,
                                 warmup_rounds=0)
    record = ColdStartRecord.of(run_session.resolved(case), run_session.reference(case), **figures)
    benchmark.extra_info.update(record.to_extra_info())
    assert len(figures["cold_start_walls_s"]) == starts
    # a start's first answer comes after its own first inference, and the median is no start's maximum
    assert figures["cold_start_max_s"] >= figures["cold_start_p50_s"] > figures["first_inference_s"] > 0
