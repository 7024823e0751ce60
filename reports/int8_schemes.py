"""The summary's int8 section: every int8 scheme of a model side by side, and the verdict.

A trained model's int8 quality depends on the recipe. Each run saves every equivalence check it
made, passed or failed (``infermatrix_equivalence``, written by the plugin beside
pytest-benchmark's own fields): a failed scheme is never timed, but its error figures are shown
here. Per machine and model this names the fastest scheme that passes (its p50 and speedup
from one run file) and says so when none does. Reads JSON only.
"""
from __future__ import annotations

import pandas as pd

from .history import number, run_files, load_run

KEY = "infermatrix_equivalence"


def load_checks(paths: list) -> pd.DataFrame:
    """Every saved equivalence check of the runs, one row each, with the run's path and machine."""
    rows = []
    for path in run_files(paths):
        run = load_run(path)
        for record in run.data.get(KEY) or []:
            rows.append({**record, "path": str(path), "run": path.name, "machine": run.machine,
                         "datetime": run.datetime})
    return pd.DataFrame(rows)


def _fmt(x, spec: str, unit: str = "") -> str:
    v = number(x)
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def scheme_section(latest: pd.DataFrame, checks: pd.DataFrame) -> list[str]:
    """Markdown lines; empty when the runs hold no int8 case."""
    if checks.empty or "int8_scheme" not in checks:
        return []
    int8 = checks[checks["precision"] == "int8"]
    if int8.empty:
        return []
    lines = ["## int8 schemes", "",
             "Each scheme's agreement with the reference (every check of the newest run per machine, failed "
             "ones included: they are not timed) and, where it passed, its p50 and speedup over its reference "
             "from the same run file.", ""]
    timed = latest[latest["precision"].astype(str).str.startswith("int8")]
    for (machine, model), group in int8.groupby(["machine", "model"], sort=True):
        # each (engine, scheme, batch) from the newest run that checked it: shards of one CI
        # run (split by engine) all count, whatever order the files were named in
        newest = (group.sort_values(["datetime", "path"], kind="stable")
                  .groupby(["engine", "int8_scheme", "batch_size", "device"]).tail(1))
        lines += [f"### {model} ({machine})", "",
                  "| engine | scheme | built by | batch | cosine | SQNR | top-1 | verdict | p50 | speedup |",
                  "|---|---|---|---:|---:|---:|---:|---|---:|---:|"]
        best: dict = {}  # batch size -> (noisy, p50, check, speedup): schemes compete at one batch size
        for _, c in newest.sort_values(["batch_size", "engine", "int8_scheme"]).iterrows():
            row = timed[(timed["path"] == c["path"]) & (timed["case"] == c["id"])]
            p50 = row["p50_s"].iloc[0] if not row.empty else None
            speedup = row["speedup"].iloc[0] if not row.empty and "speedup" in row else None
            verdict = c["equivalence"] if c["equivalence"] == "pass" else f"**{c['equivalence']}**"
            recipe = c.get("int8_recipe") if isinstance(c.get("int8_recipe"), str) else "n/a"
            lines.append(f"| {c['engine']} | {c['int8_scheme']} | {recipe} | {c['batch_size']} | "
                         f"{_fmt(c['cosine_min'], '.5f')} | "
                         f"{_fmt(c['sqnr_db_min'], '.1f', ' dB')} | {_fmt(c.get('top1_min'), '.3f')} | {verdict} | "
                         f"{_fmt(None if p50 is None else p50 * 1e3, '.3f', ' ms')} | {_fmt(speedup, '.2f', '×')} |")
            batch = c["batch_size"]
            # a scheme timed under host interference ranks only after every clean one (its reason said)
            noisy = row["interference"].iloc[0] if not row.empty and "interference" in row else None
            noisy = noisy if isinstance(noisy, str) and noisy else None
            if c["equivalence"] == "pass" and number(p50) is not None and (
                    batch not in best or ((noisy is not None), p50) < ((best[batch][0] is not None), best[batch][1])):
                best[batch] = (noisy, p50, c, speedup)
        lines.append("")
        lines += same_artifacts(newest)
        for batch, (noisy, p50, c, speedup) in sorted(best.items()):
            lines.append(f"Fastest passing int8 scheme for **{model}** at batch {batch}: {c['engine']} "
                         f"`{c['int8_scheme']}` (p50 {p50 * 1e3:.3f} ms, {_fmt(speedup, '.2f', '×')} over its reference)"
                         + (f", ⚠️ measured under host interference ({noisy})." if noisy else "."))
        if not best:
            worst = newest.loc[newest["cosine_min"].astype(float).idxmax()] if newest["cosine_min"].notna().any() else None
            closest = (f" (closest: {worst['engine']} `{worst['int8_scheme']}`, cosine {_fmt(worst['cosine_min'], '.5f')}, "
                       f"SQNR {_fmt(worst['sqnr_db_min'], '.1f', ' dB')})") if worst is not None else ""
            lines.append(f"No int8 scheme passes the equivalence policy for **{model}**{closest}.")
        lines.append("")
    return lines


def same_artifacts(checks: pd.DataFrame) -> list[str]:
    """Schemes of one engine and batch that built byte-identical artifacts (``artifact_sha256``):
    one result under two names, said so rather than read as two measurements."""
    if "artifact_sha256" not in checks:
        return []
    lines = []
    known = checks[[isinstance(d, str) and bool(d) for d in checks["artifact_sha256"]]]
    for (engine, batch, device, _), group in known.groupby(["engine", "batch_size", "device", "artifact_sha256"]):
        schemes = sorted(set(group["int8_scheme"]))
        if len(schemes) > 1:
            lines.append(f"Same graph: {' and '.join(f'`{x}`' for x in schemes)} built byte-identical {engine} "
                         f"artifacts at batch {batch} on {device}; one result, listed under each scheme.")
    return lines + ([""] if lines else [])


def notices(latest: pd.DataFrame) -> list[str]:
    """Each engine notice the runs recorded (e.g. a deprecated API), said once."""
    seen = sorted({str(e[key]) for e in latest["extra"] if isinstance(e, dict)
                   for key in ("engine_notice", "model_note") if e.get(key)})
    return (["## Notes", ""] + [f"- {n}" for n in seen] + [""]) if seen else []
