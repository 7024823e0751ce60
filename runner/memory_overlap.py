"""A latency case's memory child, overlapped with the next case's untimed work.

The memory of an engine is measured in a child of the fork server (runner/memory_client.py): a
process of its own that loads the engine and runs it, while the test process only waits on a pipe.
Waiting there for each case cost about half of a warm default matrix (the torch.compile children
recompile for seconds). So the test process hands the wait to one background thread and goes on
with what it does next that is *not measured*: the next case's engine load, its equivalence check,
its inputs. Before anything that is measured it settles, i.e. waits for the child and writes the
figures into the case's record:

- before a case's round planning and timed rounds (the latency test calls :meth:`settle`);
- before an engine build (a build's seconds are recorded);
- before every test that is not a matrix case (the scenarios time their own work);
- at the end of the session, before pytest-benchmark saves the run.

So no timed region ever shares the CPUs with a memory child, and what the child measures (the
resident memory of its own process) does not depend on what else runs. The seconds the test
process waited are the "memory" phase of the run's time account; the rest of the child's time was
spent beside untimed work.
"""
from __future__ import annotations

import threading
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .time_ledger import TimeLedger

Measure = Callable[[], dict[str, Any]]
Deliver = Callable[[dict[str, Any]], None]


class MemoryThreadWarning(UserWarning):
    """The memory measurement of a case raised in its thread: its record says so (memory_error)."""


@dataclass
class _Pending:
    label: str
    future: Future
    deliver: Deliver


class MemoryOverlap:
    """At most one memory child in flight; its figures are delivered in the test process's own
    thread, when :meth:`settle` is called."""

    def __init__(self, ledger: TimeLedger) -> None:
        self.ledger = ledger
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[_Pending] = []
        self._owner = threading.get_ident()

    def submit(self, label: str, measure: Measure, deliver: Deliver) -> None:
        """Start ``measure`` (the blocking parent side of the memory child) beside the caller's next
        steps; ``deliver(figures)`` runs at the next :meth:`settle`. One child at a time: a case
        submitted while another is in flight waits for that one first."""
        self.settle()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infermatrix-memory")
        self._pending.append(_Pending(label, self._pool.submit(measure), deliver))

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def settle(self) -> None:
        """Wait for the child in flight (charged to the "memory" phase) and deliver its figures."""
        if not self._pending:
            return
        if threading.get_ident() != self._owner:
            raise RuntimeError("MemoryOverlap.settle() is called from the test process's main thread only")
        pending, self._pending = self._pending, []
        with self.ledger.phase("memory"):
            for item in pending:
                item.deliver(self._result(item))

    @staticmethod
    def _result(item: _Pending) -> dict[str, Any]:
        try:
            return item.future.result()
        except Exception as exc:  # noqa: BLE001 - a bug in the parent side: said in the case's record and as a warning
            why = f"{type(exc).__name__}: {exc}"
            warnings.warn(MemoryThreadWarning(f"{item.label}: the memory measurement raised {why}"), stacklevel=2)
            tail = "".join(traceback.format_exception(exc))[-2000:]
            return {"memory_error": f"the memory measurement raised {why}\n{tail}"}

    def close(self) -> None:
        """Deliver what is in flight and stop the thread (the end of the session)."""
        self.settle()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
