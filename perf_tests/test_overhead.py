"""The harness's own cost: ``Engine.run`` against a bare loop over the same runtime call.

Both are benchmarks in one group per engine; the ``harness`` case also records an
interleaved A/B estimate (bare and harness calls alternating, so drift cancels).
"""
from __future__ import annotations

import statistics
import time

import pytest

from infermatrix.core.records import OverheadRecord

from infermatrix.scenarios.measure import latency_summary

ROUNDS, WARMUP, INTERLEAVED_PAIRS = 200, 20, 200


def interleaved_overhead(bare, harness, pairs: int) -> float:
    """Median over pairs of (harness - bare) / bare, in percent. The order alternates from
    pair to pair: the second call of a pair runs with warmer caches (measured: ~1 % bias)."""
    ratios = []
    for i in range(pairs):
        first, second = (bare, harness) if i % 2 == 0 else (harness, bare)
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        t_bare, t_harness = (t1 - t0, t2 - t1) if i % 2 == 0 else (t2 - t1, t1 - t0)
        ratios.append((t_harness - t_bare) / t_bare)
    return 100.0 * statistics.median(ratios)


@pytest.mark.parametrize("mode", ["bare", "harness"])
def test_overhead(overhead_case, mode, run_session, benchmark):
    case = overhead_case
    engine = run_session.engine(case).engine
    prepared = engine.prepare(run_session.inputs(case))
    bare = engine.runtime_call(prepared)

    def harness() -> None:
        engine.run(prepared)
    benchmark.group = f"overhead-{case.model}-{case.engine}"
    benchmark.pedantic(bare if mode == "bare" else harness, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    if benchmark.disabled:
        return
    info = {"mode": mode, **latency_summary(list(benchmark.stats.stats.data), case.batch_size)}
    if mode == "harness":
        info["overhead_pct_interleaved"] = interleaved_overhead(bare, harness, INTERLEAVED_PAIRS)
    benchmark.extra_info.update(OverheadRecord.of(case, **info).to_extra_info())
