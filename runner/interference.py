"""The host's interference while a case is timed, and the verdict whether its figures can be trusted.

On a shared 2-core host the same tiny-model case measured 0.15 ms in one run and 40-64 ms in the
next: other processes held the cores. A figure like that is a measurement of the host, not of the
engine, so each latency case records what the host did during its timed rounds and is marked
``interference`` (the reason) when it cannot be compared; ``infermatrix compare`` and the summary
then say "noisy" instead of a verdict (reports/gate.py, reports/summary.py).

Read before and after the rounds (Linux only; elsewhere every figure is None and
``host_interference_note`` says why):

- ``/proc/stat``'s per-CPU lines, summed over the CPUs this process may run on
  (``os.sched_getaffinity``): busy jiffies (user, nice, system, irq, softirq; guest time is already
  inside user) and steal (time the hypervisor ran another guest while this vCPU wanted to run);
- this process's own CPU seconds (``os.times``: every thread, the runtime's pools included);
- ``/proc/loadavg``'s 1-minute figure.

Other processes' CPU seconds = busy seconds on those CPUs - this process's CPU seconds.
"""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infermatrix.core.percentiles import percentile

#: Other processes may take at most this share of the capacity of the CPUs this process may use
#: (wall seconds x their count) before the case counts as interfered. The engines size their thread
#: pools to those CPUs (PyTorch's OpenMP team, ONNX Runtime's and OpenVINO's pools), so a core taken
#: by anything else stalls a parallel region at its barrier: 10 % is a fifth of a core on 2 cores,
#: one busy process for a fifth of the case. An idle host's daemons and the kernel stay near 1 %.
OTHER_CPU_SHARE = 0.10
#: Steal above this share of the same capacity: the hypervisor ran another guest on our vCPUs that
#: long (a quiet cloud VM steals well under 1 %; noisy neighbours take 5-20 %). Any round that loses
#: its vCPU is slowed by the whole stolen slice, so the bar is low.
STEAL_SHARE = 0.02
#: The rounds' interquartile range over their median above this: the middle half of the rounds
#: spreads by a quarter of the median, two and a half times the gate's default 10 % threshold on the
#: median. Rounds of one steady state spread by a few percent (normal noise of 2 % gives an
#: IQR/median of 0.027); a spread this wide means the rounds came from two states (some preempted,
#: some not), and a 10 % shift of the median between two runs says nothing about the engine.
DISPERSION_IQR = 0.25
#: /proc/stat and the process times count in clock ticks (10 ms at the usual 100 Hz): below five
#: ticks the difference of two tick counts is rounding, not another process, whatever its share.
MIN_TICKS = 5


@dataclass(frozen=True)
class HostReading:
    """One reading; seconds are cumulative counters, compared between two readings."""

    wall_s: float          # time.perf_counter()
    busy_s: float          # busy CPU seconds of every process on the CPUs this process may use
    steal_s: float         # steal seconds on those CPUs
    own_cpu_s: float       # this process's user + system CPU seconds
    cpus: int              # how many CPUs this process may use
    load_avg: float | None  # /proc/loadavg, 1 minute


# /proc/stat's cpuN line: user nice system idle iowait irq softirq steal guest guest_nice
_BUSY_COLUMNS = (0, 1, 2, 5, 6)
_STEAL_COLUMN = 7


def tick_s() -> float:
    """Seconds per /proc/stat jiffy (USER_HZ; 100 Hz where the system cannot say)."""
    try:
        return 1.0 / os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 0.01


def allowed_cpus() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def parse_stat(text: str, cpus: set[int], tick: float) -> tuple[float, float]:
    """(busy seconds, steal seconds) summed over ``cpus`` from /proc/stat's text."""
    busy = steal = 0.0
    seen = set()
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        cols = [int(c) for c in rest.split()]
        busy += sum(cols[i] for i in _BUSY_COLUMNS if i < len(cols)) * tick
        steal += (cols[_STEAL_COLUMN] if len(cols) > _STEAL_COLUMN else 0) * tick
        seen.add(int(name[3:]))
    if seen != cpus:
        raise ValueError(f"/proc/stat has no line for CPU(s) {sorted(cpus - seen)} of this process's affinity")
    return busy, steal


def read_host() -> HostReading:
    """A reading of the host now; OSError/ValueError where /proc cannot give one."""
    cpus = allowed_cpus()
    busy, steal = parse_stat(Path("/proc/stat").read_text(), cpus, tick_s())
    t = os.times()
    try:
        load = float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        load = None
    return HostReading(time.perf_counter(), busy, steal, t.user + t.system, len(cpus), load)


def dispersion(samples: Sequence[float]) -> float | None:
    """Interquartile range over the median of the case's own samples (None below 4 samples or a zero median)."""
    if len(samples) < 4:
        return None
    median = percentile(samples, 50)
    return (percentile(samples, 75) - percentile(samples, 25)) / median if median > 0 else None


def verdict(other_cpu_s: float | None, steal_s: float | None, wall_s: float, cpus: int,
            spread: float | None, tick: float | None = None) -> str | None:
    """Why the case was measured under interference, or None when it was not (figures missing
    off Linux are no evidence either way: only the dispersion then decides)."""
    capacity = wall_s * cpus
    floor = MIN_TICKS * (tick or tick_s())
    reasons = []
    if other_cpu_s is not None and capacity > 0 and other_cpu_s > max(OTHER_CPU_SHARE * capacity, floor):
        reasons.append(f"other processes took {other_cpu_s:.2f} CPU s of {capacity:.2f} "
                       f"({other_cpu_s / capacity:.0%} > {OTHER_CPU_SHARE:.0%} of {cpus} CPU(s) x {wall_s:.2f} s)")
    if steal_s is not None and capacity > 0 and steal_s > max(STEAL_SHARE * capacity, floor):
        reasons.append(f"steal {steal_s:.2f} s ({steal_s / capacity:.0%} > {STEAL_SHARE:.0%})")
    if spread is not None and spread > DISPERSION_IQR:
        reasons.append(f"rounds' IQR/median {spread:.2f} > {DISPERSION_IQR}")
    return "; ".join(reasons) or None


class HostWatch:
    """Readings around a case's timed rounds: ``watch = HostWatch(); <rounds>; watch.finish(samples)``.

    ``reader`` gives a ``HostReading`` (tests hand in fake ones); where it raises OSError or
    ValueError (no /proc: macOS, Windows; a restricted container) the host figures are None and the
    note says why, and only the samples' dispersion can mark the case."""

    def __init__(self, reader: Callable[[], HostReading] = read_host) -> None:
        self._reader = reader
        self.note: str | None = None
        self._start = self._read()

    def _read(self) -> HostReading | None:
        if self.note:
            return None
        try:
            return self._reader()
        except (OSError, ValueError) as exc:
            self.note = f"host interference not measured on {platform.system()}: {exc}"
            return None

    def finish(self, samples: Sequence[float]) -> dict[str, Any]:
        """The record's fields (core/records.py LatencyRecord): host figures, dispersion, the verdict."""
        end = self._read()
        spread = dispersion(samples)
        if self._start is None or end is None:
            return {"host_other_cpu_s": None, "host_steal_s": None, "host_load_avg": None, "host_cpus": None,
                    "host_wall_s": None, "dispersion_iqr_ratio": spread, "host_interference_note": self.note,
                    "interference": verdict(None, None, 0.0, 0, spread)}
        start = self._start
        wall = end.wall_s - start.wall_s
        # our threads run only on these CPUs, so what else was busy there was another process;
        # tick rounding can make it slightly negative on an idle host
        other = max(0.0, (end.busy_s - start.busy_s) - (end.own_cpu_s - start.own_cpu_s))
        steal = max(0.0, end.steal_s - start.steal_s)
        return {"host_other_cpu_s": other, "host_steal_s": steal, "host_load_avg": end.load_avg,
                "host_cpus": end.cpus, "host_wall_s": wall, "dispersion_iqr_ratio": spread,
                "host_interference_note": None,
                "interference": verdict(other, steal, wall, end.cpus, spread, tick_s())}
