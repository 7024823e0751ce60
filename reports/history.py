"""Load saved pytest-benchmark runs (a storage dir, single JSON files, many machines)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from infermatrix.core.hardware import hardware_id

CASE_FIELDS = ("model", "engine", "precision", "batch_size", "device")
MEMORY_FIELDS = ("load_rss_bytes", "run_peak_rss_bytes", "gpu_peak_bytes")
#: what every speedup divides by (as the runs name it; reports/ reads JSON and imports no engine)
BASELINE = {"engine": "torch", "precision": "fp32"}


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
    machine: str               # hardware fingerprint: CPU model (+ GPU name)
    data: dict[str, Any]


def run_files(paths: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
        if p.is_dir():
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
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (truncated or malformed?): {exc}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise InputError(f"{path}: not a pytest-benchmark run (no 'benchmarks' list)")
    return Run(path, str(data.get("datetime", "")), hardware_id(data.get("machine_info") or {}), data)


def is_latency(bench: dict[str, Any]) -> bool:
    """A matrix latency benchmark (test_latency) carrying every case field."""
    info = bench.get("extra_info") or {}
    return str(bench.get("name", "")).startswith("test_latency[") and all(k in info for k in CASE_FIELDS)


def case_id(bench: dict[str, Any]) -> str:
    """``resnet50-onnxruntime-int8-bs8-cpu`` for latency benchmarks, else the test's fullname."""
    info = bench.get("extra_info") or {}
    if is_latency(bench):
        scheme = f"-{info['int8_scheme']}" if info.get("int8_scheme") and info["precision"] == "int8" else ""
        return "{model}-{engine}-{precision}{scheme}-bs{batch_size}-{device}".format(**info, scheme=scheme)
    return str(bench.get("fullname") or bench.get("name"))


def load_frame(paths: list[str | Path]) -> pd.DataFrame:
    """One row per (run, benchmark); ``samples`` holds the raw per-round seconds or None."""
    rows = []
    for path in run_files(paths):
        run = load_run(path)
        for bench in run.data["benchmarks"]:
            stats, info = bench.get("stats") or {}, bench.get("extra_info") or {}
            if "median" not in stats:
                raise InputError(f"{path}: benchmark {bench.get('name')!r} has no stats.median")
            scheme = info.get("int8_scheme")
            rows.append({
                "run": path.name, "path": str(path), "datetime": run.datetime, "machine": run.machine,
                "case": case_id(bench), "name": bench.get("name"), "group": bench.get("group"),
                "is_latency": is_latency(bench),
                **{k: info.get(k) for k in CASE_FIELDS},
                # int8 cases carry their scheme in the label (int8-dynamic, int8-static_per_channel):
                # schemes are distinct cases, side by side in every chart and table
                "precision": f"{info['precision']}-{scheme}" if scheme and info.get("precision") == "int8"
                else info.get("precision"),
                "int8_scheme": scheme,
                "median_s": stats["median"], "mean_s": stats.get("mean"), "rounds": stats.get("rounds"),
                # the median is p50; a p90/p99 the run did not record stays missing (a run
                # records null below 100 samples): the max of 40 rounds is no p99
                "p50_s": stats["median"] if info.get("p50_s") is None else info["p50_s"],
                "p90_s": info.get("p90_s"), "p99_s": info.get("p99_s"),
                "notes": info.get("percentile_notes") or {},
                "throughput": info.get("throughput_items_per_s"),
                # per engine, measured in isolation (scenarios/memory.py); None in runs saved
                # before it existed or with --no-engine-memory
                **{k: info.get(k) for k in MEMORY_FIELDS},
                "artifact_bytes": info.get("artifact_bytes"), "equivalence": info.get("equivalence"),
                "samples": stats.get("data"), "scenario": info.get("scenario"), "extra": info,
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
    ``baseline_p50_s``: eager fp32's p50 at the same model, device and batch **from that same
    run file** (NaN when that run has none: a speedup is never borrowed from another run)."""
    latest = frame.groupby(["machine", "case"], sort=True).tail(1)
    base = frame[(frame["engine"] == BASELINE["engine"]) & (frame["precision"] == BASELINE["precision"])]
    base = base.groupby(["path", "model", "device", "batch_size"])["p50_s"].last()
    keys = pd.MultiIndex.from_frame(latest[["path", "model", "device", "batch_size"]])
    return latest.assign(baseline_p50_s=base.reindex(keys).to_numpy(dtype=float)).reset_index(drop=True)


def runs_by_machine(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Each machine's run files (paths), oldest first: what a history trend may compare."""
    return {m: list(dict.fromkeys(sub.sort_values("run_seq")["path"])) for m, sub in frame.groupby("machine")}
