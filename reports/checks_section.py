"""The summary's equivalence section: every failed check, and every case judged by something other
than the policy's own row (a tolerance override, or a degenerate reference's rule).

A failed case is never timed, so the tables of timed cases cannot show it; its check is saved
with the run (``infermatrix_equivalence``) and listed here with its failures. Reads JSON only.
"""
from __future__ import annotations

import pandas as pd

from .history import number


def _fmt(x, spec: str) -> str:
    v = number(x)
    return "n/a" if v is None else f"{v:{spec}}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _newest(checks: pd.DataFrame) -> pd.DataFrame:
    """Per machine, each checked case from the newest run that checked it."""
    return checks.sort_values(["datetime", "path"], kind="stable").groupby(["machine", "id"]).tail(1)


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def checks_section(checks: pd.DataFrame) -> list[str]:
    """Markdown lines; empty when no check failed and none was judged by an override or rule."""
    if checks is None or checks.empty or "equivalence" not in checks:
        return []
    newest = _newest(checks).sort_values(["machine", "id"])
    failed = newest[newest["equivalence"] != "pass"]
    overrides = newest[[_text(v) is not None for v in newest.get("tolerance_override", pd.Series(index=newest.index))]]
    degenerate = newest[[isinstance(v, dict) and bool(v) for v in
                         newest.get("degenerate_outputs", pd.Series(index=newest.index))]]
    lines: list[str] = []
    if not failed.empty:
        lines += ["## Failed equivalence checks", "",
                  "Not timed: each case's outputs missed its policy row against the reference on the same inputs.", "",
                  "| machine | case | row | cosine | SQNR | failures |", "|---|---|---|---:|---:|---|"]
        for _, c in failed.iterrows():
            failures = "; ".join(c["failures"]) if isinstance(c.get("failures"), list) else ""
            lines.append(f"| {c['machine']} | {c['id']} | {c['equivalence_row']} | {_fmt(c['cosine_min'], '.7f')} | "
                         f"{_fmt(c['sqnr_db_min'], '.1f')} | {_cell(failures)} |")
        lines.append("")
    if not overrides.empty:
        lines += ["## Cases judged by a tolerance override", "",
                  "Not the policy's own row (DESIGN.md section 4): the row's numbers and the override's reason.", "",
                  "| machine | case | verdict | row | cosine >= | SQNR >= | atol | reason |",
                  "|---|---|---|---|---:|---:|---:|---|"]
        for _, c in overrides.iterrows():
            tol = c.get("tolerance") if isinstance(c.get("tolerance"), dict) else {}
            lines.append(f"| {c['machine']} | {c['id']} | {c['equivalence']} | {c['equivalence_row']} | "
                         f"{tol.get('min_cosine', 'n/a')} | {tol.get('min_sqnr_db') or 'n/a'} | "
                         f"{tol.get('atol') if tol.get('atol') is not None else 'none'} | "
                         f"{_cell(c['tolerance_override'])} |")
        lines.append("")
    if not degenerate.empty:
        lines += ["## Outputs with a degenerate reference", "",
                  "Near zero or near constant: cosine and SQNR cannot judge them, so the rule of DESIGN.md "
                  "section 4 did.", "", "| machine | case | verdict | output: rule |", "|---|---|---|---|"]
        for _, c in degenerate.iterrows():
            rules = "; ".join(f"{k}: {v}" for k, v in sorted(c["degenerate_outputs"].items()))
            lines.append(f"| {c['machine']} | {c['id']} | {c['equivalence']} | {_cell(rules)} |")
        lines.append("")
    return lines
