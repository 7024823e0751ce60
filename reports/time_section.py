"""The summary's account of each run's own time: where its wall time went.

A run saves its account beside pytest-benchmark's fields (``infermatrix_time``, written by the
plugin from runner/time_ledger.py): the wall time, each phase's seconds and share (builds,
equivalence, timed rounds, memory ... and the harness, what the phases leave), and the timed
rounds' share. This section shows it for the newest run of each machine that saved one.
Reads JSON only.
"""
from __future__ import annotations

from typing import Any

from .history import load_run, number, run_files

KEY = "infermatrix_time"


def load_times(paths: list) -> list[dict[str, Any]]:
    """Each run's saved account with the run's name, machine and datetime; runs without one
    (saved before it existed) are left out."""
    out = []
    for path in run_files(paths):
        run = load_run(path)
        account = run.data.get(KEY)
        if isinstance(account, dict) and isinstance(account.get("phases"), list):
            out.append({"run": path.name, "machine": run.machine, "datetime": run.datetime, "account": account})
    return out


def _seconds(x: Any) -> str:
    v = number(x)
    return "n/a" if v is None else f"{v:.1f} s"


def _share(x: Any) -> str:
    v = number(x)
    return "n/a" if v is None else f"{v * 100:.1f} %"


def time_section(times: list[dict[str, Any]]) -> list[str]:
    """Markdown lines; empty when no run saved its account."""
    if not times:
        return []
    newest: dict[str, dict[str, Any]] = {}
    for t in sorted(times, key=lambda t: (t["datetime"], t["run"])):
        newest[t["machine"]] = t
    lines = ["## Where the run's time went", "",
             "Per machine, the newest run that saved its account: each phase's own seconds (a phase inside "
             "another is not counted twice) and its share of the run; the harness is what the phases leave "
             "(pytest, fixtures, records). Under pytest-xdist the shares are of the workers' summed time.", ""]
    for machine, t in sorted(newest.items()):
        account = t["account"]
        workers = account.get("processes") or 1
        spent = f"{_seconds(account.get('wall_s'))} wall" + (
            f", {workers} workers {_seconds(account.get('process_s'))} in all" if workers > 1 else "")
        lines += [f"### {machine}: `{t['run']}` ({spent}; timed rounds {_share(account.get('timed_rounds_share'))} "
                  "of the run)", "", "| phase | seconds | share |", "|---|---:|---:|"]
        for row in account["phases"]:
            if isinstance(row, dict):
                lines.append(f"| {row.get('phase')} | {_seconds(row.get('seconds'))} | {_share(row.get('share'))} |")
        lines.append("")
    return lines
