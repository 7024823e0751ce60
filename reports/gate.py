"""The statistical regression gate (DESIGN.md section 6).

A case regresses only when its slowdown is both significant (one-sided Mann-Whitney U on
the raw per-round samples, p < alpha) and larger than the metric's threshold. Without raw
samples (runs saved without --benchmark-save-data) the gate falls back to the thresholds
alone and says so. A threshold is applied only to a metric both sides recorded: a p99 is
null below 100 samples, and then the case's row says "p99 not gated" and why.

A case measured under host interference on either side (its record's ``interference``, from
runner/interference.py: other processes' CPU, steal, or rounds too dispersed) gets no verdict:
it is "noisy", with the reason and what the figures alone would have said, and never fails the
gate; a loaded host's +41079 % is the host, not the engine.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
from scipy.stats import mannwhitneyu

from .history import InputError, number

METRICS = ("median", "p99", "throughput")
DEFAULT_THRESHOLDS = {"median": 0.10}
VERDICTS = ("slower", "faster", "noisy", "unchanged", "new", "missing")
_THRESHOLD = re.compile(r"^\s*(median|p99|throughput)\s*=\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


def parse_thresholds(text: str) -> dict[str, float]:
    """``median=10%,p99=15%`` -> {"median": 0.10, "p99": 0.15}; decimals allowed."""
    out: dict[str, float] = {}
    for part in text.split(","):
        m = _THRESHOLD.match(part)
        if not m:
            raise InputError(f"threshold {part.strip()!r} does not parse; expected METRIC=N% with METRIC in "
                             f"{', '.join(METRICS)} (e.g. median=10%,p99=12.5%)")
        out[m.group(1)] = float(m.group(2)) / 100.0
    return out


@dataclass(frozen=True)
class CaseResult:
    case: str
    verdict: str
    base_median: float | None = None
    new_median: float | None = None
    change: dict[str, float] | None = None     # metric -> relative change (+ = worse)
    p_slower: float | None = None
    p_faster: float | None = None
    reasons: tuple[str, ...] = ()
    tested: bool = False                        # False: threshold-only (no raw samples)
    notes: tuple[str, ...] = ()                 # thresholds not applied, and why
    interference: str | None = None             # "noisy": why (either side's host interference)


def _relative_changes(base: pd.Series, new: pd.Series) -> dict[str, float]:
    """Relative change per metric, oriented so that positive means worse."""
    out = {"median": new["median_s"] / base["median_s"] - 1.0}
    if _num(base["p99_s"]) and _num(new["p99_s"]):
        out["p99"] = new["p99_s"] / base["p99_s"] - 1.0
    if _num(base["throughput"]) and _num(new["throughput"]):
        out["throughput"] = base["throughput"] / new["throughput"] - 1.0
    return out


def _num(x) -> bool:
    """A positive figure both sides can be compared on."""
    v = number(x)
    return v is not None and v > 0


_COLUMN = {"median": "median_s", "p99": "p99_s", "throughput": "throughput"}


def _not_gated(metric: str, base: pd.Series, new: pd.Series) -> str:
    """Why a threshold was not applied: a side lacks the metric (a p99 needs 100 samples)."""
    col = _COLUMN[metric]
    why = []
    for side, row in (("base", base), ("new", new)):
        if not _num(row.get(col)):
            note = (row.get("notes") or {}).get(col) if isinstance(row.get("notes"), dict) else None
            why.append(f"{side} has no {metric} ({note or 'not recorded'})")
    return f"{metric} not gated: {'; '.join(why)}"


def interference(base: pd.Series, new: pd.Series) -> str | None:
    """Either side's recorded host interference, named by side; None when both ran clean (or
    were saved before it was recorded)."""
    why = [f"{side}: {row.get('interference')}" for side, row in (("base", base), ("new", new))
           if isinstance(row.get("interference"), str) and row.get("interference")]
    return "; ".join(why) or None


def compare_case(case: str, base: pd.Series, new: pd.Series, thresholds: dict[str, float],
                 alpha: float) -> CaseResult:
    change = _relative_changes(base, new)
    a, b = base["samples"], new["samples"]
    tested = isinstance(a, list) and isinstance(b, list) and len(a) >= 3 and len(b) >= 3
    p_slower = p_faster = None
    if tested:
        p_slower = float(mannwhitneyu(b, a, alternative="greater").pvalue)
        p_faster = float(mannwhitneyu(b, a, alternative="less").pvalue)
    slower = [f"{m} +{change[m]:.1%} > {t:.1%}" for m, t in thresholds.items()
              if m in change and change[m] > t and (not tested or p_slower < alpha)]
    faster = [f"{m} {change[m]:.1%}" for m, t in thresholds.items()
              if m in change and change[m] < -t and (not tested or p_faster < alpha)]
    verdict = "slower" if slower else "faster" if faster else "unchanged"
    notes = tuple(_not_gated(m, base, new) for m in thresholds if m not in change)
    reasons = tuple(slower or faster)
    noise = interference(base, new)
    if noise:  # no verdict on a host's noise: say what the figures alone would have said
        reasons = (f"figures alone: {verdict}" + (f" ({'; '.join(reasons)})" if reasons else ""),)
        verdict = "noisy"
    return CaseResult(case, verdict, float(base["median_s"]), float(new["median_s"]), change,
                      p_slower, p_faster, reasons, tested, notes, noise)


def compare_frames(base: pd.DataFrame, new: pd.DataFrame, thresholds: dict[str, float],
                   alpha: float) -> list[CaseResult]:
    """Every case of either side classified; ``base``/``new`` are indexed by case."""
    if not 0.0 < alpha < 1.0:
        raise InputError(f"--alpha {alpha}: expected a probability in (0, 1)")
    results = []
    for case in sorted(set(base.index) | set(new.index)):
        if case not in base.index:
            results.append(CaseResult(case, "new", new_median=float(new.loc[case, "median_s"])))
        elif case not in new.index:
            results.append(CaseResult(case, "missing", base_median=float(base.loc[case, "median_s"])))
        else:
            results.append(compare_case(case, base.loc[case], new.loc[case], thresholds, alpha))
    return results


def to_markdown(results: list[CaseResult], thresholds: dict[str, float], alpha: float,
                base_name: str, new_name: str) -> str:
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    icon = {"slower": "🔴 slower", "faster": "🟢 faster", "unchanged": "unchanged", "new": "new", "missing": "missing"}
    lines = [f"### infermatrix compare: `{base_name}` → `{new_name}`", "",
             f"Gate: Mann-Whitney U (one-sided, alpha={alpha}) on per-round samples **and** thresholds "
             + ", ".join(f"{m} {t:.1%}" for m, t in thresholds.items()) + ".", "",
             " · ".join(f"{counts[v]} {v}" for v in VERDICTS), "",
             *(["**Noisy**: measured under host interference in either run (other processes' CPU time, steal, "
                "or rounds too dispersed); no verdict and no failure of the gate. Rerun on a quiet host.", ""]
               if counts["noisy"] else []),
             "| case | verdict | base median | new median | Δ median | Δ p99 | p (slower) | why |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    order = {v: i for i, v in enumerate(VERDICTS)}
    for r in sorted(results, key=lambda r: (order[r.verdict], r.case)):
        ch = r.change or {}
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r.case, _noisy(r) if r.verdict == "noisy" else icon[r.verdict], _ms(r.base_median), _ms(r.new_median),
            f"{ch['median']:+.1%}" if "median" in ch else "",
            f"{ch['p99']:+.1%}" if "p99" in ch else ("n/a" if r.change else ""),
            f"{r.p_slower:.2g}" if r.p_slower is not None else ("n/a (no samples)" if r.change else ""),
            "; ".join((*r.reasons, *r.notes))))
    return "\n".join(lines) + "\n"


def _noisy(r: CaseResult) -> str:
    # a saved reason is text from a file: a "|" in it would split the table's row
    return f"⚠️ noisy (host interference: {str(r.interference).replace('|', '/')})"


def _ms(x: float | None) -> str:
    return "" if x is None else f"{x * 1e3:.3f} ms"
