"""Measure the history gate's power (reports/changepoints.py, what ``infermatrix watch`` runs) on
real run-to-run noise of this machine, with injected steps.

Two steps:

* ``produce``: runs the tiny matrix N times, **each run a new pytest process** (that is where the
  run-to-run noise of a history comes from: another process, another memory layout, another host
  load), and keeps each run's figures compact (no raw samples) in a folder;
* ``measure``: builds series from those real runs (each series a random draw of the runs in random
  order, so its noise is real run-to-run noise), injects a step into the second part of half of
  them, and counts how often the gate fires: a false alarm on a series without a step (the A/A
  series), a detection on one with a step. It also runs the real history in its recorded order
  (slow drift kept) through the gate, and compares the change-point methods it could have used.

    python bench/history_gate_power.py produce --count 60 --out bench/data/history_gate_runs
    python bench/history_gate_power.py measure --runs bench/data/history_gate_runs --step 0.10
    python bench/history_gate_power.py measure --methods fast,median,l1/fast,asv   # compare (asv installed)

bench/data/history_gate_runs/ holds such runs of a 2-core AMD EPYC shared with other jobs, and
bench/data/history_gate_runs_quiet/ 60 of the same host with nothing else running (compact: no raw
samples).

A record measured under host interference is no evidence for the gate (it never gives such a
case a verdict); on a shared host nearly every run is flagged, so ``measure`` uses every run's
figure and says how many were flagged.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: the pytest selection of ``produce``: the tiny matrix's latency cases, one intra-op thread
SELECTION = ["--models", "tiny-cnn", "--engines", "torch,onnxruntime", "--batch-sizes", "1", "--precisions", "fp32",
             "-k", "latency", "--no-engine-memory", "--latency-time", "0.5", "--threads", "1"]
#: what a compact run keeps of each benchmark's extra_info (the record's key and figures)
KEPT_INFO = ("infermatrix_schema", "record", "model", "engine", "precision", "int8_scheme", "batch_size", "device",
             "baseline_engine", "baseline_precision", "baseline_device", "p50_s", "p90_s", "p99_s", "mean_s",
             "min_s", "sample_count", "median_ci_rel", "dispersion_iqr_ratio", "host_load_avg", "host_other_cpu_s",
             "host_cpus", "interference")
KEPT_STATS = ("min", "max", "mean", "stddev", "rounds", "median", "iqr", "q1", "q3", "iterations")


def compact(run: dict) -> dict:
    """A run without raw samples or engine details: still pytest-benchmark's format, small enough to keep."""
    mi = run.get("machine_info") or {}
    return {"machine_info": {k: mi.get(k) for k in ("node", "processor", "machine", "python_version", "cpu")
                             if k in mi},
            "commit_info": {k: (run.get("commit_info") or {}).get(k) for k in ("id", "dirty")},
            "datetime": run.get("datetime"), "version": run.get("version"),
            "benchmarks": [{"name": b["name"], "fullname": b.get("fullname"), "group": b.get("group"),
                            "extra_info": {k: b["extra_info"].get(k) for k in KEPT_INFO if k in b["extra_info"]},
                            "stats": {k: b["stats"].get(k) for k in KEPT_STATS}} for b in run["benchmarks"]]}


def produce(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for _ in range(args.count):
        n = 1 + max([int(p.stem.split("-")[1]) for p in args.out.glob("run-*.json")] or [0])
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "run.json"
            res = subprocess.run([sys.executable, "-m", "pytest", "perf_tests", *SELECTION, "-q", "-p", "no:cacheprovider",
                                  "--benchmark-json", str(raw)], cwd=ROOT, env=env, capture_output=True, text=True)
            if res.returncode != 0 or not raw.exists():
                raise SystemExit(f"run {n} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-2000:]}")
            load = os.getloadavg()[0]
            write_compact(json.loads(raw.read_text()), args.out / f"run-{n:03d}.json")
        print(f"run {n:03d} stored (load average {load:.2f})", flush=True)


def write_compact(run: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(compact(run), indent=1) + "\n")
    os.replace(tmp, path)   # never a half-written run


def load_runs(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, int], list[float]]:
    """Per case: the p50 of every run in run order; how many of them were flagged noisy; the load
    averages recorded."""
    from infermatrix.reports.history import number, read
    from infermatrix.reports.history_gate import case_name

    values: dict[str, list[float]] = {}
    noisy: dict[str, int] = {}
    loads: list[float] = []
    files = sorted(folder.glob("run-*.json"))
    if not files:
        raise SystemExit(f"{folder}: no run-*.json (make them with `produce`)")
    for path in files:
        for bench in json.loads(path.read_text())["benchmarks"]:
            record = read(path, bench)
            name = case_name(record)
            p50 = number(record.p50_s) if record.p50_s is not None else number(bench["stats"]["median"])
            if name is None or p50 is None:
                continue
            values.setdefault(name, []).append(p50)
            noisy[name] = noisy.get(name, 0) + bool(getattr(record, "interference", None))
            if number(bench["extra_info"].get("host_load_avg")) is not None:
                loads.append(float(bench["extra_info"]["host_load_avg"]))
    return {k: np.asarray(v) for k, v in values.items()}, noisy, loads


def draw(rng: np.random.Generator, pool: np.ndarray, length: int) -> np.ndarray:
    """A series of real runs in random order: without replacement while the pool lasts."""
    return rng.choice(pool, size=length, replace=length > len(pool))


def newest_step(values: np.ndarray, method: str, args: argparse.Namespace) -> tuple[bool, int | None]:
    """(does the gate fire: the newest step is a regression, where that step is)."""
    if method == "asv":
        from asv.step_detect import detect_regressions, detect_steps   # optional: only to compare with
        _, _, positions = detect_regressions(detect_steps(list(values)), threshold=args.min_change)
        return bool(positions), (positions[-1][1] if positions else None)
    from infermatrix.reports.changepoints import detect

    cost, test = method.split("/") if "/" in method else ("rank", method)
    found = detect(range(len(values)), list(values), min_points=args.min_points, alpha=args.alpha,
                   min_change=args.min_change, min_segment=args.min_segment, cost=cost, test=test)
    if not found.steps:
        return False, None
    return found.steps[-1].change_rel > 0, found.steps[-1].index


def evaluate(rng, pool: np.ndarray, method: str, length: int, window: int, args) -> tuple[int, int, int]:
    """(A/A series the gate fired on, stepped series it fired on, of those at the step ±1 run)."""
    aa = sum(newest_step(draw(rng, pool, length), method, args)[0] for _ in range(args.series))
    hit = near = 0
    at = length - window
    for _ in range(args.series):
        series = draw(rng, pool, length)
        series[at:] *= 1.0 + args.step
        fired, where = newest_step(series, method, args)
        hit += fired
        near += fired and where is not None and abs(where - at) <= 1
    return aa, hit, near


def recorded_order(pool: np.ndarray, method: str, length: int, args) -> tuple[int, int]:
    """(windows of the real history in its recorded order the gate fired on, windows): drift kept."""
    windows = [pool[i:i + length] for i in range(0, len(pool) - length + 1)]
    return sum(newest_step(w, method, args)[0] for w in windows), len(windows)


def measure(args: argparse.Namespace) -> None:
    values, noisy, loads = load_runs(args.runs)
    rng = np.random.default_rng(args.seed)
    runs = max(len(v) for v in values.values())
    print(f"history gate power: {runs} real runs of this machine in {args.runs} (each a new pytest process; "
          f"host load average while recorded {min(loads):.1f} to {max(loads):.1f}), "
          f"step +{args.step:.0%}, {args.series} A/A and {args.series} stepped series per row, seed {args.seed}")
    for case, pool in sorted(values.items()):
        logs = np.log(pool)
        sd = 1.4826 * float(np.median(np.abs(logs - np.median(logs))))
        print(f"\n{case}: p50 median {np.median(pool) * 1e3:.4g} ms, run-to-run spread (robust sd) {sd:.1%}, "
              f"max/min {pool.max() / pool.min():.2f}; {noisy[case]} of {len(pool)} runs flagged noisy (used anyway)")
        print("\n| method | series length | runs after the step | A/A alarms | step detected | at the step ±1 |"
              "\n|---|---:|---:|---:|---:|---:|")
        for method in args.methods:
            for length in args.lengths:
                for window in (w for w in args.windows if args.min_segment <= w <= length - args.min_segment):
                    aa, hit, near = evaluate(rng, pool, method, length, window, args)
                    print(f"| {method} | {length} | {window} | {aa} / {args.series} | {hit} / {args.series} | "
                          f"{near} / {args.series} |", flush=True)
        for method in args.methods:
            for length in args.lengths:
                if length <= len(pool):
                    fired, total = recorded_order(pool, method, length, args)
                    print(f"- {method}, recorded order (drift kept), {total} windows of {length} runs: "
                          f"the gate fired on {fired}")


def main(argv: list[str]) -> None:
    from infermatrix.reports.changepoints import DEFAULT_ALPHA, DEFAULT_MIN_CHANGE, DEFAULT_MIN_SEGMENT
    from infermatrix.reports.history_gate import MIN_POINTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step_name", required=True)
    p = sub.add_parser("produce", help="N real runs, each a new pytest process, kept compact")
    p.add_argument("--count", type=int, default=60)
    p.add_argument("--out", type=Path, default=ROOT / "bench/data/history_gate_runs")
    m = sub.add_parser("measure", help="false alarms and power on series built from the real runs")
    m.add_argument("--runs", type=Path, default=ROOT / "bench/data/history_gate_runs")
    m.add_argument("--step", type=float, default=0.10, help="the injected slowdown (0.10: +10 %%)")
    m.add_argument("--series", type=int, default=20, help="A/A series and stepped series per row")
    m.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[20, 30, 40])
    m.add_argument("--windows", type=lambda s: [int(x) for x in s.split(",")], default=[3, 5, 8, 10, 15, 20])
    m.add_argument("--methods", type=lambda s: s.split(","), default=["fast"],
                   help="fast (the gate's: the fast core of each side), median, COST/TEST (ruptures' "
                        "cost l1, l2 or rank for the candidates: l1/fast), asv (needs asv installed)")
    m.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    m.add_argument("--min-change", type=float, default=DEFAULT_MIN_CHANGE)
    m.add_argument("--min-segment", type=int, default=DEFAULT_MIN_SEGMENT)
    m.add_argument("--min-points", type=int, default=MIN_POINTS)
    m.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    produce(args) if args.step_name == "produce" else measure(args)


if __name__ == "__main__":
    main(sys.argv[1:])
