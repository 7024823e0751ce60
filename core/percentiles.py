"""The percentile rule, shared by the measurements (scenarios/, perf_tests/) and the readers of saved runs
(reports/, the ``infermatrix ab`` merge): a percentile only with enough samples beyond it, and
throughput from the samples. Pure Python, no engine."""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

#: the fewest samples a percentile needs: a p99 from 40 samples is just the maximum, so below
#: these counts the figure is recorded as null with the reason in ``percentile_notes``
MIN_SAMPLES: dict[int, int] = {50: 1, 90: 10, 99: 100}
#: extra_info key of ``{figure key: why it is null}`` (empty when every figure was recorded)
NOTES_KEY = "percentile_notes"


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"q={q}; expected 0..100")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def percentiles(samples: Sequence[float], qs: Sequence[int] = (50, 90, 99),
                prefix: str = "") -> tuple[dict[str, float | None], dict[str, str]]:
    """``({prefix}p{q}_s: value or None}, {key: reason})``: each percentile only when at least
    ``MIN_SAMPLES[q]`` samples were taken, else None and the reason."""
    figures: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for q in qs:
        if q not in MIN_SAMPLES:
            raise ValueError(f"p{q}: no minimum sample count defined; known: {sorted(MIN_SAMPLES)}")
        key, need = f"{prefix}p{q}_s", MIN_SAMPLES[q]
        if len(samples) >= need:
            figures[key] = percentile(samples, q)
        else:
            figures[key] = None
            reasons[key] = f"p{q} needs >= {need} samples; {len(samples)} were taken"
    return figures, reasons


def percentile_figures(samples: Sequence[float], qs: Sequence[int] = (50, 90, 99), prefix: str = "",
                       notes: dict[str, str] | None = None) -> dict[str, Any]:
    """:func:`percentiles` as extra_info: the figures plus ``percentile_notes`` (``notes``, the
    reasons of earlier calls, merged in)."""
    figures, reasons = percentiles(samples, qs, prefix)
    return {**figures, NOTES_KEY: {**(notes or {}), **reasons}}


def latency_summary(samples: Sequence[float], batch_size: int) -> dict[str, Any]:
    """Percentiles (null below their sample minimum) and throughput from the samples:
    items per second over the whole measurement, ``batch_size / mean seconds per call``."""
    if not samples:
        raise ValueError("latency_summary of no samples")
    mean = statistics.fmean(samples)
    return {**percentile_figures(samples), "mean_s": mean, "min_s": min(samples), "sample_count": len(samples),
            "throughput_items_per_s": batch_size / mean if mean > 0 else None}
