"""Runs as Bencher Metric Format (BMF) JSON, for a team that keeps its history in Bencher.

BMF (https://bencher.dev/docs/reference/bencher-metric-format/) is one JSON object: benchmark name
-> measure slug -> ``{"value", "lower_value"?, "upper_value"?}`` (numbers; ``value`` required).
``bencher run --adapter json --file bmf.json`` reads it. Each exported case is one benchmark named
``<record kind>/<record label>`` (``latency/resnet50-onnxruntime-int8-static-bs8-cpu``; unique in a
run) with these measures, each only where the run recorded the figure (a null stays out, never 0):

- ``latency`` (Bencher's built-in Latency measure, nanoseconds): the p50, with the median's 95 %
  confidence interval as lower/upper value when the run measured it;
- ``latency-p99`` (nanoseconds): the p99;
- ``throughput`` (Bencher's built-in Throughput measure, operations per second): items per second
  (a batch of 8 is 8 items) for the matrix, LoadGen's samples per second for a load scenario;
- ``load-rss``, ``run-peak-rss``, ``gpu-peak-memory`` (bytes): the engine's own memory.

The hardware kind is the testbed: runs of two kinds are never one series, in Bencher as here.
Reads JSON only (imports core only).
"""
from __future__ import annotations

import json
import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infermatrix.core.hardware_kind import KindError, kind_of
from infermatrix.core.history_layout import RUN_KEY, HistoryLayoutError
from infermatrix.core.run_record import RunRecord
from infermatrix.core.schema import Record, SchemaError, read_record
from infermatrix.core.shard_record import ShardRecordError, read_shard

NS_PER_S = 1e9


class BencherExportError(ValueError):
    """Runs that cannot be one Bencher report (the file and the reason named)."""


@dataclass(frozen=True)
class Measure:
    """One BMF measure: its slug, the record field it reads and the factor to Bencher's unit."""

    slug: str
    field: str
    scale: float
    unit: str

    def __post_init__(self) -> None:
        if not self.slug or len(self.slug) > 64 or self.slug != self.slug.lower():
            raise ValueError(f"measure slug {self.slug!r}: Bencher takes a lower-case slug of 1 to 64 characters")


LATENCY_P99 = "latency-p99"
#: per record kind: the measures it exports, in Bencher's units (the first is the p50 latency)
MEASURES: dict[str, tuple[Measure, ...]] = {
    "latency": (Measure("latency", "p50_s", NS_PER_S, "ns"), Measure(LATENCY_P99, "p99_s", NS_PER_S, "ns"),
                Measure("throughput", "throughput_items_per_s", 1.0, "items/s"),
                Measure("load-rss", "load_rss_bytes", 1.0, "bytes"),
                Measure("run-peak-rss", "run_peak_rss_bytes", 1.0, "bytes"),
                Measure("gpu-peak-memory", "gpu_peak_bytes", 1.0, "bytes")),
    "load": (Measure("latency", "p50_s", NS_PER_S, "ns"), Measure(LATENCY_P99, "p99_s", NS_PER_S, "ns"),
             Measure("throughput", "samples_per_s", 1.0, "samples/s")),
    "pipeline": (Measure("latency", "e2e_p50_s", NS_PER_S, "ns"), Measure(LATENCY_P99, "e2e_p99_s", NS_PER_S, "ns"),
                 Measure("run-peak-rss", "peak_rss_bytes", 1.0, "bytes")),
}
#: the custom measures a Bencher project needs once (`bencher measure create`), with their units
CUSTOM_MEASURES = {LATENCY_P99: ("Latency p99", "nanoseconds (ns)"), "load-rss": ("Load RSS", "bytes"),
                   "run-peak-rss": ("Run peak RSS", "bytes"), "gpu-peak-memory": ("GPU peak memory", "bytes")}


@dataclass(frozen=True)
class Export:
    """The BMF object of some runs, the testbed (kind id) and commit they share, what was left out."""

    bmf: dict[str, dict[str, dict[str, float]]]
    testbed: str
    commit: str | None
    branch: str | None
    skipped_kinds: dict[str, int]


def _figure(record: Record, name: str) -> float | None:
    value = getattr(record, name, None)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def record_metrics(record: Record) -> dict[str, dict[str, float]]:
    """One record's BMF measures; empty when its kind is not exported or nothing was measured."""
    metrics: dict[str, dict[str, float]] = {}
    for measure in MEASURES.get(type(record).kind, ()):
        value = _figure(record, measure.field)
        if value is None:
            continue
        metric = {"value": value * measure.scale}
        ci = _figure(record, "median_ci_rel") if measure.field == "p50_s" else None
        if ci is not None:
            metric["lower_value"] = value * (1 - ci) * measure.scale
            metric["upper_value"] = value * (1 + ci) * measure.scale
        metrics[measure.slug] = metric
    return metrics


def _check_whole(path: Path, data: dict[str, Any], allow_incomplete: bool) -> None:
    """A merged run must be complete, and a shard of a split run is only part of one: Bencher would
    read the cases it lacks as simply absent."""
    if allow_incomplete:
        return
    try:
        if RUN_KEY in data:
            run = RunRecord.from_json(data[RUN_KEY])
            if not run.complete:
                raise BencherExportError(
                    f"{path}: an incomplete run (shards missing {list(run.shards_missing)}, "
                    f"{len(run.cases_missing)} cases missing); pass --allow-incomplete to export what it has")
            return
        shard = read_shard(data)
    except (HistoryLayoutError, ShardRecordError) as exc:
        raise BencherExportError(f"{path}: {exc}") from None
    if shard is not None and shard.splits > 1:
        raise BencherExportError(
            f"{path}: shard {shard.group} of {shard.splits} of a split run; merge the shards first "
            "(infermatrix merge SHARD.json... --into HISTORY) and export the merged run")


def export_runs(paths: list[Path], allow_incomplete: bool = False) -> Export:
    """The BMF of one or more runs of one hardware kind and one commit (say a merged matrix run and
    a scenarios run of the same commit); a case twice across them is refused."""
    if not paths:
        raise BencherExportError("no run files given")
    bmf: dict[str, dict[str, dict[str, float]]] = {}
    origin: dict[str, Path] = {}
    kinds: dict[str, Path] = {}
    commits: dict[str | None, Path] = {}
    branch = None
    skipped: dict[str, int] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise BencherExportError(f"{path}: not a readable JSON run ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            raise BencherExportError(f"{path}: not a pytest-benchmark run (no 'benchmarks' list)")
        _check_whole(path, data, allow_incomplete)
        try:
            kinds.setdefault(kind_of(data.get("machine_info") or {}).id, path)
        except KindError as exc:
            raise BencherExportError(f"{path}: its hardware kind cannot be read ({exc})") from None
        commit_info = data.get("commit_info") or {}
        commits.setdefault(commit_info.get("id"), path)
        branch = branch or commit_info.get("branch")
        for bench in data["benchmarks"]:
            try:
                record = read_record(bench.get("extra_info") or {}, bench.get("name", ""))
            except SchemaError as exc:
                raise BencherExportError(f"{path}: benchmark {bench.get('name')!r}: {exc}") from None
            metrics = record_metrics(record)
            if not metrics:
                skipped[type(record).kind] = skipped.get(type(record).kind, 0) + 1
                continue
            name = f"{type(record).kind}/{record.label()}"
            if name in bmf:
                raise BencherExportError(f"{name} is in {origin[name]} and in {path}: a case is one benchmark "
                                         "of a Bencher report, so export one run per report")
            bmf[name], origin[name] = metrics, path
    if len(kinds) > 1:
        raise BencherExportError("runs of different hardware kinds cannot be one Bencher testbed: "
                                 + ", ".join(f"{k} ({p})" for k, p in kinds.items()) + "; export each kind apart")
    if len(commits) > 1:
        raise BencherExportError("runs of different commits cannot be one Bencher report: "
                                 + ", ".join(f"{c or 'no commit'} ({p})" for c, p in commits.items()))
    return Export(bmf=bmf, testbed=next(iter(kinds)), commit=next(iter(commits)), branch=branch, skipped_kinds=skipped)


def write_bmf(export: Export, out: Path) -> Path:
    """bmf.json written whole or not at all (a temporary file in the same folder, then renamed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(export.bmf, f, indent=1, sort_keys=True)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def bencher_command(export: Export, out: Path, project: str | None = None, branch: str | None = None) -> str:
    """The `bencher run` that uploads the file: the kind as testbed, the run's commit as the hash
    (not the checkout's HEAD), errors on an alert. The API token comes from BENCHER_API_TOKEN."""
    words = ["bencher", "run", "--project", shlex.quote(project) if project else '"$BENCHER_PROJECT"']
    if branch or export.branch:
        words += ["--branch", shlex.quote(branch or export.branch)]
    if export.commit:
        words += ["--hash", shlex.quote(export.commit)]
    words += ["--testbed", export.testbed, "--adapter", "json", "--file", shlex.quote(str(out)), "--err"]
    return " ".join(words)
