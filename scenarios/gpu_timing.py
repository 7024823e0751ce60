"""CUDA-event GPU time per latency round, beside pytest-benchmark's host wall time (DESIGN.md section 5).

trtexec reports both "GPU Compute Time" (CUDA events around the enqueued work) and host latency;
a large gap between them is host overhead: Python, launches, synchronization. On CUDA the latency
test hands pytest-benchmark a :class:`CudaEventTimer` instead of ``engine.run``: per call it
records a start event on the engine's stream (``Engine.cuda_stream()``; None = torch's current
stream), enqueues the inference, records the end event, then synchronizes as ``run`` does. The
events are read once, after the rounds, so no round waits on them.

:class:`CudaCase` adds the NVML telemetry (scenarios/gpu_telemetry.py): clocks, temperature and
clock-event reasons before and after the rounds, and energy per inference from a separate window.
CPU cases use none of this. The CUDA parts have never run on the development machine (it has no
GPU); :func:`gpu_timing_summary` is pure and tested there.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from infermatrix.reports.percentiles import NOTES_KEY, percentile, percentile_figures

from .gpu_telemetry import NOT_THROTTLING, cuda_nvml_index, energy_window, snapshot

#: record pairs timed to estimate what the events add to each host sample
OVERHEAD_PROBE = 50


def gpu_timing_summary(gpu_samples: Sequence[float], host_samples: Sequence[float],
                       notes: dict[str, str] | None = None) -> dict[str, Any]:
    """GPU percentiles (the same sample minimums as the host's: p90 from 10, p99 from 100) and
    ``host_overhead_ratio`` = host p50 / GPU p50 (1.0: the host adds nothing). ``notes``, the host
    summary's ``percentile_notes``, is merged with the GPU figures' reasons."""
    if gpu_samples and len(gpu_samples) != len(host_samples):
        raise ValueError(f"{len(gpu_samples)} GPU samples for {len(host_samples)} host samples; they must be "
                         "the same rounds")
    out = percentile_figures(list(gpu_samples), prefix="gpu_", notes=notes)
    out.update(gpu_mean_s=statistics.fmean(gpu_samples) if gpu_samples else None,
               gpu_min_s=min(gpu_samples) if gpu_samples else None, gpu_sample_count=len(gpu_samples),
               host_overhead_ratio=None)
    gpu_p50 = out["gpu_p50_s"]
    if gpu_p50 is None:
        out[NOTES_KEY]["host_overhead_ratio"] = "no GPU samples"
    elif gpu_p50 <= 0:  # the events bracketed no work: the engine ran on another stream than it declares
        out[NOTES_KEY]["host_overhead_ratio"] = ("the CUDA events saw no GPU work: does the engine's "
                                                 "cuda_stream() name the stream it runs on?")
    elif host_samples:
        out["host_overhead_ratio"] = percentile(host_samples, 50) / gpu_p50
    return out


class CudaEventTimer:
    """The callable pytest-benchmark times on CUDA: one inference between two CUDA events.

    Every event pair (warm-up + rounds) is created and recorded once in the constructor: torch
    creates the CUDA event lazily at its first ``record``, and that cost must not land in a round.
    Calls beyond the planned ones (pytest-benchmark's cProfile pass) run untimed.
    """

    def __init__(self, engine: Any, prepared: Any, rounds: int, warmup: int) -> None:
        import torch
        self.rounds, self.warmup, self.calls = rounds, warmup, 0
        declared = engine.cuda_stream()
        self.stream_source = "engine" if declared is not None else "current"
        self._stream = declared if declared is not None else torch.cuda.current_stream()
        # run() = enqueue + synchronize; the end event must be recorded between the two
        # (after the synchronization it would time the host's wait, not the GPU's work)
        self._enqueue, self._sync, self._run = engine.enqueue, engine.synchronize, engine.run
        self._prepared = prepared
        self._events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                        for _ in range(rounds + warmup)]
        for start, end in self._events:
            start.record(self._stream)
            end.record(self._stream)
        probe = self._events[:OVERHEAD_PROBE]
        t0 = time.perf_counter()
        for start, end in probe:
            start.record(self._stream)
            end.record(self._stream)
        #: host seconds the two records add to every timed call
        self.event_overhead_s = (time.perf_counter() - t0) / len(probe) if probe else 0.0
        torch.cuda.synchronize()

    def __call__(self) -> Any:
        i = self.calls
        self.calls += 1
        if i >= len(self._events):
            return self._run(self._prepared)
        start, end = self._events[i]
        start.record(self._stream)
        out = self._enqueue(self._prepared)
        end.record(self._stream)
        self._sync()
        return out

    def gpu_samples(self) -> list[float]:
        """Seconds between each timed round's events, in round order (pytest-benchmark's warm-up
        calls come first and are left out), so sample ``k`` is host sample ``k``'s round. Empty
        when fewer calls than planned were made (``--benchmark-disable`` runs the target once)."""
        import torch
        if self.calls < self.warmup + self.rounds:
            return []
        torch.cuda.synchronize()  # once, after every round: no round waited on its events
        return [start.elapsed_time(end) / 1e3 for start, end in self._events[self.warmup:self.warmup + self.rounds]]


class CudaCase:
    """CUDA-event timing and NVML telemetry of one latency case (device "cuda" only).

    Create it right before the rounds (it takes the "before" snapshot), time ``timer`` with
    pytest-benchmark, then call :meth:`finish` for the extra_info fields.
    """

    def __init__(self, engine: Any, prepared: Any, rounds: int, warmup: int) -> None:
        self.timer = CudaEventTimer(engine, prepared, rounds, warmup)
        self._engine, self._prepared = engine, prepared
        self.index, self.index_reason = cuda_nvml_index()
        self.before = snapshot(self.index)

    def finish(self, host_samples: Sequence[float], notes: dict[str, str] | None, batch_size: int) -> dict[str, Any]:
        """The GPU fields: event timing, telemetry before/after (and under load, from the energy
        window), ``throttled``, and energy per inference from a window outside the rounds."""
        after = snapshot(self.index)  # first: the clocks as the rounds left them
        fields = gpu_timing_summary(self.timer.gpu_samples(), host_samples, notes)
        fields.update(gpu_timing_stream=self.timer.stream_source, gpu_event_overhead_s=self.timer.event_overhead_s)
        engine, prepared = self._engine, self._prepared
        energy = energy_window(lambda: engine.run(prepared), self.index, batch_size)
        snaps = {"before": self.before, "after": after}
        if "telemetry_under_load" in energy:
            snaps["under_load"] = energy.pop("telemetry_under_load")
        known = [s["throttled"] for s in snaps.values() if s["throttled"] is not None]
        reasons = sorted({r for s in snaps.values() for r in s["clock_event_reasons"] or () if r not in NOT_THROTTLING})
        fields.update(energy, gpu_telemetry=snaps, throttled=any(known) if known else None, throttle_reasons=reasons,
                      nvml_index=self.index)
        if self.index_reason:
            fields["nvml_reason"] = self.index_reason
        return fields
