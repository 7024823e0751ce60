"""Memory per engine (DESIGN.md section 5): ``memory_by_precision.png`` and the summary's
compression section.

Reads ``load_rss_bytes`` (resident memory the loaded engine adds over an idle interpreter with
the same imports), ``run_peak_rss_bytes`` (peak during inference above that), ``gpu_peak_bytes``
(each measured in a fresh subprocess per case, runner/memory.py) and ``artifact_bytes``.
JSON only: no engine is imported. Runs saved before these fields existed show "not measured".
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .history import number  # noqa: E402

MIB = 1024 * 1024
REFERENCE = "fp32"
ORDER = ("fp32", "fp16", "bf16", "int8")
COLORS = {"fp32": "tab:blue", "fp16": "tab:orange", "bf16": "tab:green", "int8": "tab:red"}
METRICS = {"rss": "host memory [MiB]: load RSS (solid) + run peak (hatched)",
           "artifact": "artifact on disk [MiB]", "gpu": "GPU peak [MiB]"}


def _mib(b: float) -> str:
    return f"{b / MIB:.3g} MiB"


def memory_cases(latest: pd.DataFrame) -> pd.DataFrame:
    """Each model's smallest batch (per machine), with ``panel`` (model [machine]) and ``slot``
    (engine [@device]) columns: one chart row per panel, one bar group per slot."""
    key = ["machine", "model"] if "machine" in latest else ["model"]
    df = latest[latest["batch_size"] == latest.groupby(key)["batch_size"].transform("min")].copy()
    several = "machine" in df and df["machine"].nunique() > 1
    df["panel"] = df["model"] + (" [" + df["machine"].astype(str) + "]" if several else "")
    df["slot"] = df["engine"] + ("@" + df["device"] if df["device"].nunique() > 1 else "")
    for col in ("load_rss_bytes", "run_peak_rss_bytes", "gpu_peak_bytes", "artifact_bytes"):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else float("nan")  # missing: NaN
    return df


def _color(precision: str) -> str:
    """int8 schemes (int8-dynamic ...) share int8's colour family."""
    return COLORS.get(precision, COLORS.get(precision.split("-")[0], "gray"))


def _precisions(values) -> list[str]:
    return [p for p in ORDER if p in set(values)] + sorted(set(values) - set(ORDER))


def _change(value: float | None, ref: float | None) -> float | None:
    """Percent saved against ``ref`` (negative: more than the reference)."""
    return None if value is None or not ref else (1 - value / ref) * 100


def _draw(ax, sub: pd.DataFrame, metric: str) -> None:
    if metric == "gpu":  # device memory: the CUDA cases only
        sub = sub[sub["device"] == "cuda"]
    slots = sorted(sub["slot"].unique())
    col = {"rss": "load_rss_bytes", "artifact": "artifact_bytes", "gpu": "gpu_peak_bytes"}[metric]
    top = 0.0
    for j, slot in enumerate(slots):
        rows = sub[sub["slot"] == slot].set_index("precision")
        precs = _precisions(rows.index)
        width = 0.8 / max(len(precs), 1)
        for i, prec in enumerate(precs):
            r, x = rows.loc[prec], j + (i - (len(precs) - 1) / 2) * width
            ref = rows.loc[REFERENCE] if REFERENCE in rows.index and prec != REFERENCE else None
            value, run = number(r[col]), number(r["run_peak_rss_bytes"]) if metric == "rss" else None
            if value is None or (metric == "artifact" and value == 0):
                why = "no file\n(live module)" if metric == "artifact" and value == 0 else "not\nmeasured"
                ax.text(x, 0, why, ha="center", va="bottom", fontsize=6, rotation=90, color="gray")
                continue
            height = value / MIB
            ax.bar(x, height, width * 0.92, color=_color(prec), edgecolor="black", linewidth=0.4)
            label = f"{value / MIB:.3g}"
            if run is not None:
                ax.bar(x, max(run, 0) / MIB, width * 0.92, bottom=height, color=_color(prec), alpha=0.35,
                       hatch="///", edgecolor="black", linewidth=0.4)
                height += max(run, 0) / MIB
                label += f"+{run / MIB:.2g}"
            saved = _change(value, number(ref[col])) if ref is not None else None
            label += "" if saved is None else f"\n{'−' if saved >= 0 else '+'}{abs(saved):.0f} %"
            ax.text(x, height, label, ha="center", va="bottom", fontsize=6.5,
                    fontweight="bold" if ref is not None else "normal")
            top = max(top, height)
    ax.set_xticks(range(len(slots)), slots, fontsize=8)
    ax.set_xlim(-0.6, len(slots) - 0.4)
    ax.set_ylim(0, top * 1.3 if top else 1)
    ax.grid(axis="y", alpha=0.3)


def memory_by_precision(latest: pd.DataFrame, out: Path) -> Path:
    """Per model (a row): each engine's memory at every precision side by side, the artifact size
    beside it (and GPU peak where measured); labels give MiB and the saving vs fp32 of the same
    engine."""
    df = memory_cases(latest)
    metrics = ["rss", "artifact"] + (["gpu"] if df["gpu_peak_bytes"].notna().any() else [])
    panels = sorted(df["panel"].unique())
    width = max(4.5, 1.6 * df.groupby("panel")["slot"].nunique().max())
    fig, axes = plt.subplots(len(panels), len(metrics), figsize=(width * len(metrics), 3.3 * len(panels)),
                             squeeze=False)
    for row, panel in zip(axes, panels):
        sub = df[df["panel"] == panel]
        for ax, metric in zip(row, metrics):
            _draw(ax, sub, metric)
            ax.set_title(f"{panel} (batch {sub['batch_size'].min()}): {METRICS[metric]}", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=_color(p)) for p in _precisions(df["precision"])]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", hatch="///", edgecolor="black"))
    fig.legend(handles, [*_precisions(df["precision"]), "run peak above loaded"], loc="upper center",
               ncol=len(handles), fontsize=8, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("Memory per engine, each measured alone in a fresh process; "
                 "labels: MiB and (bold) saved vs fp32 of the same engine", fontsize=10, y=1.03)
    fig.tight_layout()
    path = out / "memory_by_precision.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def memory_section(latest: pd.DataFrame) -> list[str]:
    """Markdown: per model and engine, each reduced precision's artifact and load RSS against fp32's."""
    df = memory_cases(latest)
    lines = ["## Memory and compression", "",
             "Each engine measured alone in a fresh subprocess (load RSS: what the loaded engine adds to an idle "
             "interpreter with the same imports; run peak: above that during inference), at each model's "
             "smallest batch. Reduced precision against fp32 of the same engine:", ""]
    found = []
    for (panel, slot), sub in df.groupby(["panel", "slot"], sort=True):
        rows = sub.set_index("precision")
        if REFERENCE not in rows.index:
            continue
        ref = rows.loc[REFERENCE]
        for prec in _precisions(rows.index):
            if prec == REFERENCE:
                continue
            r, parts = rows.loc[prec], []
            a, a0 = number(r["artifact_bytes"]), number(ref["artifact_bytes"])
            if a and a0:
                ratio = f"{a0 / a:.2f}× smaller" if a <= a0 else f"{a / a0:.2f}× larger"
                parts.append(f"artifact {_mib(a)} vs {_mib(a0)} = {ratio}")
            for col, what in (("load_rss_bytes", "load RSS"), ("gpu_peak_bytes", "GPU peak")):
                m, m0 = number(r[col]), number(ref[col])
                if m is not None and m0:
                    saved = _change(m, m0)
                    parts.append(f"{what} {_mib(m)} vs {_mib(m0)} ({abs(saved):.0f} % {'less' if saved >= 0 else 'more'})")
            if parts:
                found.append(f"- {panel} {slot} {prec} vs {REFERENCE}: " + "; ".join(parts))
    lines += found or ["- no engine has an fp32 and a reduced-precision case with figures to compare"]
    errors = [(row["case"], str(row["extra"].get("memory_error")).splitlines()[0])
              for _, row in df.iterrows() if isinstance(row.get("extra"), dict) and row["extra"].get("memory_error")]
    if errors:
        lines += ["", "Memory not measured:"] + [f"- `{case}`: {why}" for case, why in errors]
    return lines + [""]
