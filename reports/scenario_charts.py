"""Charts of the scenarios: token generation and the image->caption pipeline drawn by hand, and any
scenario whose record type declares a ``ChartSpec`` (core/schema.py) drawn from that spec, so a new
scenario gets its chart by declaring it, without a change here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from infermatrix.core.schema import RECORDS, ChartSpec

from .charts import _save, plt

STAGES = ("preprocess", "vision", "prefill", "decode")


def generation_chart(frame: pd.DataFrame, out: Path) -> Path | None:
    """Decode tokens/s and time to first token per engine, one group per model and prompt length."""
    gen = frame[frame["kind"] == "generation"].groupby("case").tail(1)
    if gen.empty:
        return None
    rows = sorted((r["extra"] for _, r in gen.iterrows()),
                  key=lambda i: (i["model"], i["prompt_length"], i["new_tokens"], i["engine"], i["precision"]))
    labels = [f"{i['model']} prompt {i['prompt_length']} new {i['new_tokens']}\n{i['engine']} {i['precision']}"
              for i in rows]
    y = np.arange(len(rows))
    fig, (ax_tps, ax_ttft) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 1.8), sharey=True)
    ax_tps.barh(y, [i["decode_tokens_per_s"] for i in rows], color="tab:blue")
    ax_tps.set_xlabel("decode tokens/s (median over runs; higher is better)")
    ax_tps.set_yticks(y, labels, fontsize=7)
    ax_tps.invert_yaxis()
    ttft = np.array([i["ttft_p50_s"] for i in rows], dtype=float) * 1e3
    p99 = np.array([i.get("ttft_p99_s") for i in rows], dtype=float) * 1e3  # None (under 100 runs) -> NaN
    ax_ttft.barh(y, ttft, color="tab:orange")
    has = np.isfinite(p99)  # no whisker where the run has no p99
    if has.any():
        ax_ttft.errorbar(ttft[has], y[has], xerr=[np.zeros(has.sum()), p99[has] - ttft[has]], fmt="none",
                         ecolor="black", capsize=2)
    ax_ttft.set_xlabel("time to first token [ms] (p50, whisker to p99; none under 100 runs)")
    for ax in (ax_tps, ax_ttft):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Token generation: greedy with a KV cache, batch {rows[0]['batch_size']}")
    fig.tight_layout()
    return _save(fig, out, "generation.png")


def pipeline_chart(frame: pd.DataFrame, out: Path) -> Path | None:
    """Stacked stage breakdown (p50 of each stage) per run mode, end-to-end p99 marked."""
    pipe = frame[frame["kind"] == "pipeline"].groupby("case").tail(1)
    if pipe.empty:
        return None
    rows = [r["extra"] for _, r in pipe.iterrows()]  # run order: the modes as the test lists them
    labels = [f"{i['model']}\n{i['mode']}" for i in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(rows)), 4.5))
    bottom = np.zeros(len(rows))
    for stage in STAGES:
        values = np.array([i[f"{stage}_p50_s"] for i in rows]) * 1e3
        ax.bar(x, values, bottom=bottom, label=stage)
        bottom += values
    p99 = np.array([i.get("e2e_p99_s") for i in rows], dtype=float) * 1e3  # None (under 100 runs): no mark
    if np.isfinite(p99).any():
        ax.scatter(x, p99, marker="_", s=300, color="black", label="end-to-end p99", zorder=3)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("latency [ms]")
    ax.set_title("Image -> caption pipeline: stage breakdown per run mode (p50)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "pipeline_stages.png")


def spec_chart(frame: pd.DataFrame, kind: str, spec: ChartSpec, out: Path) -> Path | None:
    """One horizontal bar per newest record of ``kind``: ``spec.value`` (seconds drawn in ms), one
    panel per ``spec.panel`` value, bars labelled by ``spec.label`` fields."""
    rows = [r["extra"] for _, r in frame[frame["kind"] == kind].groupby("case").tail(1).iterrows()
            if r["extra"].get(spec.value) is not None]
    if not rows:
        return None
    panels = sorted({str(i[spec.panel]) for i in rows})
    ms = spec.value.endswith("_s")
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, sum(0.4 * sum(str(i[spec.panel]) == p for i in rows) + 1.2
                                                              for p in panels)), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        mine = sorted((i for i in rows if str(i[spec.panel]) == panel), key=lambda i: i[spec.value])
        y = np.arange(len(mine))
        ax.barh(y, [i[spec.value] * (1e3 if ms else 1) for i in mine], color="tab:blue")
        ax.set_yticks(y, [" ".join(str(i.get(k)) for k in spec.label) for i in mine], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(spec.value.removesuffix("_s") + (" [ms]" if ms else ""))
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(spec.title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out, f"{kind}.png")


def scenario_charts(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Every scenario chart the runs hold."""
    made = [generation_chart(frame, out), pipeline_chart(frame, out),
            *(spec_chart(frame, kind, cls.chart, out) for kind, cls in RECORDS.items() if cls.chart is not None)]
    return [p for p in made if p is not None]
