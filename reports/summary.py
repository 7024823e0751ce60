"""The markdown summary: speedups, equivalence status and the best engine per model."""
from __future__ import annotations

import pandas as pd

from .charts import speedup_table


def summary_markdown(latest: pd.DataFrame, runs: list[str], charts: list[str]) -> str:
    table = speedup_table(latest)
    lines = ["# infermatrix summary", "", f"Runs read: {len(runs)} (latest: `{runs[-1]}`)", ""]
    lines += ["## Best engine per model", "",
              "| model | device | batch | best (passing equivalence) | p50 | speedup vs eager fp32 |",
              "|---|---|---:|---|---:|---:|"]
    passing = table[table["equivalence"] == "pass"]
    for (model, device, bs), sub in passing.groupby(["model", "device", "batch_size"]):
        best = sub.loc[sub["p50_s"].idxmin()]
        lines.append(f"| {model} | {device} | {bs} | {best['engine']} {best['precision']} | "
                     f"{best['p50_s'] * 1e3:.3f} ms | {best['speedup']:.2f}× |")
    lines += ["", "## All cases", "", "| case | p50 | p99 | throughput | speedup | equivalence |",
              "|---|---:|---:|---:|---:|---|"]
    for case, row in table.sort_values(["model", "device", "batch_size", "engine", "precision"]).iterrows():
        lines.append(f"| {row['case'] if 'case' in row else case} | {row['p50_s'] * 1e3:.3f} ms | "
                     f"{(row['p99_s'] or 0) * 1e3:.3f} ms | {row['throughput']:.1f}/s | {row['speedup']:.2f}× | "
                     f"{row['equivalence']} |")
    lines += ["", "## Charts", ""] + [f"![{c}]({c})" for c in charts]
    return "\n".join(lines) + "\n"
