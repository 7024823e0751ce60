"""PNG charts from a frame of saved runs (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .memory_charts import memory_by_precision  # noqa: E402,F401  (drawn there, called from cli)


def _variant(df: pd.DataFrame, machine: bool = True) -> pd.Series:
    """``engine precision``, plus ``@device`` when the runs hold more than one device and
    ``[machine]`` when they come from more than one machine."""
    label = df["engine"] + " " + df["precision"]
    label = label + "@" + df["device"] if df["device"].nunique() > 1 else label
    return label + " [" + df["machine"] + "]" if machine and _several_machines(df) else label


def _several_machines(df: pd.DataFrame) -> bool:
    return "machine" in df and df["machine"].nunique() > 1


def _numbers(col: pd.Series) -> np.ndarray:
    """A column as floats, a missing figure (None: e.g. a p99 from too few samples) as NaN."""
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)


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
            p50, p99 = _numbers(sub["p50_s"]) * 1e3, _numbers(sub["p99_s"]) * 1e3
            ax.bar(x, p50, width, label=f"bs{bs}")
            has = np.isfinite(p99) & np.isfinite(p50)  # no whisker where the run has no p99
            if has.any():
                ax.errorbar(x[has], p50[has], yerr=[np.zeros(has.sum()), p99[has] - p50[has]], fmt="none",
                            ecolor="black", capsize=3)
        ax.set_xticks(np.arange(len(variants)) + width * (len(sizes) - 1) / 2, variants, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("latency p50 [ms] (whisker: p99,\nnone under 100 samples)")
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
            ax.plot(sub["batch_size"], _numbers(sub["throughput"]), marker="o", label=variant)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(df["batch_size"].unique()), [str(b) for b in sorted(df["batch_size"].unique())])
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput [items/s]")
        ax.set_title(f"{model}: throughput vs batch size")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "throughput_vs_batch.png")


def speedup_table(latest: pd.DataFrame) -> pd.DataFrame:
    """Speedup of each case over eager fp32 at the same model, device and batch size, both
    from one run: ``latest`` comes from ``history.latest_per_machine`` (``baseline_p50_s``
    is that run's eager p50, NaN when the run has none, and then the speedup is NaN too)."""
    speed = _numbers(latest["baseline_p50_s"]) / _numbers(latest["p50_s"])
    return latest.assign(speedup=speed, variant=_variant(latest))


def speedup_heatmap(latest: pd.DataFrame, out: Path) -> Path:
    table = speedup_table(latest)
    bs = table[table["batch_size"] == table.groupby("model")["batch_size"].transform("min")]
    bs = bs.assign(row=bs["model"] + (" [" + bs["machine"] + "]" if _several_machines(bs) else ""),
                   variant=_variant(bs, machine=False))  # one row per model and machine
    grid = bs.groupby(["row", "variant"])["speedup"].first().unstack()  # keeps an all-NaN (n/a) cell
    measured = set(zip(bs["row"], bs["variant"]))
    fig, ax = plt.subplots(figsize=(1.2 * grid.shape[1] + 3, 0.6 * grid.shape[0] + 2))
    data = np.log2(grid.to_numpy(dtype=float))
    lim = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 1.0
    im = ax.imshow(data, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}×", ha="center", va="center", fontsize=8)
        elif (grid.index[i], grid.columns[j]) in measured:  # measured, but its run has no reference case
            ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="gray")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.set_title("speedup vs each model's reference (eager fp32; ONNX Runtime fp32 for an ONNX file) of the same run "
                 "(p50, smallest batch; green = faster)")
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
    load = frame[(frame["loadgen_scenario"] == "Server") | (frame["kind"] == "concurrency")]
    if load.empty:
        return None
    latest = load.groupby("case").tail(1)
    fig, (ax_srv, ax_cc) = plt.subplots(1, 2, figsize=(13, 4.5))
    for _, row in latest[latest["loadgen_scenario"] == "Server"].iterrows():
        info = row["extra"]
        # LoadGen trials say target_qps and verdict; runs saved before LoadGen say offered_qps and met
        trials = sorted(info["trials"], key=lambda t: t.get("target_qps", t.get("offered_qps")))
        best = info.get("max_valid_qps")
        label = f"{info['model']} {info['engine']} {info['precision']}" + (f" (max VALID {best:.1f}/s)" if best else "")
        qps = [t.get("target_qps", t.get("offered_qps")) for t in trials]
        p99 = [np.nan if t["p99_s"] is None else t["p99_s"] * 1e3 for t in trials]
        line, = ax_srv.plot(qps, p99, marker="o", label=label)
        bad = [i for i, t in enumerate(trials) if t.get("verdict", "VALID" if t.get("met") else "INVALID") != "VALID"]
        ax_srv.scatter([qps[i] for i in bad], [p99[i] for i in bad], marker="x", color="red", zorder=5)
        ax_srv.axhline(info["latency_bound_s"] * 1e3, color=line.get_color(), linestyle=":", linewidth=1)
    ax_srv.set_xscale("log")
    ax_srv.set_yscale("log")
    ax_srv.set_xlabel("LoadGen target load [queries/s] (Poisson)")
    ax_srv.set_ylabel("p99 latency [ms] (dotted: bound; red x: INVALID)")
    ax_srv.set_title("Server scenario (MLPerf LoadGen): p99 against load")
    ax_srv.legend(fontsize=7)
    ax_srv.grid(alpha=0.3)
    for _, row in latest[latest["kind"] == "concurrency"].iterrows():
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
    acc = frame[frame["kind"] == "accuracy"].groupby("case").tail(1)
    if acc.empty:
        return []
    infos = list(acc["extra"])
    # each model's own reference, as its records name it
    baselines = [i for i in infos if (i["engine"], i["precision"]) == (i.get("baseline_engine"), i.get("baseline_precision"))] \
        or infos[:1]
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
    """Median per run for every latency case, small multiples per model; one line per case and
    machine (a trend never joins two machines); red x = ``(case, run path)`` in ``regressions``,
    a regression against the same machine's previous run."""
    df = frame.copy()
    runs = list(dict.fromkeys(df.sort_values(["datetime", "run", "path"])["path"]))
    df["run_index"] = df["path"].map({r: i for i, r in enumerate(runs)})
    several = _several_machines(df)
    models = sorted(df["model"].unique())
    fig, axes = _grid(len(models))
    for ax, model in zip(axes, models):
        for (case, machine), sub in df[df["model"] == model].sort_values("run_index").groupby(["case", "machine"]):
            label = case[len(model) + 1:] + (f" [{machine}]" if several else "")
            ax.plot(sub["run_index"], sub["median_s"] * 1e3, marker=".", label=label, linewidth=1)
            bad = sub[[(case, r) in regressions for r in sub["path"]]]
            ax.scatter(bad["run_index"], bad["median_s"] * 1e3, marker="x", color="red", s=80, zorder=5)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("run (oldest → newest)")
        ax.set_ylabel("median [ms]")
        ax.set_title(f"{model}: history (red × = regression vs the machine's previous run)")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "history_trend.png")
