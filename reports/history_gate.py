"""The gate learned from the history: per (hardware kind, case), the case's trend over the kind's
complete runs, its noise band and its change points (reports/changepoints.py).

``infermatrix ab`` stays the gate of a pull request; this one watches main. A series is one case of
one kind (core/history_layout.py keeps one folder per kind, so runs of two kinds are never one
series); only complete runs are points (an incomplete run is never read as "no regression"). A
point whose record was measured under host interference (``interference``, runner/interference.py)
is drawn but is no evidence: it takes no part in the band nor in the change points, so a noisy case
never triggers a verdict.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from infermatrix.core import history_layout as layout

from .history import InputError, number, read

METRICS = ("p50", "p90", "p99")
#: fewer clean points than this and a case has no band and no change points
MIN_POINTS = 10


@dataclass(frozen=True)
class TrendPoint:
    """One complete run's figures of one case (seconds; None where the run did not record them)."""

    run_path: Path
    datetime: datetime        # UTC, the run's start (from its file name, core/history_layout.py)
    commit: str | None        # the run's commit (as long as the run record has it); None: no git checkout
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    noisy: bool               # measured under host interference: drawn, never evidence

    def __post_init__(self) -> None:
        for name in ("p50_s", "p90_s", "p99_s"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"TrendPoint {name}={v!r}: expected a positive number of seconds or None")

    def value(self, metric: str) -> float | None:
        return getattr(self, f"{check_metric(metric)}_s")


@dataclass(frozen=True)
class ChangePoint:
    """A step in a case's series: the first run after it is ``points[index]``."""

    index: int
    commit: str | None        # the commit of the first run after the step
    before_s: float           # the level of the clean runs before (back to the previous step): the
    after_s: float            # geometric mean of their fastest third; after: up to the next step
    change_rel: float         # after / before - 1 (+: slower)
    band_rel: float           # the noise band this step was judged against (what noise alone can move)
    regression: bool          # slower beyond the band (False: an improvement)

    def __post_init__(self) -> None:
        if self.index < 1:
            raise ValueError(f"ChangePoint index {self.index}: a step needs a run before it (index >= 1)")
        if not (self.before_s > 0 and self.after_s > 0 and self.band_rel >= 0):
            raise ValueError(f"ChangePoint before_s={self.before_s!r}, after_s={self.after_s!r}, "
                             f"band_rel={self.band_rel!r}: expected positive seconds and a band >= 0")
        if self.regression != (self.change_rel > 0):
            raise ValueError(f"ChangePoint regression={self.regression} contradicts change_rel={self.change_rel:+.3f}")

    def sentence(self) -> str:
        what = "regressed" if self.regression else "improved"
        return (f"{what} at commit {self.commit or 'unknown'} by {self.change_rel * 100:+.1f} % "
                f"(band ±{self.band_rel * 100:.1f} %)")


@dataclass(frozen=True)
class CaseTrend:
    """One case of one kind over the kind's complete runs, oldest first."""

    kind_id: str
    case: str                 # the record's label: the case id (core/schema.py Case.id), plus its axes
    points: tuple[TrendPoint, ...]
    band_rel: float | None    # one run's noise band around the case's level (None: too few clean runs)
    change_points: tuple[ChangePoint, ...]

    @property
    def newest(self) -> ChangePoint | None:
        return self.change_points[-1] if self.change_points else None

    @property
    def regressed(self) -> bool:
        """The newest step is a regression (a later improvement or none: False)."""
        return self.newest is not None and self.newest.regression


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InputError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    return metric


def case_name(record: Any) -> str | None:
    """The series name of a record that has latency percentiles: the latency matrix's case id as it
    is, another scenario's prefixed by its kind (an accuracy run of a case is not its latency);
    None for a record without p50/p90/p99 (generation, pipeline ...)."""
    if not hasattr(record, "p50_s"):
        return None
    return record.label() if record.kind == "latency" else f"{record.kind}:{record.label()}"


def _point(entry: layout.RunEntry, commit: str | None, bench: Mapping[str, Any]) -> tuple[str, TrendPoint] | None:
    record = read(entry.path, bench)
    name = case_name(record)
    if name is None:
        return None
    stats = bench.get("stats") if isinstance(bench.get("stats"), dict) else {}
    # the median is p50 when the record has none (runs saved before it was recorded)
    p50 = number(record.p50_s) if record.p50_s is not None else number(stats.get("median"))
    noisy = bool(getattr(record, "interference", None))

    def positive(v: Any) -> float | None:
        x = number(v)
        return x if x is not None and x > 0 else None

    return name, TrendPoint(entry.path, entry.datetime, commit, positive(p50), positive(record.p90_s),
                            positive(record.p99_s), noisy)


def load_series(history: Path, kind_id: str) -> dict[str, list[TrendPoint]]:
    """Every case's points over the kind's complete runs, oldest first."""
    series: dict[str, list[TrendPoint]] = {}
    for entry in layout.runs(history, kind_id, include_incomplete=False):
        try:
            data = layout.load_run(entry)
        except layout.HistoryLayoutError as exc:
            raise InputError(str(exc)) from None
        block = data.get(layout.RUN_KEY) if isinstance(data.get(layout.RUN_KEY), dict) else {}
        if block.get("complete") is False:
            continue   # the record inside is the authority: an incomplete run is never a point
        if block.get("kind") not in (None, kind_id):
            raise InputError(f"{entry.path}: a run of kind {block.get('kind')!r} in the folder of kind {kind_id!r}; "
                             "runs of two kinds are never one series")
        commit = block.get("commit") if isinstance(block.get("commit"), str) else entry.commit
        for bench in data["benchmarks"]:
            named = _point(entry, commit, bench)
            if named is not None:
                series.setdefault(named[0], []).append(named[1])
    return series


def history_kinds(history: Path, kind_id: str | None = None) -> list[str]:
    """The kinds to analyse: the one asked for, or every kind of the history; InputError for a
    history that is not one, or a kind it does not hold (naming those it holds)."""
    history = Path(history)
    if not history.is_dir():
        raise InputError(f"{history}: no such history folder")
    found = layout.kinds(history)
    if not found:
        raise InputError(f"{history}: no hardware kind in this history (expected <kind id>/runs/*.json, "
                         "written by `infermatrix merge ... --into HISTORY`)")
    if kind_id is None:
        return found
    if kind_id not in found:
        raise InputError(f"kind {kind_id!r} is not in {history}; its kinds: {', '.join(found)}")
    return [kind_id]


def analyse_history(history: Path, kind_id: str | None = None, metric: str = "p50", *,
                    min_points: int = MIN_POINTS, **detection: Any) -> list[CaseTrend]:
    """Every case of the kind (or of every kind) with its band and change points, sorted by kind
    and case; ``detection``: reports/changepoints.py detect()'s alpha, min_change, min_segment."""
    from .changepoints import detect

    check_metric(metric)
    trends = []
    for kind in history_kinds(history, kind_id):
        for case, points in sorted(load_series(history, kind).items()):
            clean = [(i, p.value(metric)) for i, p in enumerate(points) if not p.noisy and p.value(metric)]
            found = detect([i for i, _ in clean], [v for _, v in clean], min_points=min_points, **detection)
            steps = tuple(ChangePoint(s.index, points[s.index].commit, s.before, s.after, s.change_rel, s.band_rel,
                                      s.change_rel > 0) for s in found.steps)
            trends.append(CaseTrend(kind, case, tuple(points), found.band_rel, steps))
    return trends
