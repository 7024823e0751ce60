"""Load saved pytest-benchmark runs (a storage dir, single JSON files, many machines)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from infermatrix.core import history_layout
from infermatrix.core.hardware_kind import KindError, kind_of
from infermatrix.core.schema import Record, SchemaError, read_record

#: the case columns of a frame (core/schema.py's case key; the scheme rides in the precision label)
CASE_COLUMNS = ("model", "engine", "precision", "batch_size", "device")
MEMORY_FIELDS = ("load_rss_bytes", "run_peak_rss_bytes", "gpu_peak_bytes")


def number(x) -> float | None:
    """A recorded figure as a float, or None where the run has none (null, NaN, missing)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class InputError(Exception):
    """A run that cannot be read or used; the CLI turns it into exit code 2."""


@dataclass(frozen=True)
class Run:
    path: Path
    datetime: str
    machine: str               # the hardware kind's id: a series never joins two kinds (core/hardware_kind.py)
    hardware: str              # the kind's hardware alone (CPU, CPUs, flags, GPU): what the compare gate matches
    data: dict[str, Any]


def run_files(paths: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
        if p.is_dir() and history_layout.kinds(p):
            # a history kept per hardware kind (infermatrix merge): its complete runs; kind.json and
            # an incomplete run are never read as a point
            found = [e.path for kind in history_layout.kinds(p) for e in history_layout.runs(p, kind)]
            if not found:
                raise InputError(f"{p}: a history with no complete run (kinds: {', '.join(history_layout.kinds(p))})")
            files += found
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*.json") if f.is_file())
            if not found:
                raise InputError(f"{p}: no saved runs (*.json) under this directory")
            files += found
        else:
            files.append(p)
    return files


def load_run(path: Path) -> Run:
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}): not a saved run") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (truncated or malformed?): {exc}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise InputError(f"{path}: not a pytest-benchmark run (no 'benchmarks' list)")
    if not isinstance(data.get("machine_info", {}), dict):
        raise InputError(f"{path}: machine_info is a {type(data['machine_info']).__name__}; expected an object")
    try:  # the kind the run recorded, or derived from an older run's machine_info
        kind = kind_of(data.get("machine_info") or {})
    except (KindError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: machine_info: {exc}") from None
    return Run(path, str(data.get("datetime", "")), kind.id, kind.hardware, data)


def read(path: Path, bench: Any) -> Record:
    """One benchmark's typed record (core/schema.py), or InputError naming the file and the field."""
    if not isinstance(bench, dict):
        raise InputError(f"{path}: a benchmark is a {type(bench).__name__}, not an object")
    name = str(bench.get("name") or bench.get("fullname") or "?")
    try:
        return read_record(bench.get("extra_info") or {}, name)
    except (SchemaError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: benchmark {name!r}: {exc}") from None


def load_frame(paths: list[str | Path]) -> pd.DataFrame:
    """One row per (run, benchmark); ``samples`` holds the raw per-round seconds or None."""
    rows = []
    for path in run_files(paths):
        run = load_run(path)
        for bench in run.data["benchmarks"]:
            record = read(path, bench)
            info, stats = record.to_extra_info(), bench.get("stats") or {}
            if not isinstance(stats, dict) or number(stats.get("median")) is None:
                raise InputError(f"{path}: benchmark {bench.get('name')!r}: stats.median is "
                                 f"{stats.get('median') if isinstance(stats, dict) else stats!r}; expected a number")
            case, ref = record.case, record.reference
            rows.append({
                "run": path.name, "path": str(path), "datetime": run.datetime, "machine": run.machine,
                "hardware": run.hardware,
                "case": record.label(), "name": bench.get("name"), "group": bench.get("group"),
                "kind": record.kind, "is_latency": record.kind == "latency",
                "loadgen_scenario": info.get("loadgen_scenario"),
                "model": case.model, "engine": case.engine, "batch_size": case.batch_size, "device": case.device,
                # int8 cases carry their scheme in the label (int8-dynamic, int8-static_per_channel):
                # schemes are distinct cases, side by side in every chart and table
                "precision": case.precision_label, "int8_scheme": case.scheme,
                # the reference the run wrote (eager fp32, or ONNX Runtime fp32 for an onnx: file)
                "baseline_engine": ref.engine if ref else None, "baseline_precision": ref.precision if ref else None,
                "baseline_device": ref.device if ref else None,
                "median_s": number(stats["median"]), "mean_s": number(stats.get("mean")), "rounds": stats.get("rounds"),
                # the median is p50; a p90/p99 the run did not record stays missing (a run
                # records null below 100 samples): the max of 40 rounds is no p99
                "p50_s": number(stats["median"]) if info.get("p50_s") is None else number(info["p50_s"]),
                "p90_s": info.get("p90_s"), "p99_s": info.get("p99_s"),
                "notes": info.get("percentile_notes") or {},
                "throughput": info.get("throughput_items_per_s"),
                # per engine, measured in isolation (runner/memory.py); None in runs saved
                # before it existed or with --no-engine-memory
                **{k: info.get(k) for k in MEMORY_FIELDS},
                "artifact_bytes": info.get("artifact_bytes"), "equivalence": info.get("equivalence"),
                # why the case was measured under host interference (runner/interference.py); None: clean,
                # or a run saved before it was recorded
                "interference": info.get("interference"),
                "samples": stats.get("data"), "scenario": record.kind, "extra": info,
            })
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise InputError(f"no benchmarks in {', '.join(map(str, paths))}")
    frame = frame.sort_values(["datetime", "run", "path"], kind="stable").reset_index(drop=True)
    frame["run_seq"] = pd.factorize(frame["path"])[0]  # 0 = oldest run file
    return frame


def latest_per_case(frame: pd.DataFrame) -> pd.DataFrame:
    """The most recent row for each case (runs ordered by their datetime)."""
    return frame.groupby("case", sort=True).tail(1).set_index("case")


def latest_per_machine(frame: pd.DataFrame) -> pd.DataFrame:
    """For each machine and case the row of the newest run that holds the case, with
    ``baseline_p50_s``: the p50 of the case's own reference (the engine, precision and device its
    record names) at the same model and batch **from that same run file** (NaN when that run has
    none: a speedup is never borrowed from another run)."""
    latest = frame.groupby(["machine", "case"], sort=True).tail(1)
    key = ["path", "model", "batch_size", "engine", "precision", "device"]
    base = frame[frame["is_latency"]].groupby(key)["p50_s"].last()
    wanted = pd.MultiIndex.from_arrays([latest["path"], latest["model"], latest["batch_size"], latest["baseline_engine"],
                                        latest["baseline_precision"], latest["baseline_device"]])
    return latest.assign(baseline_p50_s=base.reindex(wanted).to_numpy(dtype=float)).reset_index(drop=True)


def runs_by_machine(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Each machine's run files (paths), oldest first: what a history trend may compare."""
    return {m: list(dict.fromkeys(sub.sort_values("run_seq")["path"])) for m, sub in frame.groupby("machine")}
