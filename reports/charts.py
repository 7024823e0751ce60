"""PNG charts from a frame of saved runs (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MIB = 1024 * 1024


def _variant(df: pd.DataFrame) -> pd.Series:
    """``engine precision``, plus ``@device`` when the runs hold more than one device."""
    label = df["engine"] + " " + df["precision"]
    return label + "@" + df["device"] if df["device"].nunique() > 1 else label


def _save(fig, out: Path, name: str) -> Path:
    path = out / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _grid(n: int, width: float = 6.5, height: float = 3.6):
    cols = min(2, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def latency_by_engine(latest: pd.DataFrame, out: Path) -> Path:
    models = sorted(latest["model"].unique())
    fig, axes = _grid(len(models))
    for ax, model in zip(axes, models):
        df = latest[latest["model"] == model].assign(variant=lambda d: _variant(d))
        variants = sorted(df["variant"].unique())
        sizes = sorted(df["batch_size"].unique())
        width = 0.8 / len(sizes)
        for i, bs in enumerate(sizes):
            sub = df[df["batch_size"] == bs].set_index("variant").reindex(variants)
            x = np.arange(len(variants)) + i * width
            p50, p99 = sub["p50_s"].to_numpy() * 1e3, sub["p99_s"].to_numpy() * 1e3
            ax.bar(x, p50, width, label=f"bs{bs}")
            ax.errorbar(x, p50, yerr=[np.zeros_like(p50), np.nan_to_num(p99 - p50)], fmt="none", ecolor="black", capsize=3)
        ax.set_xticks(np.arange(len(variants)) + width * (len(sizes) - 1) / 2, variants, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("latency p50 [ms] (whisker: p99)")
        ax.set_title(f"{model}: latency by engine and precision")
        ax.legend(title="batch")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "latency_by_engine.png")


def throughput_vs_batch(latest: pd.DataFrame, out: Path) -> Path:
    models = sorted(latest["model"].unique())
    fig, axes = _grid(len(models))
    for ax, model in zip(axes, models):
        df = latest[latest["model"] == model].assign(variant=lambda d: _variant(d))
        for variant, sub in df.sort_values("batch_size").groupby("variant"):
            ax.plot(sub["batch_size"], sub["throughput"], marker="o", label=variant)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(df["batch_size"].unique()), [str(b) for b in sorted(df["batch_size"].unique())])
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput [items/s]")
        ax.set_title(f"{model}: throughput vs batch size")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "throughput_vs_batch.png")


def memory_by_precision(latest: pd.DataFrame, out: Path) -> Path:
    smallest = latest[latest["batch_size"] == latest.groupby("model")["batch_size"].transform("min")]
    df = smallest.assign(label=lambda d: d["model"] + "\n" + _variant(d)).sort_values(["model", "engine", "precision"])
    metrics = [("peak_rss_bytes", "peak host RSS"), ("artifact_bytes", "artifact size")]
    if df["gpu_max_allocated_bytes"].notna().any():
        metrics.append(("gpu_max_allocated_bytes", "GPU max allocated"))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(8, 0.45 * len(df)), 3.4 * len(metrics)), squeeze=False)
    colors = {"fp32": "tab:blue", "fp16": "tab:orange", "bf16": "tab:green", "int8": "tab:red"}
    for ax, (col, title) in zip(axes.flat, metrics):
        # no bar where there is nothing to show (eager and torch.compile keep no artifact file)
        values = pd.to_numeric(df[col], errors="coerce").where(lambda v: v > 0) / MIB
        ax.bar(np.arange(len(df)), values, color=[colors.get(p, "gray") for p in df["precision"]])
        ax.set_xticks(np.arange(len(df)), df["label"], rotation=90, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("MiB")
        ax.set_title(f"{title} by precision (smallest batch; colour = precision)")
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    axes.flat[0].legend(handles, list(colors), fontsize=7)
    fig.tight_layout()
    return _save(fig, out, "memory_by_precision.png")


def speedup_table(latest: pd.DataFrame) -> pd.DataFrame:
    """Speedup of each engine/precision over eager fp32, per model, device and batch size."""
    base = latest[(latest["engine"] == "torch") & (latest["precision"] == "fp32")]
    base = base.set_index(["model", "device", "batch_size"])["p50_s"]
    keyed = latest.set_index(["model", "device", "batch_size"])
    speed = base.reindex(keyed.index).to_numpy() / keyed["p50_s"].to_numpy()
    return latest.assign(speedup=speed, variant=_variant(latest))


def speedup_heatmap(latest: pd.DataFrame, out: Path) -> Path:
    table = speedup_table(latest)
    bs = table[table["batch_size"] == table.groupby("model")["batch_size"].transform("min")]
    grid = bs.pivot_table(index="model", columns="variant", values="speedup", aggfunc="first")
    fig, ax = plt.subplots(figsize=(1.2 * grid.shape[1] + 3, 0.6 * grid.shape[0] + 2))
    data = np.log2(grid.to_numpy(dtype=float))
    lim = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 1.0
    im = ax.imshow(data, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}×", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.set_title("speedup vs torch eager fp32 (p50, smallest batch; green = faster)")
    fig.colorbar(im, ax=ax, label="log2 speedup")
    fig.tight_layout()
    return _save(fig, out, "speedup_heatmap.png")


def cpu_vs_gpu(latest: pd.DataFrame, out: Path) -> Path | None:
    if set(latest["device"].dropna()) < {"cpu", "cuda"}:
        return None
    df = latest.assign(label=lambda d: d["model"] + " " + d["engine"] + " " + d["precision"]
                       + " bs" + d["batch_size"].astype(str))
    grid = df.pivot_table(index="label", columns="device", values="p50_s", aggfunc="first").dropna()
    if grid.empty:  # no case was run on both devices
        return None
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(grid)), 4))
    x = np.arange(len(grid))
    ax.bar(x - 0.2, grid["cpu"] * 1e3, 0.4, label="cpu")
    ax.bar(x + 0.2, grid["cuda"] * 1e3, 0.4, label="cuda")
    ax.set_xticks(x, grid.index, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("latency p50 [ms]")
    ax.set_title("CPU vs GPU latency")
    ax.legend()
    fig.tight_layout()
    return _save(fig, out, "cpu_vs_gpu.png")


def load_curves(frame: pd.DataFrame, out: Path) -> Path | None:
    """Server: p99 and achieved QPS against offered QPS; sweep: percentiles and throughput
    against concurrency (latest run of each load case)."""
    load = frame[frame["scenario"].isin(["Server", "Concurrency"])]
    if load.empty:
        return None
    latest = load.groupby("case").tail(1)
    fig, (ax_srv, ax_cc) = plt.subplots(1, 2, figsize=(13, 4.5))
    for _, row in latest[latest["scenario"] == "Server"].iterrows():
        info = row["extra"]
        trials = sorted(info["trials"], key=lambda t: t["offered_qps"])
        label = f"{info['model']} {info['engine']} {info['precision']}"
        line, = ax_srv.plot([t["offered_qps"] for t in trials], [t["p99_s"] * 1e3 for t in trials], marker="o", label=label)
        ax_srv.axhline(info["latency_bound_s"] * 1e3, color=line.get_color(), linestyle=":", linewidth=1)
    ax_srv.set_xscale("log")
    ax_srv.set_yscale("log")
    ax_srv.set_xlabel("offered load [queries/s] (Poisson)")
    ax_srv.set_ylabel("p99 latency [ms] (dotted: bound)")
    ax_srv.set_title("Server scenario: p99 against offered load")
    ax_srv.legend(fontsize=7)
    ax_srv.grid(alpha=0.3)
    for _, row in latest[latest["scenario"] == "Concurrency"].iterrows():
        info = row["extra"]
        levels = info["levels"]
        label = f"{info['model']} {info['engine']} {info['precision']}"
        ax_cc.plot([r["concurrency"] for r in levels], [r["throughput_qps"] for r in levels], marker="o", label=label)
    ax_cc.set_xlabel("concurrency (queries in flight)")
    ax_cc.set_ylabel("throughput [queries/s]")
    ax_cc.set_yscale("log")
    ax_cc.set_title("Concurrency sweep: throughput")
    ax_cc.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax_cc.legend(fontsize=7)
    ax_cc.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "load_curves.png")


def accuracy_charts(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Confusion matrix per model variant (eager fp32) and accuracy against latency."""
    acc = frame[frame["scenario"] == "Accuracy"].groupby("case").tail(1)
    if acc.empty:
        return []
    infos = list(acc["extra"])
    baselines = [i for i in infos if i["engine"] == "torch" and i["precision"] == "fp32"] or infos[:1]
    fig, axes = plt.subplots(1, len(baselines), figsize=(4.6 * len(baselines), 4.2), squeeze=False)
    for ax, info in zip(axes.flat, baselines):
        cm = np.asarray(info["confusion"])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(cm.shape[1]))
        ax.set_yticks(range(cm.shape[0]))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{info['model']}: accuracy {info['accuracy']:.3f}, macro F1 {info['macro_f1']:.3f}", fontsize=9)
    fig.tight_layout()
    paths = [_save(fig, out, "confusion_matrices.png")]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for model in sorted({i["model"] for i in infos}):
        pts = [i for i in infos if i["model"] == model and i.get("p50_s")]
        sc = ax.scatter([i["p50_s"] * 1e3 for i in pts], [i["accuracy"] for i in pts], label=model, s=40)
        for i in pts:
            ax.annotate(f"{i['engine']} {i['precision']}", (i["p50_s"] * 1e3, i["accuracy"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points", color=sc.get_facecolor()[0])
    ax.set_xscale("log")
    ax.set_xlabel(f"latency p50 per batch [ms] (batch {infos[0].get('batch_size')})")
    ax.set_ylabel("accuracy on the held-out split")
    ax.set_title("accuracy against latency, by engine and precision")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(_save(fig, out, "accuracy_vs_latency.png"))
    return paths


def history_trend(frame: pd.DataFrame, regressions: set[tuple[str, str]], out: Path) -> Path:
    """Median per run for every latency case, small multiples per model; red x = regression."""
    df = frame.copy()
    runs = list(dict.fromkeys(df.sort_values(["datetime", "run"])["run"]))
    df["run_index"] = df["run"].map({r: i for i, r in enumerate(runs)})
    models = sorted(df["model"].unique())
    fig, axes = _grid(len(models))
    for ax, model in zip(axes, models):
        for case, sub in df[df["model"] == model].sort_values("run_index").groupby("case"):
            label = case[len(model) + 1:]
            ax.plot(sub["run_index"], sub["median_s"] * 1e3, marker=".", label=label, linewidth=1)
            bad = sub[[(case, r) in regressions for r in sub["run"]]]
            ax.scatter(bad["run_index"], bad["median_s"] * 1e3, marker="x", color="red", s=80, zorder=5)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("run (oldest → newest)")
        ax.set_ylabel("median [ms]")
        ax.set_title(f"{model}: history (red × = regression vs previous run)")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "history_trend.png")
