"""Charts of the token-generation and image->caption pipeline scenarios (from extra_info)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

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
