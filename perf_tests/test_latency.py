"""One latency benchmark per case: equivalence first, then per-call rounds after warm-up.

pytest-benchmark times whole rounds and never synchronizes a device, so the timed callable
is ``Engine.run``, which returns only after the device is done, with ``iterations=1`` so each
round is one inference and the rounds give p50/p90/p99 (p90 from 10 rounds, p99 from 100;
below that null, the reason in ``percentile_notes``). On CUDA these are host latencies; the GPU
compute time of the same inference comes from a separate pass after the rounds, with NVML
telemetry and energy (scenarios/gpu_timing.py).
"""
from __future__ import annotations

import math

import pytest

from infermatrix.core.records import LatencyRecord
from infermatrix.runner.interference import HostWatch
from infermatrix.runner.peak import case_peak, share_fields
from infermatrix.runner.rounds import plan_rounds, precision_figures
from infermatrix.scenarios.gpu_timing import CudaCase
from infermatrix.scenarios.measure import NOTES_KEY, latency_summary
from infermatrix.runner.memory import engine_memory
from infermatrix.runner.memory_queue import child_footprint
from infermatrix.runner.memory_reuse import inputs_digest



def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def test_latency(case, run_session, matrix_options, benchmark, pytestconfig):
    loaded = run_session.engine(case)
    engine = loaded.engine
    report = run_session.equivalence(case)
    if not report.passed:
        pytest.fail(f"not timed: outputs differ from the baseline\n{report.render()}", pytrace=False)
    prepared = engine.prepare(run_session.inputs(case))
    benchmark.group = f"{case.model}-bs{case.batch_size}-{case.device}"
    # warm-up until settled, then the rounds the median's precision needs, capped by --latency-time
    planning = run_session.time.begin("round planning")  # where the run's time goes: runner/time_ledger.py
    plan = plan_rounds(engine.run, prepared, matrix_options.latency_time, matrix_options.latency_rounds,
                       precision=matrix_options.latency_precision, percentiles=matrix_options.latency_percentiles)
    rounds, warmup = plan.rounds, plan.warmup_rounds
    run_session.time.end(planning)
    run_session.collect_garbage(case)  # a full collection, cheap after a model's first case (runner/session.py)
    # CUDA: NVML clocks before the rounds; GPU compute time and energy in passes after them
    # (scenarios/gpu_timing.py), so the rounds time engine.run alone on every device
    gpu = CudaCase(engine, prepared) if case.device == "cuda" else None
    host = HostWatch()  # the host's readings around the rounds: other processes' CPU, steal, load
    timed = run_session.time.begin("timed rounds")
    benchmark.pedantic(engine.run, args=(prepared,), rounds=rounds, warmup_rounds=warmup, iterations=1)
    run_session.time.end(timed)
    if benchmark.disabled:  # --benchmark-disable: ran once as a smoke test, nothing to record
        return
    samples = list(benchmark.stats.stats.data)
    run_session.time.move("timed rounds", "warm-up", timed.seconds - sum(samples))  # the call's time beyond its samples
    assert len(samples) == rounds, f"expected {rounds} samples, pytest-benchmark kept {len(samples)}"
    summary = latency_summary(samples, case.batch_size)
    # the precision reached (median_ci_rel), and why a figure is null (a p99 not asked for ...)
    summary.update(precision_figures(samples, None if matrix_options.latency_rounds else
                                     matrix_options.latency_percentiles, summary[NOTES_KEY]))
    interference = host.finish(samples)  # read before the GPU passes and the memory subprocess below
    flops = run_session.flops(case)
    figures = {
        **summary, **plan.figures(),
        "artifact_bytes": loaded.entry.artifact_bytes, "build_seconds": loaded.entry.build_seconds,
        "built_this_run": loaded.entry.built,
        "equivalence": report.status, "equivalence_row": report.row,
        "cosine_min": min(o.cosine for o in report.outputs),
        # JSON has no Infinity: an exact match (no noise at all) is recorded as null
        "sqnr_db_min": _finite(min(o.sqnr_db for o in report.outputs)),
        **{k: v for k, v in report.figures().items() if k in ("tolerance", "tolerance_override", "degenerate_outputs")},
        # achieved, like throughput: FLOPs per call over the mean seconds per call
        "flops": flops, "gflops_per_s": (flops / summary["mean_s"] / 1e9) if flops else None,
        **interference,
    }
    if gpu is not None:  # after the rounds: the "after" snapshot, GPU compute time, the energy window
        passes = run_session.time.begin("gpu passes")
        figures.update(gpu.finish(samples, summary[NOTES_KEY], case.batch_size))
        run_session.time.end(passes)
    figures.update(engine.details())
    figures["artifact_sha256"] = loaded.entry.artifact_sha256  # equal digests: the same artifact ran
    figures["engine_settings"] = engine.settings()  # typed settings (provider options, TF32 ...), also in the cache key
    figures["input_shapes"] = run_session.input_shapes(case)  # {name: [dims]}: a seq-128 and a seq-64 run differ here
    figures["engine_notice"] = engine.notice_text()  # e.g. a deprecated API the engine measures: said once in the summary
    figures["model_note"] = run_session.model_note(case)  # e.g. "embeddings: mean-pooled over the attention mask"
    # how far from the limit: this machine's GEMM peak for the precision, measured once per machine
    # (cached beside the engines) after the rounds and GPU passes, so it never runs inside them
    calibrating = run_session.time.begin("peak calibration")
    peak = case_peak(run_session.cache.root, case.device, case.precision, run_session.threads, tf32=run_session.tf32,
                     recalibrate=bool(pytestconfig.getoption("recalibrate_peak", default=False)))
    run_session.time.end(calibrating)
    figures.update(share_fields(figures["gflops_per_s"], peak))
    # this engine's own memory, measured alone in a child forked from a preloaded server (this process holds all):
    # load_rss_bytes, run_peak_rss_bytes, gpu_peak_bytes. The child waits in a queue until the timed cases are
    # done (runner/memory_queue.py); its figures join this record before pytest-benchmark saves the run
    case_key, reference = run_session.resolved(case), run_session.reference(case)

    def deliver(memory: dict) -> None:
        benchmark.extra_info.update(LatencyRecord.of(case_key, reference, **figures, **memory).to_extra_info())
        run_session.stats.count_memory(memory)  # measured or reused: said in the run's summary

    if not matrix_options.engine_memory:
        deliver(engine_memory(case, loaded.entry.path, enabled=False))  # null figures, and why
        return
    deliver({})  # the record without its memory until the child reports (an interrupted run keeps the rest)
    digest = inputs_digest(run_session.inputs(case))  # a kept figure is reused only for the same inputs
    footprint = child_footprint(case.device, loaded.entry.artifact_bytes, run_session.module(case.model))
    run_session.memory.submit(case.id, lambda: engine_memory(
        case, loaded.entry.path, run_session.threads, cache_root=run_session.cache.root, tf32=run_session.tf32,
        reuse=run_session.memory_reuse, artifact_sha256=loaded.entry.artifact_sha256, inputs_digest=digest), deliver,
        footprint)
