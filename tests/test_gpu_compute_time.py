"""GPU compute time without a GPU: scenarios/gpu_timing.py's compute pass on a simulated stream.

The simulation is CUDA's ordering rule and nothing more: the host issues work at its own pace (each
launch costs host time), the stream runs its items in order, each starting when both the host has
issued it and the item before it has finished, and an event fires when the stream reaches it. A
launch-bound inference (launch cost > kernel time) is where an event bracket on an idle stream
measures the host and not the GPU.
"""
from __future__ import annotations

import pytest

from infermatrix.scenarios import gpu_timing
from infermatrix.scenarios.gpu_timing import gpu_compute_samples

US = 1e-6


class Sim:
    """One host clock and one stream; times in seconds. ``spin`` is ``torch.cuda._sleep``."""

    def __init__(self, cycles_per_s: float = 1.5e9) -> None:
        self.host = 0.0          # the host's clock
        self.stream_free = 0.0   # when the stream finishes what is queued so far
        self.cycles_per_s = cycles_per_s

    def _queue(self, gpu_s: float, launch_s: float) -> None:
        self.host += launch_s
        self.stream_free = max(self.stream_free, self.host) + gpu_s

    # the device object gpu_compute_samples takes
    def current_stream(self):
        return "stream"

    def event(self):
        return SimEvent(self)

    def spin(self, stream, cycles):
        self._queue(cycles / self.cycles_per_s, launch_s=3 * US)

    def synchronize(self):
        self.host = max(self.host, self.stream_free)


class SimEvent:
    def __init__(self, sim: Sim) -> None:
        self.sim, self.at = sim, None

    def record(self, stream):
        self.sim._queue(0.0, launch_s=1 * US)
        self.at = self.sim.stream_free  # fires when the stream reaches it

    def query(self):
        return self.at <= self.sim.host

    def elapsed_time(self, end):
        return (end.at - self.at) * 1e3  # milliseconds, as torch's


def launch_bound(sim: Sim, kernels: int = 10, launch_s: float = 20 * US, kernel_s: float = 5 * US):
    """An eager-style inference: ``kernels`` launches of 20 us host time each, 5 us of GPU work each."""
    def enqueue():
        for _ in range(kernels):
            sim._queue(kernel_s, launch_s)
    return enqueue


def test_a_launch_bound_inference_measures_its_kernels_not_the_hosts_launches():
    sim = Sim()
    host_p50 = 10 * 20 * US + 10 * US  # what the host rounds measured: the launches dominate
    out = gpu_compute_samples(launch_bound(sim), sim.synchronize, None, 50, host_p50, cuda=sim)
    assert out["uncovered"] == 0 and len(out["samples"]) == 50
    assert out["samples"] == pytest.approx([10 * 5 * US] * 50)  # 50 us of kernels, back to back
    # what an event bracket on an idle stream gives instead: the host's 200 us of launches
    start, end = sim.event(), sim.event()
    sim.synchronize()
    start.record("stream")
    launch_bound(sim)()
    end.record("stream")
    assert start.elapsed_time(end) / 1e3 > 3 * 10 * 5 * US


def test_a_spin_shorter_than_the_enqueue_is_detected_doubled_and_the_sample_retaken():
    sim = Sim()
    # a host p50 that understates the enqueue (the spin starts at MIN_SPIN_S = 50 us, the enqueue takes 200)
    out = gpu_compute_samples(launch_bound(sim), sim.synchronize, None, 5, host_p50_s=1 * US, cuda=sim)
    assert out["uncovered"] == 0 and out["samples"] == pytest.approx([50 * US] * 5)
    # 50, 100 and 200 us fall short of the enqueue plus the event records; 400 us covers it
    assert out["spin_s"] == pytest.approx(gpu_timing.MIN_SPIN_S * 8)


def test_a_sample_never_covered_is_counted_not_kept(monkeypatch):
    monkeypatch.setattr(gpu_timing, "RETRIES", 1)
    sim = Sim()
    out = gpu_compute_samples(launch_bound(sim), sim.synchronize, None, 4, host_p50_s=1 * US, cuda=sim)
    # one try each: spins of 50, 100 and 200 us do not outlast the 200 us enqueue plus its records
    # (three samples dropped and counted); the fourth sample's 400 us does
    assert out["uncovered"] == 3 and out["samples"] == pytest.approx([50 * US])


def test_the_spin_is_converted_with_the_gpus_measured_clock():
    slow, fast = Sim(cycles_per_s=1.0e9), Sim(cycles_per_s=2.0e9)
    # within the event records' own microsecond
    assert gpu_timing.spin_cycles_per_s(slow, "stream") == pytest.approx(1.0e9, rel=1e-2)
    assert gpu_timing.spin_cycles_per_s(fast, "stream") == pytest.approx(2.0e9, rel=1e-2)
