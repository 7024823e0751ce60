"""How many timed rounds a latency case gets (the measurement policy of perf_tests/test_latency.py
and of anything else that times an engine the same way)."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

MIN_ROUNDS, MAX_ROUNDS = 10, 2000


def plan_rounds(run: Callable[[Any], Any], prepared: Any, latency_time: float,
                latency_rounds: int | None = None) -> tuple[int, int]:
    """(rounds, warmup_rounds): ``latency_rounds`` when given, else rounds that fill
    ``latency_time`` seconds at the probed latency (10 to 2000); warm-up is ~10 % of that."""
    for _ in range(2):
        run(prepared)  # first calls allocate, autotune, fill caches
    if latency_rounds:
        return latency_rounds, max(2, latency_rounds // 10)
    probe = []
    for _ in range(3):
        start = time.perf_counter()
        run(prepared)
        probe.append(time.perf_counter() - start)
    rounds = int(latency_time / max(statistics.median(probe), 1e-6))
    rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, rounds))
    return rounds, max(3, rounds // 10)
