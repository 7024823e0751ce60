"""The data one hardware kind's part of the page draws, as plain JSON-ready dicts.

Every figure comes from the kind's own runs (core/history_layout.py), never from another kind's.
A speedup divides a case's p50 by its own reference's p50 **from the same run file**
(reports/history.py ``latest_per_machine``: the reference the record names, never one borrowed from
another run; none in that run: no speedup). Incomplete runs are listed, marked and linked, but are
never a point of a trend nor a cell of the heat map: a run that lacks cases is not read as "no
change". Trends and change points are reports/history_gate.py's, so the page and
``infermatrix watch`` say the same thing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from infermatrix.core import history_layout as layout
from infermatrix.core.schema import PRECISIONS

from ..history import MEMORY_FIELDS, latest_per_machine, load_frame, number
from ..history_gate import analyse_history
from ..int8_schemes import load_checks

#: energy per inference and mean power, where the run recorded them (NVML on CUDA runs)
ENERGY_FIELDS = ("energy_j_per_inference", "avg_power_w")
RUNS_FOLDER = "runs"


def run_link(kind_id: str, name: str) -> str:
    """Where a run file's copy lies in the site, relative to index.html."""
    return f"{RUNS_FOLDER}/{layout.check_kind_id(kind_id)}/{name}"


def _text(x: Any) -> str | None:
    return x if isinstance(x, str) and x else None


def run_list(history: Path, kind_id: str) -> tuple[list[dict[str, Any]], list[layout.RunEntry]]:
    """Every run of the kind, oldest first, complete or not, with what an incomplete one lacks."""
    entries = layout.runs(history, kind_id, include_incomplete=True)
    listed = []
    for entry in entries:
        data = layout.load_run(entry)
        block = data.get(layout.RUN_KEY)
        block = block if isinstance(block, dict) else {}
        listed.append({
            "benchmarks": len(data["benchmarks"]), "name": entry.path.name, "file": run_link(kind_id, entry.path.name),
            "datetime": entry.datetime.strftime("%Y-%m-%d %H:%M:%SZ"), "commit": entry.commit,
            "complete": entry.complete,
            "shards_missing": [int(s) for s in block.get("shards_missing") or []],
            "cases_missing": [str(c) for c in block.get("cases_missing") or []],
        })
    return listed, entries


def _precision_order(label: str) -> tuple[int, str]:
    base = label.split("-", 1)[0]
    return (PRECISIONS.index(base) if base in PRECISIONS else len(PRECISIONS), label)


def heatmap(latest: pd.DataFrame, checks: pd.DataFrame, run_index: dict[str, int]) -> dict[str, Any]:
    """Rows model × batch × device, columns engine × precision; each cell the case's newest state:
    its timed p50 and speedup from that run, or an equivalence check that failed and so was not
    timed (a newer failed check is shown over an older timing)."""
    cells: dict[str, dict[str, Any]] = {}
    for _, r in latest.iterrows():
        p50, base = number(r["p50_s"]), number(r["baseline_p50_s"])
        cells[r["case"]] = {
            "case": r["case"], "model": r["model"], "engine": r["engine"], "precision": r["precision"],
            "batch_size": int(r["batch_size"]), "device": r["device"], "run": run_index[r["path"]],
            "p50_s": p50, "baseline_p50_s": base,
            "speedup": base / p50 if p50 and base is not None else None,
            "baseline": " ".join(str(r[k]) for k in ("baseline_engine", "baseline_precision", "baseline_device"))
            if _text(r["baseline_engine"]) else None,
            "equivalence": _text(r["equivalence"]), "noisy": _text(r["interference"]),
        }
    if not checks.empty:
        newest = checks.assign(run=checks["path"].map(run_index)).sort_values("run", kind="stable").groupby("id").tail(1)
        for _, c in newest.iterrows():
            timed = cells.get(c["id"])
            if c["equivalence"] == "pass" or (timed is not None and timed["run"] >= c["run"]):
                continue
            precision = f"int8-{c['int8_scheme']}" if c["precision"] == "int8" and _text(c.get("int8_scheme")) \
                else c["precision"]
            cells[c["id"]] = {"case": c["id"], "model": c["model"], "engine": c["engine"], "precision": precision,
                              "batch_size": int(c["batch_size"]), "device": c["device"], "run": int(c["run"]),
                              "p50_s": None, "baseline_p50_s": None, "speedup": None, "baseline": _text(c.get("reference")),
                              "equivalence": _text(c["equivalence"]), "noisy": None}
    rows = sorted({(c["model"], c["batch_size"], c["device"]) for c in cells.values()})
    cols = sorted({(c["engine"], c["precision"]) for c in cells.values()},
                  key=lambda ec: (ec[0], *_precision_order(ec[1])))
    for c in cells.values():
        c["row"] = rows.index((c["model"], c["batch_size"], c["device"]))
        c["col"] = cols.index((c["engine"], c["precision"]))
    return {"rows": [{"model": m, "batch_size": b, "device": d, "label": f"{m} · bs{b} · {d}"} for m, b, d in rows],
            "columns": [{"engine": e, "precision": p, "label": f"{e} {p}"} for e, p in cols],
            "cells": sorted(cells.values(), key=lambda c: (c["row"], c["col"]))}


def memory_rows(latest: pd.DataFrame, run_index: dict[str, int]) -> tuple[list[str], list[dict[str, Any]]]:
    """The memory and energy figures each case's newest run recorded; only the fields some case has."""
    def figure(r: pd.Series, f: str) -> float | None:
        # the frame has a column per memory field; energy rides in the record's other figures
        return number(r[f] if f in r else (r["extra"] or {}).get(f))

    fields = [f for f in (*MEMORY_FIELDS, *ENERGY_FIELDS) if any(figure(r, f) is not None for _, r in latest.iterrows())]
    rows = []
    for _, r in latest.sort_values("case").iterrows():
        values = {f: figure(r, f) for f in fields}
        if any(v is not None for v in values.values()):
            rows.append({"case": r["case"], "run": run_index[r["path"]], **values})
    return fields, rows


def int8_groups(latest: pd.DataFrame, checks: pd.DataFrame, run_index: dict[str, int]) -> list[dict[str, Any]]:
    """Per model, every int8 scheme's newest check side by side (failed ones too: they are not
    timed) with its p50 and speedup where that same run timed it (reports/int8_schemes.py's rule)."""
    if checks.empty or "precision" not in checks:
        return []
    int8 = checks[checks["precision"] == "int8"]
    if int8.empty:
        return []
    newest = (int8.assign(run=int8["path"].map(run_index)).sort_values("run", kind="stable")
              .groupby(["model", "engine", "int8_scheme", "batch_size", "device"]).tail(1))
    timed = {(r["path"], r["case"]): r for _, r in latest.iterrows()}
    groups = []
    for model, group in newest.groupby("model", sort=True):
        rows = []
        for _, c in group.sort_values(["batch_size", "device", "engine", "int8_scheme"]).iterrows():
            t = timed.get((c["path"], c["id"]))
            p50 = number(t["p50_s"]) if t is not None else None
            base = number(t["baseline_p50_s"]) if t is not None else None
            rows.append({"case": c["id"], "engine": c["engine"], "scheme": c["int8_scheme"],
                         "batch_size": int(c["batch_size"]), "device": c["device"], "run": int(c["run"]),
                         "recipe": _text(c.get("int8_recipe")), "equivalence": _text(c["equivalence"]),
                         "cosine_min": number(c.get("cosine_min")), "sqnr_db_min": number(c.get("sqnr_db_min")),
                         "top1_min": number(c.get("top1_min")), "p50_s": p50,
                         "speedup": base / p50 if p50 and base is not None else None})
        groups.append({"model": model, "rows": rows})
    return groups


def trends(history: Path, kind_id: str, run_index: dict[str, int]) -> list[dict[str, Any]]:
    """Each case's series and change points, as the history gate found them (complete runs only)."""
    out = []
    for trend in analyse_history(history, kind_id):
        if trend.kind_id != kind_id:
            raise ValueError(f"history gate returned kind {trend.kind_id!r} when asked for {kind_id!r}")
        out.append({
            "case": trend.case, "band_rel": number(trend.band_rel),
            "points": [{"run": run_index[str(p.run_path)], "p50_s": number(p.p50_s), "p90_s": number(p.p90_s),
                        "p99_s": number(p.p99_s), "noisy": bool(p.noisy)} for p in trend.points],
            "change_points": [{"index": cp.index, "commit": cp.commit, "before_s": number(cp.before_s),
                               "after_s": number(cp.after_s), "change_rel": number(cp.change_rel),
                               "band_rel": number(cp.band_rel), "regression": bool(cp.regression)}
                              for cp in trend.change_points],
        })
    return sorted(out, key=lambda t: t["case"])


def kind_data(history: Path, kind_id: str) -> dict[str, Any]:
    """One hardware kind's whole part of the page."""
    listed, entries = run_list(history, kind_id)
    run_index = {str(e.path): i for i, e in enumerate(entries)}
    # a complete run whose every case failed or was skipped holds no benchmark: nothing to draw
    complete = [e.path for e, r in zip(entries, listed) if e.complete and r["benchmarks"]]
    frame = load_frame(complete) if complete else pd.DataFrame()
    latency = pd.DataFrame()
    if not frame.empty:
        # one kind's folder is one machine: the series key is the kind, whatever finer id older runs wrote
        latency = latest_per_machine(frame.assign(machine=kind_id))
        latency = latency[latency["is_latency"]]
    checks = load_checks(complete) if complete else pd.DataFrame()
    fields, memory = memory_rows(latency, run_index) if not latency.empty else ([], [])
    return {
        "id": kind_id, "label": layout.kind_label(history, kind_id), "runs": listed,
        "heatmap": heatmap(latency if not latency.empty else pd.DataFrame(columns=["case"]), checks, run_index),
        "trends": trends(history, kind_id, run_index),
        "memory_fields": fields, "memory": memory,
        "int8": int8_groups(latency, checks, run_index) if not latency.empty else [],
    }
