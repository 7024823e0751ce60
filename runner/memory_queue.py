"""The latency cases' memory children, queued during the run and measured after its timed cases.

The memory of an engine is measured in a child of a fork server (runner/memory_client.py): a
process of its own that loads the engine and runs it. The children wait in a queue while the
cases run, and :meth:`MemoryQueue.settle` (at the end of the session, before pytest-benchmark saves
the run) measures them ``lanes`` at a time, each lane with fork servers of its own, while this
process does nothing else. So no child shares the CPUs with anything the run times or records a
duration of: round planning, timed rounds, builds, engine loads (torch.compile's warm compile
seconds), equivalence checks, scenarios. What a child measures (the resident memory of its own
process: load RSS and run peak) does not depend on what runs beside it; the host's free memory
does, so a child runs beside another only when both are CPU cases that fit ``PARALLEL_SHARE`` of
the memory available.

Measured on the default matrix with every case's memory measured (2-core AMD EPYC, quiet host,
docs/measurements.md): the wall time stayed where one child at a time beside the next case's
untimed work had it (555 s against 547 s), the children's seconds moving from the loads and checks
they slowed to the end of the run. Two lanes on two cores are not twice one: each child runs its
rounds on both cores.

The seconds the test process waits are the "memory" phase of the run's time account. A run that is
interrupted does not start its queued children: their records say they were not measured.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from .memory_client import server_start_seconds, use_lane
from .time_ledger import TimeLedger

Measure = Callable[[], dict[str, Any]]
Deliver = Callable[[dict[str, Any]], None]
Progress = Callable[[int, int, float], None]

#: children beside each other at most (each lane starts its own fork servers, about 0.4 GiB each)
MAX_LANES = 2
#: children run beside each other only while their footprints sum to at most this share of MemAvailable
PARALLEL_SHARE = 0.25
#: a child's interpreter with the frameworks imported (the fork server's pages it maps again: about 0.4 GiB
#: here), rounded up; and the copies of the weights a load may hold at once (file, framework, cast)
CHILD_BASE_BYTES = 1 << 30
WEIGHT_COPIES = 4


class MemoryThreadWarning(UserWarning):
    """The memory measurement of a case raised in its thread: its record says so (memory_error)."""


@dataclass(frozen=True)
class _Queued:
    label: str
    measure: Measure
    deliver: Deliver
    #: what the child may hold: None (unknown, or a GPU case) runs alone
    footprint_bytes: int | None


def lanes_for(cpus: int, workers: int) -> int:
    """Children measured at once by one test process: its share of the CPUs, 1 to MAX_LANES."""
    return max(1, min(MAX_LANES, cpus // max(1, workers)))


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none: every child then runs alone)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class MemoryQueue:
    """Memory measurements queued by the cases; measured and delivered in the test process's
    own thread by :meth:`settle`."""

    def __init__(self, ledger: TimeLedger, lanes: int = 1,
                 available: Callable[[], int | None] = available_bytes) -> None:
        if lanes < 1:
            raise ValueError(f"lanes={lanes}; expected at least 1")
        self.ledger, self.lanes, self._available = ledger, lanes, available
        self._queued: list[_Queued] = []
        self._owner = threading.get_ident()
        self._lock = threading.Lock()  # the lanes' threads add their seconds
        #: each measured case's child: label -> seconds from its start to its figures, without the
        #: fork servers' start (the slowest say where the run's memory phase went)
        self.child_seconds: dict[str, float] = {}
        #: seconds the lanes spent starting fork servers (charged to no child)
        self.server_start_s = 0.0

    def submit(self, label: str, measure: Measure, deliver: Deliver, footprint_bytes: int | None = None) -> None:
        """Queue ``measure`` (the blocking parent side of a memory child); ``deliver(figures)`` runs
        at :meth:`settle`. ``footprint_bytes``: a bound on what the child holds (None: it runs alone)."""
        self._queued.append(_Queued(label, measure, deliver, footprint_bytes))

    @property
    def queued(self) -> int:
        return len(self._queued)

    def settle(self, progress: Progress | None = None) -> None:
        """Measure every queued case, ``lanes`` at a time, and deliver each one's figures as it
        ends; the wait is charged to the "memory" phase. ``progress(done, total, seconds)`` after each."""
        if not self._queued:
            return
        if threading.get_ident() != self._owner:
            raise RuntimeError("MemoryQueue.settle() is called from the test process's main thread only")
        todo, self._queued = deque(self._queued), []
        total, start = len(todo), time.perf_counter()
        lanes = itertools.count()
        running: dict[Future, _Queued] = {}
        try:
            with self.ledger.phase("memory"), ThreadPoolExecutor(
                    max_workers=self.lanes, thread_name_prefix="infermatrix-memory",
                    initializer=lambda: use_lane(next(lanes))) as pool:
                while todo or running:
                    # the pool never holds a case that has not started: an interrupted wait leaves nothing there
                    while todo and self._may_start(todo[0], list(running.values())):
                        item = todo.popleft()
                        running[pool.submit(self._measure, item)] = item
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        item = running.pop(future)
                        item.deliver(self._result(item, future))
                        if progress is not None:
                            progress(total - len(todo) - len(running), total, time.perf_counter() - start)
        except BaseException:
            # Ctrl-C while the children run: the pool has let the running ones end, so their figures
            # are delivered; the cases not started go back to the queue, for the caller to abandon
            for future, item in running.items():
                if future.done():
                    item.deliver(self._result(item, future))
            self._queued = list(todo) + self._queued
            raise

    def _measure(self, item: _Queued) -> dict[str, Any]:
        start, servers, figures = time.perf_counter(), server_start_seconds(), None
        try:
            figures = item.measure()
            return figures
        finally:
            starting = server_start_seconds() - servers
            with self._lock:
                self.server_start_s += starting
                # figures kept from an earlier run come back without a child: not one of the children
                # the summary counts and ranks (a warm run said "106 children in 0 s")
                if not (isinstance(figures, dict) and figures.get("memory_reused")):
                    self.child_seconds[item.label] = time.perf_counter() - start - starting

    def slowest(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` measured cases whose children took longest, slowest first: (label, seconds)."""
        return sorted(self.child_seconds.items(), key=lambda kv: kv[1], reverse=True)[:n]

    def _may_start(self, item: _Queued, running: list[_Queued]) -> bool:
        if not running:
            return True
        if len(running) >= self.lanes or item.footprint_bytes is None:
            return False
        if any(r.footprint_bytes is None for r in running):
            return False
        free = self._available()
        together = item.footprint_bytes + sum(r.footprint_bytes for r in running)  # type: ignore[misc]
        return free is not None and together <= PARALLEL_SHARE * free

    def abandon(self, why: str, figures: Callable[[str], dict[str, Any]]) -> int:
        """Deliver ``figures(why)`` to every queued case instead of measuring it (an interrupted run);
        returns how many there were."""
        items, self._queued = self._queued, []
        for item in items:
            item.deliver(figures(why))
        return len(items)

    @staticmethod
    def _result(item: _Queued, future: Future) -> dict[str, Any]:
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - a bug in the parent side: said in the case's record and as a warning
            why = f"{type(exc).__name__}: {exc}"
            warnings.warn(MemoryThreadWarning(f"{item.label}: the memory measurement raised {why}"), stacklevel=2)
            tail = "".join(traceback.format_exception(exc))[-2000:]
            return {"memory_error": f"the memory measurement raised {why}\n{tail}"}

    def close(self) -> None:
        """Measure and deliver what is still queued (the end of the session)."""
        self.settle()


def child_footprint(device: str, artifact_bytes: int, module: Any | None) -> int | None:
    """A bound on what a case's memory child holds, to decide whether it may run beside another:
    the interpreter and its imports (``CHILD_BASE_BYTES``) and ``WEIGHT_COPIES`` times the larger of
    the engine's files and the model's weights. None (it runs alone) off the CPU: two children on one
    GPU would share its memory and its allocator's limits."""
    if device != "cpu":
        return None
    weights = 0
    if module is not None:
        weights = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    return CHILD_BASE_BYTES + WEIGHT_COPIES * max(artifact_bytes, weights)


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
