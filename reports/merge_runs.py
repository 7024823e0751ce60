"""The fan-in of a sharded run: N shard files (pytest-benchmark JSON, each with its
``infermatrix_shard`` record) become one run of one hardware kind, complete or marked incomplete.

A shard set is refused (InputError, nothing written) when it cannot be one run: a file that is not
a shard, shards of two commits, two kinds or two plans, the same shard or the same case twice, a
case outside the plan. A set that can be one run but lacks shards, or planned cases that have
neither a benchmark nor a recorded outcome, is merged as an incomplete run that names them.
Reads JSON only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infermatrix.core import shard_record
from infermatrix.core.hardware_kind import HardwareKind, KindError, kind_of
from infermatrix.core.history_layout import RUN_KEY, parse_utc, write_run
from infermatrix.core.run_record import RunRecord
from infermatrix.core.shard_record import SHARD_KEY, ShardRecord, ShardRecordError

from .history import InputError

EQUIVALENCE_KEY = "infermatrix_equivalence"
TIME_KEY = "infermatrix_time"


@dataclass(frozen=True)
class Shard:
    """One shard file, read and checked on its own."""

    source: Path
    record: ShardRecord
    kind: HardwareKind
    data: dict[str, Any]

    @property
    def group(self) -> int:
        return self.record.group

    @property
    def splits(self) -> int:
        return self.record.splits

    @property
    def benchmarked(self) -> list[str]:
        return [b.get("fullname") for b in self.data["benchmarks"]]


@dataclass(frozen=True)
class MergedRun:
    """The merged run's JSON (what is stored) and its record."""

    data: dict[str, Any]
    record: RunRecord
    kind: HardwareKind


def read_shard(source: Path) -> Shard:
    """One shard file; InputError naming the file and the bad value when it is not a shard."""
    source = Path(source)
    try:
        data = json.loads(source.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{source}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise InputError(f"{source}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    for bench in data["benchmarks"]:
        if not isinstance(bench, dict) or not isinstance(bench.get("fullname"), str):
            raise InputError(f"{source}: benchmark {bench!r:.200} has no 'fullname' (the case's node id)")
    try:
        record = shard_record.read_shard(data)
    except ShardRecordError as exc:
        raise InputError(f"{source}: {exc}") from None
    if record is None:
        raise InputError(f"{source}: no {SHARD_KEY!r} record: not a shard written by the infermatrix plugin "
                         "(pytest perf_tests ... --benchmark-json FILE)")
    machine_info = data.get("machine_info")
    if not isinstance(machine_info, dict) or "hardware_kind" not in (machine_info.get("infermatrix") or {}):
        raise InputError(f"{source}: machine_info has no infermatrix.hardware_kind: shards are written by the "
                         "infermatrix plugin, which records the hardware kind")
    try:
        kind = kind_of(machine_info)
    except KindError as exc:
        raise InputError(f"{source}: {exc}") from None
    if record.kind != kind.id:
        raise InputError(f"{source}: {SHARD_KEY}.kind {record.kind!r} differs from machine_info's "
                         f"hardware kind {kind.id!r}")
    try:
        parse_utc(data.get("datetime"))
    except ValueError:
        raise InputError(f"{source}: datetime {data.get('datetime')!r} is not an ISO 8601 time") from None
    return Shard(source=source, record=record, kind=kind, data=data)


def _one_value(shards: list[Shard], what: str, value_of) -> Any:
    first = shards[0]
    for shard in shards[1:]:
        if value_of(shard) != value_of(first):
            raise InputError(f"{shard.source}: {what} {value_of(shard)!r} differs from {first.source}'s "
                             f"{value_of(first)!r}: shards of one run share it")
    return value_of(first)


def _check_plan(shards: list[Shard]) -> tuple[str, ...]:
    first = shards[0]
    plan = set(first.record.planned)
    for shard in shards[1:]:
        if set(shard.record.planned) != plan:
            extra, lacking = sorted(set(shard.record.planned) - plan), sorted(plan - set(shard.record.planned))
            raise InputError(f"{shard.source}: its plan differs from {first.source}'s "
                             f"({len(extra)} cases only here, e.g. {extra[:1]}; {len(lacking)} only there, "
                             f"e.g. {lacking[:1]}): shards of one run share one plan")
    return tuple(sorted(plan))


def _check_once(shards: list[Shard], plan: tuple[str, ...]) -> None:
    """No case twice (selected, benchmarked or given an outcome by two shards, or twice in one)
    and none outside the plan."""
    planned = set(plan)
    for what, cases_of in (("selected", lambda s: s.record.selected), ("benchmarked", lambda s: s.benchmarked),
                           ("given an outcome", lambda s: list(s.record.outcomes))):
        seen: dict[str, Path] = {}
        for shard in shards:
            for case in cases_of(shard):
                if case in seen:
                    raise InputError(f"{shard.source}: case {case!r} {what} twice (also in {seen[case]}): "
                                     "every case runs in exactly one shard")
                if case not in planned:
                    raise InputError(f"{shard.source}: case {case!r} {what} but not in the run's plan")
                seen[case] = shard.source


def _combined_time(accounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The shards' time accounts as one: shards run side by side, so the wall time is the longest
    shard's and the shares are of all shards' process time (as under pytest-xdist)."""
    phases: dict[str, dict[str, float]] = {}
    for account in accounts:
        for row in account.get("phases") or []:
            if not isinstance(row, dict) or not isinstance(row.get("phase"), str):
                continue   # not a phase row: nothing to add up
            total = phases.setdefault(row["phase"], {"seconds": 0.0, "count": 0})
            total["seconds"] += row.get("seconds") or 0.0
            total["count"] += row.get("count") or 0
    process_s = sum(a.get("process_s") or 0.0 for a in accounts)
    timed = sum(a.get("timed_rounds_s") or 0.0 for a in accounts)

    def share(seconds: float) -> float:
        return seconds / process_s if process_s > 0 else 0.0

    return {"wall_s": max(a.get("wall_s") or 0.0 for a in accounts), "process_s": process_s,
            "processes": sum(a.get("processes") or 1 for a in accounts),
            "phases": [{"phase": n, "seconds": t["seconds"], "count": int(t["count"]), "share": share(t["seconds"])}
                       for n, t in phases.items()],
            "timed_rounds_s": timed, "timed_rounds_share": share(timed)}


def merge_shards(sources: list[Path]) -> MergedRun:
    """The shards as one run (complete or not); InputError when they cannot be one run."""
    if not sources:
        raise InputError("no shard files given")
    shards = sorted((read_shard(Path(s)) for s in sources), key=lambda s: s.group)
    for before, after in zip(shards, shards[1:]):
        if before.group == after.group:
            raise InputError(f"{after.source}: shard {after.group} of {after.splits} given twice "
                             f"(also {before.source})")
    splits = _one_value(shards, "splits", lambda s: s.splits)
    commit = _one_value(shards, "commit", lambda s: s.record.commit)
    _one_value(shards, "hardware kind", lambda s: s.kind.id)
    kind = shards[0].kind
    plan = _check_plan(shards)
    _check_once(shards, plan)
    outcomes = {k: v for s in shards for k, v in s.record.outcomes.items()}
    accounted = set(outcomes) | {case for s in shards for case in s.benchmarked}
    present = tuple(s.group for s in shards)
    missing = tuple(g for g in range(1, splits + 1) if g not in present)
    cases_missing = tuple(c for c in plan if c not in accounted)
    started = min(parse_utc(s.data["datetime"]) for s in shards)
    try:
        record = RunRecord(complete=not missing and not cases_missing, splits=splits, shards_present=present,
                           shards_missing=missing, cases_missing=cases_missing, kind=kind.id, commit=commit,
                           datetime=started.isoformat(), sources=tuple(s.source.name for s in shards),
                           outcomes=outcomes)
    except ValueError as exc:
        raise InputError(f"{shards[0].source}: {exc}") from None
    first = shards[0].data
    data: dict[str, Any] = {
        "machine_info": first.get("machine_info") or {}, "commit_info": first.get("commit_info") or {},
        "benchmarks": sorted((b for s in shards for b in s.data["benchmarks"]), key=lambda b: b.get("fullname")),
        "datetime": started.isoformat(), "version": first.get("version")}
    equivalence = [r for s in shards for r in s.data.get(EQUIVALENCE_KEY) or []]
    if equivalence:
        # a case's equivalence is checked in every shard that times it: keep each once
        kept: dict[Any, dict] = {}
        for checked in equivalence:
            kept.setdefault(checked.get("id"), checked)
        data[EQUIVALENCE_KEY] = list(kept.values())
    accounts = [s.data[TIME_KEY] for s in shards if isinstance(s.data.get(TIME_KEY), dict)]
    if accounts:
        data[TIME_KEY] = _combined_time(accounts)
    data[RUN_KEY] = record.to_json()
    return MergedRun(data=data, record=record, kind=kind)


def store(history: Path, merged: MergedRun) -> Path:
    """Write the merged run under its kind (core/history_layout.py): never over an existing run."""
    return write_run(Path(history), merged.kind, merged.data)


def missing_lines(record: RunRecord) -> list[str]:
    """What an incomplete run lacks, in words."""
    lines = []
    if record.shards_missing:
        lines.append(f"shards missing: {', '.join(map(str, record.shards_missing))} (of {record.splits})")
    if record.cases_missing:
        lines.append(f"cases missing ({len(record.cases_missing)}): neither benchmarked nor given an outcome")
        lines += [f"  {case}" for case in record.cases_missing]
    return lines
