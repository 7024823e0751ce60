"""Where a run's wall time goes: named phases timed around the runner's own calls.

A phase is timed with ``time.perf_counter`` around a call the run makes anyway (a build, an
equivalence check, the timed rounds, the memory child). Phases nest, and each second is
charged to the innermost open phase only: an equivalence check that first builds its engine
charges the build to "build" and only its own inference to "equivalence", so the phases never
count a second twice and their sum is at most the wall time. What the phases leave of the
wall time is the harness (pytest, fixtures, records, reports). Listeners hear each phase begin
and end: the pytest front end prints a long build's progress from them (fixtures/progress.py).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: the phases in the order they are printed (others, e.g. a new one, follow in name order);
#: "warm-up" is what the timed-rounds call spent beyond its kept samples: the warm-up rounds
#: and pytest-benchmark's bookkeeping between rounds
PHASES = ("collection", "cache lookup", "build", "load", "baseline", "equivalence", "flop count",
          "round planning", "warm-up", "timed rounds", "gpu passes", "peak calibration", "memory", "scenarios")
HARNESS = "harness"
TIMED = "timed rounds"


@dataclass
class Phase:
    """One open (or closed) phase: ``seconds`` is its own time, the phases opened inside it
    excluded; ``started``/``ended`` give its whole span on the ledger's clock."""
    name: str
    detail: str | None
    started: float
    resumed: float
    seconds: float = 0.0
    ended: float | None = None

    @property
    def span(self) -> float:
        return (self.ended if self.ended is not None else self.resumed) - self.started


Listener = Callable[[str, Phase], None]   # ("begin" | "end", phase)


class TimeLedger:
    """The seconds of each named phase in one process, and that process's wall time."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.listeners: list[Listener] = []
        self.started: float | None = None
        self._open: list[Phase] = []

    def start(self) -> None:
        """The wall clock's origin (the pytest session's start): set once."""
        if self.started is None:
            self.started = self.clock()

    def wall_seconds(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    def begin(self, name: str, detail: str | None = None) -> Phase:
        """Open ``name`` inside whatever phase is open (which stops being charged until this
        one ends). Pair with :meth:`end`, or use :meth:`phase` where a ``with`` block fits."""
        now = self.clock()
        if self._open:
            self._charge(self._open[-1], now)
        phase = Phase(name, detail, started=now, resumed=now)
        self._open.append(phase)
        self._tell("begin", phase)
        return phase

    def end(self, phase: Phase) -> float:
        """Close ``phase`` and any phase opened inside it that an exception left open; its own
        seconds. Closing a phase twice changes nothing."""
        if phase not in self._open:
            return phase.seconds
        now = self.clock()
        self._charge(self._open[-1], now)  # only the innermost runs: the phases around it are paused
        while self._open:
            top = self._open.pop()
            top.ended = now
            self.counts[top.name] = self.counts.get(top.name, 0) + 1
            self._tell("end", top)
            if top is phase:
                break
        if self._open:  # the enclosing phase is charged again from now on
            self._open[-1].resumed = now
        return phase.seconds

    @contextmanager
    def phase(self, name: str, detail: str | None = None) -> Iterator[Phase]:
        opened = self.begin(name, detail)
        try:
            yield opened
        finally:
            self.end(opened)

    def unwind(self) -> None:
        """Close every open phase (after a test that failed between a begin and its end)."""
        if self._open:
            self.end(self._open[0])

    def move(self, source: str, target: str, seconds: float) -> None:
        """Re-charge ``seconds`` of ``source`` to ``target`` (at most what ``source`` holds):
        e.g. the part of the timed-rounds call that was warm-up, known only once it returned."""
        seconds = min(max(seconds, 0.0), self.seconds.get(source, 0.0))
        self.seconds[source] = self.seconds.get(source, 0.0) - seconds
        self.seconds[target] = self.seconds.get(target, 0.0) + seconds

    def as_dict(self) -> dict[str, Any]:
        """This process's phases and wall time, as JSON (what an xdist worker sends)."""
        return {"wall_s": self.wall_seconds(), "phases": dict(self.seconds), "counts": dict(self.counts)}

    def _charge(self, phase: Phase, now: float) -> None:
        elapsed = now - phase.resumed
        phase.seconds += elapsed
        phase.resumed = now
        self.seconds[phase.name] = self.seconds.get(phase.name, 0.0) + elapsed

    def _tell(self, event: str, phase: Phase) -> None:
        for listener in list(self.listeners):
            listener(event, phase)


def build_label(fields: dict[str, Any]) -> str:
    """A build phase's detail, from its cache key's fields: what the progress lines call it."""
    scheme = f" {fields['int8_scheme']}" if fields.get("int8_scheme") else ""
    batch = "" if fields["batch_profile"] == "dynamic" else f", batch {fields['batch_profile']}"
    return f"{fields['model']} ({fields['engine']} {fields['precision']}{scheme} on {fields['device']}{batch})"


def run_time(wall_s: float, processes: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's account from each test-running process's ``as_dict()`` (the only process, or
    every xdist worker): ``wall_s`` is the run's wall time; the shares are of ``process_s``, the
    test processes' wall times summed (under xdist, workers run side by side, so their phases
    can add up to more than the wall time). ``harness`` is what the phases leave of it."""
    phases: dict[str, float] = {}
    counts: dict[str, int] = {}
    for proc in processes:
        for name, seconds in proc["phases"].items():
            phases[name] = phases.get(name, 0.0) + seconds
        for name, count in proc.get("counts", {}).items():
            counts[name] = counts.get(name, 0) + count
    process_s = sum(p["wall_s"] for p in processes)
    measured = sum(phases.values())
    # a phase still open when the wall clock was read can exceed it by the reading's lag
    process_s = max(process_s, measured)
    ordered = sorted(phases, key=lambda n: (PHASES.index(n) if n in PHASES else len(PHASES), n))
    rows = [{"phase": n, "seconds": phases[n], "count": counts.get(n, 0)} for n in ordered if phases[n] > 0]
    rows.append({"phase": HARNESS, "seconds": process_s - measured, "count": 0})
    for row in rows:
        row["share"] = row["seconds"] / process_s if process_s > 0 else 0.0
    timed = phases.get(TIMED, 0.0)
    return {"wall_s": wall_s, "process_s": process_s, "processes": len(processes), "phases": rows,
            "timed_rounds_s": timed, "timed_rounds_share": timed / process_s if process_s > 0 else 0.0}


def render(account: dict[str, Any]) -> list[str]:
    """The terminal summary's lines for a ``run_time`` account."""
    lines = [f"time: {account['wall_s']:.1f} s wall from the session's start"]
    if account["processes"] > 1:
        lines[0] += (f"; {account['processes']} workers ran {account['process_s']:.1f} s in all "
                     "(the shares below are of that)")
    width = max(len(r["phase"]) for r in account["phases"])
    for row in account["phases"]:
        count = f"  ({row['count']}×)" if row["count"] > 1 else ""
        lines.append(f"  {row['phase']:<{width}}  {row['seconds']:8.1f} s  {row['share'] * 100:5.1f} %{count}")
    share = account["timed_rounds_share"]
    lines.append(f"timed rounds: {account['timed_rounds_s']:.1f} s ({share * 100:.1f} % of the run; "
                 f"{(1 - share) * 100:.1f} % outside them)")
    return lines
