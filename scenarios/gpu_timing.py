"""GPU compute time of a CUDA latency case, beside pytest-benchmark's host latency (DESIGN.md section 5).

trtexec reports "GPU Compute Time" (the GPU's own time for the inference's kernels) apart from host
latency; a large gap between them is host overhead: Python, launches, synchronization. Two figures,
each named for what it measures:

- **host latency** (``p50_s`` ...): pytest-benchmark's rounds around ``Engine.run`` — enqueue, GPU work
  and the final synchronization, as a deployment that waits for each answer sees it. Nothing else
  runs inside those rounds: no events, no spin.
- **GPU compute time** (``gpu_compute_p50_s`` ...): a separate pass after the rounds. Events recorded
  on an *idle* stream fire at once, so an end-minus-start bracket would cover the host's launches
  too (launch-bound cases would show GPU time = host time). So each sample first queues a GPU spin
  (``torch.cuda._sleep``) longer than the host needs to enqueue one inference, then records the start
  event, enqueues, records the end event. The start fires when the spin ends, by which time every
  kernel of the inference is queued, and the bracket holds only their execution. Whether the spin
  really outlasted the enqueue is checked per sample: right after the end event is recorded the start
  event must still be pending (``Event.query()`` False). A sample where it had fired is retried with
  the spin doubled, and counted in ``gpu_compute_uncovered`` if it never is covered.

:class:`CudaCase` adds the NVML telemetry (scenarios/gpu_telemetry.py): clocks, temperature and
clock-event reasons before and after the rounds, and energy per inference from a separate window.
CPU cases use none of this. The measuring loop takes its CUDA calls from a small device object, so
tests drive it with a simulated clock on the CPU; the torch one has never run on the development
machine (it has no GPU).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from infermatrix.core.percentiles import NOTES_KEY, percentile, percentile_figures

from .gpu_telemetry import NOT_THROTTLING, cuda_nvml_index, energy_window, snapshot

#: GPU compute samples per case: enough for a p99 (100), bounded so a fast case's pass stays short
MAX_COMPUTE_SAMPLES = 200
#: the spin starts at this multiple of the host's p50 (the enqueue is part of the host time, so a
#: spin as long as the whole host call already outlasts it) and doubles for a sample it did not cover
SPIN_OVER_HOST = 2.0
MIN_SPIN_S = 50e-6
RETRIES = 4
#: spin cycles timed once per case to convert seconds into the GPU's spin cycles at its current clock
CALIBRATION_CYCLES = 2_000_000
METHOD = ("CUDA events on the engine's stream after a queued GPU spin longer than the host's enqueue: the "
          "start event fires once every kernel is queued, so the bracket is kernel execution only "
          "(trtexec's GPU Compute Time); each sample checked (start still pending after the enqueue)")


def gpu_timing_summary(gpu_samples: Sequence[float], host_samples: Sequence[float],
                       notes: dict[str, str] | None = None) -> dict[str, Any]:
    """GPU compute percentiles (the host's sample minimums: p90 from 10, p99 from 100) and
    ``host_overhead_ratio`` = host latency p50 / GPU compute p50 (1.0: the host adds nothing).
    ``notes``, the host summary's ``percentile_notes``, is merged with the GPU figures' reasons."""
    out = percentile_figures(list(gpu_samples), prefix="gpu_compute_", notes=notes)
    out.update(gpu_compute_mean_s=sum(gpu_samples) / len(gpu_samples) if gpu_samples else None,
               gpu_compute_min_s=min(gpu_samples) if gpu_samples else None,
               gpu_compute_sample_count=len(gpu_samples), host_overhead_ratio=None)
    gpu_p50 = out["gpu_compute_p50_s"]
    if gpu_p50 is None:
        out[NOTES_KEY]["host_overhead_ratio"] = "no GPU compute samples"
    elif gpu_p50 <= 0:  # the events bracketed no work: the engine ran on another stream than it declares
        out[NOTES_KEY]["host_overhead_ratio"] = ("the CUDA events saw no GPU work: does the engine's "
                                                 "cuda_stream() name the stream it runs on?")
    elif host_samples:
        out["host_overhead_ratio"] = percentile(host_samples, 50) / gpu_p50
    return out


class TorchCuda:
    """The CUDA calls the compute pass makes, through torch (what tests replace with a simulation)."""

    def __init__(self) -> None:
        import torch
        self.torch = torch

    def current_stream(self) -> Any:
        return self.torch.cuda.current_stream()

    def event(self) -> Any:
        return self.torch.cuda.Event(enable_timing=True)

    def spin(self, stream: Any, cycles: int) -> None:
        with self.torch.cuda.stream(stream):
            self.torch.cuda._sleep(int(cycles))  # a kernel that busy-waits this many GPU clock cycles

    def synchronize(self) -> None:
        self.torch.cuda.synchronize()


def spin_cycles_per_s(cuda: Any, stream: Any) -> float:
    """The GPU's spin cycles per second now (one timed ``_sleep``: its clock, not a nominal one)."""
    start, end = cuda.event(), cuda.event()
    start.record(stream)
    cuda.spin(stream, CALIBRATION_CYCLES)
    end.record(stream)
    cuda.synchronize()
    return CALIBRATION_CYCLES / max(start.elapsed_time(end) / 1e3, 1e-9)


def gpu_compute_samples(enqueue: Callable[[], Any], synchronize: Callable[[], None], stream: Any, samples: int,
                        host_p50_s: float, cuda: Any | None = None) -> dict[str, Any]:
    """``samples`` GPU compute times of one inference (module docstring): ``{"samples": [s], "uncovered":
    n, "spin_s": the last spin}``. ``enqueue``/``synchronize`` are the engine's, ``stream`` its stream."""
    cuda = cuda or TorchCuda()
    stream = stream if stream is not None else cuda.current_stream()
    per_s = spin_cycles_per_s(cuda, stream)
    spin_s = max(MIN_SPIN_S, SPIN_OVER_HOST * host_p50_s)
    events = [(cuda.event(), cuda.event()) for _ in range(samples)]
    out: list[float] = []
    uncovered = 0
    for start, end in events:
        for _ in range(RETRIES):
            cuda.spin(stream, spin_s * per_s)
            start.record(stream)
            enqueue()
            end.record(stream)
            covered = not start.query()  # still pending: the spin outlasted the whole enqueue
            synchronize()
            if covered:
                out.append(start.elapsed_time(end) / 1e3)
                break
            spin_s *= 2
        else:
            uncovered += 1
    return {"samples": out, "uncovered": uncovered, "spin_s": spin_s}


class CudaCase:
    """GPU compute time and NVML telemetry of one latency case (device "cuda" only).

    Create it right before the rounds (it takes the "before" snapshot), time ``engine.run`` with
    pytest-benchmark, then call :meth:`finish` for the extra_info fields.
    """

    def __init__(self, engine: Any, prepared: Any) -> None:
        self._engine, self._prepared = engine, prepared
        self.index, self.index_reason = cuda_nvml_index()
        self.before = snapshot(self.index)

    def finish(self, host_samples: Sequence[float], notes: dict[str, str] | None, batch_size: int) -> dict[str, Any]:
        """The GPU fields: compute time, telemetry before/after (and under load, from the energy
        window), ``throttled``, and energy per inference from a window outside the rounds."""
        after = snapshot(self.index)  # first: the clocks as the rounds left them
        engine, prepared = self._engine, self._prepared
        declared = engine.cuda_stream()
        compute = gpu_compute_samples(lambda: engine.enqueue(prepared), engine.synchronize, declared,
                                      min(len(host_samples), MAX_COMPUTE_SAMPLES), percentile(host_samples, 50))
        fields = gpu_timing_summary(compute["samples"], host_samples, notes)
        fields.update(gpu_compute_uncovered=compute["uncovered"], gpu_compute_spin_s=compute["spin_s"],
                      gpu_compute_stream="engine" if declared is not None else "current", gpu_compute_method=METHOD)
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
