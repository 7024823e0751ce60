"""Histories for the publish tests: a run's JSON (a real tiny run's, or one constructed by
tests/runs.py) stored as a series of runs of one hardware kind, in core/history_layout.py's layout.

Each stored run is the given run with its timings scaled (a step from a chosen commit on, a small
deterministic wobble), its own time and commit, and its ``infermatrix_run`` record, written through
history_layout.write_run like ``infermatrix merge`` writes it.
"""
from __future__ import annotations

import copy
import hashlib
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from infermatrix.core import history_layout
from infermatrix.core.hardware_kind import HardwareKind
from infermatrix.core.run_record import CaseOutcome, RunRecord

CPU_KIND = HardwareKind(cpu_model="AMD EPYC 7763 64-Core Processor", cpu_flags=("avx2",), cpus=2, gpu_name=None,
                        gpu_count=0, driver=None, cuda=None, libraries=(("onnxruntime", "1.31.1"), ("torch", "2.14.1")))
GPU_KIND = HardwareKind(cpu_model="Intel Xeon Platinum 8480+", cpu_flags=("amx_bf16", "avx512f"), cpus=16,
                        gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, driver="580.65", cuda="13.0",
                        libraries=(("onnxruntime-gpu", "1.31.1"), ("torch", "2.14.1")))
START = datetime(2026, 11, 2, 6, 0, tzinfo=timezone.utc)
#: stats and record fields in seconds: scaled together; throughput scales the other way
_SECONDS_STATS = ("min", "max", "mean", "median", "stddev", "iqr", "q1", "q3", "ld15iqr", "hd15iqr", "total")
_SECONDS_FIELDS = ("p50_s", "p90_s", "p99_s", "mean_s", "min_s")


def commit_of(i: int) -> str:
    return hashlib.sha1(f"commit {i}".encode()).hexdigest()


def scaled(run: dict[str, Any], factor_of) -> dict[str, Any]:
    """A copy of ``run`` whose timings are multiplied by ``factor_of(case label)``."""
    out = copy.deepcopy(run)
    for bench in out["benchmarks"]:
        info, stats = bench.get("extra_info") or {}, bench.get("stats") or {}
        f = factor_of(bench["name"])
        for k in _SECONDS_STATS:
            if isinstance(stats.get(k), (int, float)):
                stats[k] *= f
        if isinstance(stats.get("data"), list):
            stats["data"] = [x * f for x in stats["data"]]
        for k in _SECONDS_FIELDS:
            if isinstance(info.get(k), (int, float)):
                info[k] *= f
        if isinstance(info.get("throughput_items_per_s"), (int, float)):
            info["throughput_items_per_s"] /= f
    return out


def record(kind: HardwareKind, when: datetime, commit: str | None, complete: bool = True,
           cases_missing: tuple[str, ...] = (), outcomes: dict[str, CaseOutcome] | None = None) -> dict[str, Any]:
    return RunRecord(complete=complete and not cases_missing, splits=2 if not complete else 1,
                     shards_present=(1,), shards_missing=(2,) if not complete else (), cases_missing=cases_missing,
                     kind=kind.id, commit=commit, datetime=when.isoformat(),
                     sources=("shard-1.json",), outcomes=outcomes or {}).to_json()


def store(history: Path, kind: HardwareKind, run: dict[str, Any], when: datetime, commit: str | None,
          complete: bool = True, cases_missing: tuple[str, ...] = ()) -> Path:
    data = copy.deepcopy(run)
    data["datetime"] = when.isoformat()
    data["commit_info"] = {"id": commit, "dirty": False}
    data.setdefault("machine_info", {}).setdefault("infermatrix", {})["hardware_kind"] = kind.to_json()
    data[history_layout.RUN_KEY] = record(kind, when, commit, complete, cases_missing)
    return history_layout.write_run(history, kind, data)


def series(history: Path, kind: HardwareKind, run: dict[str, Any], n: int, step_at: int | None = None,
           step_cases: tuple[str, ...] = (), step: float = 1.3, wobble: float = 0.02,
           start: datetime = START) -> list[Path]:
    """``n`` complete runs of ``run``, one a day from ``start`` on its own commit; the cases whose
    benchmark name contains one of ``step_cases`` get ``step`` times slower from run ``step_at`` on."""
    paths = []
    for i in range(n):
        def factor(name: str, i=i) -> float:
            jump = step if step_at is not None and i >= step_at and any(c in name for c in step_cases) else 1.0
            return jump * (1 + wobble * math.sin(1.7 * i + len(name)))
        paths.append(store(history, kind, scaled(run, factor), start + timedelta(days=i), commit_of(i)))
    return paths
