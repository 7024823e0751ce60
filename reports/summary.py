"""The markdown summary: speedups, equivalence status and the best engine per model.

Every row says which run file it comes from; every speedup divides two cases of that one run
(the reference its records name: eager fp32, or ONNX Runtime fp32 for an ONNX file, at the same
model and batch), and a run without that reference shows n/a.
"""
from __future__ import annotations

import pandas as pd

from .charts import speedup_table
from .checks_section import checks_section
from .history import number
from .int8_schemes import notices, scheme_section
from .memory_charts import memory_section
from .time_section import time_section


def _ms(x) -> str:
    return "n/a" if _missing(x) else f"{x * 1e3:.3f} ms"


def _missing(x) -> bool:
    return number(x) is None


def _speedup(x) -> str:
    return "n/a" if _missing(x) else f"{x:.2f}×"


def _p99(row: pd.Series) -> str:
    if not _missing(row["p99_s"]):
        return _ms(row["p99_s"])
    notes = row.get("notes") if isinstance(row.get("notes"), dict) else {}
    return f"n/a ({notes['p99_s']})" if notes.get("p99_s") else "n/a"


def interference(row: pd.Series) -> str | None:
    """Why the case was measured under host interference (runner/interference.py), or None."""
    why = row.get("interference")
    return why if isinstance(why, str) and why else None


def best_engines(table: pd.DataFrame) -> list[pd.Series]:
    """Per model, device and batch: the fastest passing case of the newest run that holds
    that group, so the engines compared were measured side by side. Cases measured under host
    interference are not ranked (a loaded host once made the slowest engine "fastest"); when
    every passing case was, the fastest of them is given and marked. ``noisy_skipped`` counts
    the passing cases left out."""
    out = []
    for _, group in table.groupby(["model", "device", "batch_size"]):
        newest = group[group["run_seq"] == group["run_seq"].max()]
        passing = newest[newest["equivalence"] == "pass"]
        if passing.empty:
            continue
        clean = passing[[interference(r) is None for _, r in passing.iterrows()]]
        ranked = clean if not clean.empty else passing
        best = ranked.loc[ranked["p50_s"].idxmin()].copy()
        best["noisy_skipped"] = len(passing) - len(clean)
        out.append(best)
    return out


def _best_label(best: pd.Series) -> str:
    why = interference(best)
    if why:
        return f"{best['engine']} {best['precision']} ⚠️ measured under host interference ({why})"
    skipped = int(best["noisy_skipped"])
    return f"{best['engine']} {best['precision']}" + (
        f" ({skipped} noisy case(s) not ranked)" if skipped else "")


def _host(row: pd.Series) -> str:
    """The All cases table's host column: noisy with the reason, clean, or n/a (not recorded)."""
    why = interference(row)
    if why:
        return f"⚠️ noisy: {why}"
    extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
    measured = extra.get("host_other_cpu_s") is not None or extra.get("dispersion_iqr_ratio") is not None
    return "clean" if measured else "n/a"


def _share(row: pd.Series) -> str:
    """The case's share of this machine's GEMM peak for its precision (runner/peak.py), or why not."""
    extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
    share, why = number(extra.get("share_of_peak")), extra.get("share_of_peak_reason")
    if share is not None:
        return f"{share:.1%}"
    return f"n/a ({why.split(':')[0]})" if isinstance(why, str) and why else "n/a"


def _peaks(table: pd.DataFrame) -> list[str]:
    """One line: the calibrated peaks the machine's cases were compared to."""
    seen: dict[tuple, str] = {}
    for _, row in table.iterrows():
        extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
        peak, method = number(extra.get("peak_gflops_per_s")), extra.get("peak_method")
        if peak is not None and isinstance(method, str):
            unit = "GOP/s" if str(row["precision"]).startswith("int8") else "GFLOP/s"
            seen.setdefault((row["device"], method), f"{row['device']} {peak:.1f} {unit} ({method})")
    if not seen:
        return []
    return ["", "Calibrated GEMM peaks (a case's share of peak is its GFLOP/s over the peak of its precision; "
            "int8 in GOP/s): " + "; ".join(seen[k] for k in sorted(seen)) + "."]


def _machine_section(table: pd.DataFrame) -> list[str]:
    lines = ["| run | datetime | cases |", "|---|---|---:|"]
    for (run, when), sub in table.groupby(["run", "datetime"], sort=False):
        lines.append(f"| `{run}` | {when} | {len(sub)} |")
    lines += _peaks(table)
    lines += ["", "### Best engine per model", "",
              "| model | device | batch | best (passing equivalence) | p50 | speedup vs reference | share of peak | run |",
              "|---|---|---:|---|---:|---:|---:|---|"]
    for best in best_engines(table):
        lines.append(f"| {best['model']} | {best['device']} | {best['batch_size']} | {_best_label(best)} "
                     f"| {_ms(best['p50_s'])} | {_speedup(best['speedup'])} | {_share(best)} | `{best['run']}` |")
    lines += ["", "### All cases", "",
              "| case | p50 | p99 | throughput | speedup | share of peak | equivalence | run | host |",
              "|---|---:|---:|---:|---:|---:|---|---|---|"]
    for _, row in table.sort_values(["model", "device", "batch_size", "engine", "precision"]).iterrows():
        tput = "n/a" if _missing(row["throughput"]) else f"{row['throughput']:.1f}/s"
        lines.append(f"| {row['case']} | {_ms(row['p50_s'])} | {_p99(row)} | {tput} | {_speedup(row['speedup'])} | "
                     f"{_share(row)} | {row['equivalence']} | `{row['run']}` | {_host(row)} |")
    return lines


def summary_markdown(latest: pd.DataFrame, runs_read: int, charts: list[str],
                     checks: pd.DataFrame | None = None, times: list | None = None) -> str:
    """``latest`` from ``history.latest_per_machine``: per machine, each case's newest run;
    ``times`` from ``time_section.load_times``: where each run's time went."""
    table = speedup_table(latest).sort_values("run_seq", kind="stable")
    lines = ["# infermatrix summary", "",
             f"Runs read: {runs_read}. Per machine, each case comes from the newest run that holds it; "
             "its speedup divides its reference's p50 (eager fp32; ONNX Runtime fp32 for an ONNX file) "
             "**from that same run** by its own (n/a when that run "
             "has no reference case at the same model and batch). A p99 needs at least 100 samples. "
             "A case measured under host interference (other processes' CPU time, steal, or rounds too "
             "dispersed: the host column) is not ranked as a best engine.", ""]
    for machine, sub in table.groupby("machine", sort=True):
        lines += [f"## Machine: {machine}", ""] + _machine_section(sub) + [""]
    lines += scheme_section(table, checks if checks is not None else pd.DataFrame())
    lines += checks_section(checks if checks is not None else pd.DataFrame())
    lines += memory_section(latest)
    lines += time_section(times or [])
    lines += notices(latest)
    lines += ["## Charts", ""] + [f"![{c}]({c})" for c in charts]
    return "\n".join(lines) + "\n"
