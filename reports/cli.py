"""The ``infermatrix`` console script: ``compare`` (the gate) and ``report`` (charts).

Exit codes: 0 fine, 1 a regression, 2 a usage or input error. Saved runs are only read.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .history import InputError, latest_per_case, load_frame

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infermatrix", description=__doc__.splitlines()[0],
                                     epilog="infermatrix export --pipeline NAME --out DIR: the VL pipeline's "
                                            "standalone artifacts (see fixtures/vl_export.py)")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_ = sub.add_parser("compare", help="statistical regression gate between two sets of saved runs")
    cmp_.add_argument("base", help="baseline: a run JSON or a storage directory (its latest run per case)")
    cmp_.add_argument("new", help="candidate: a run JSON or a storage directory")
    cmp_.add_argument("--threshold", default="median=10%", help="per-metric thresholds, e.g. median=10%%,p99=15%%")
    cmp_.add_argument("--alpha", type=float, default=0.01, help="significance level of the Mann-Whitney U test")
    cmp_.add_argument("--markdown", type=Path, help="also write the markdown table to this file")
    cmp_.add_argument("--allow-hardware-mismatch", action="store_true",
                      help="compare runs from different CPUs/GPUs anyway")
    rep = sub.add_parser("report", help="charts and summary.md from saved runs")
    rep.add_argument("runs", nargs="+", help="run JSON files and/or storage directories")
    rep.add_argument("--out", type=Path, required=True, help="directory for the PNGs and summary.md")
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    from .gate import compare_frames, parse_thresholds, to_markdown
    thresholds = parse_thresholds(args.threshold)
    base_frame, new_frame = load_frame([args.base]), load_frame([args.new])
    base_hw, new_hw = base_frame["machine"].iloc[-1], new_frame["machine"].iloc[-1]
    if base_hw != new_hw and not args.allow_hardware_mismatch:
        raise InputError(f"refusing to compare different hardware: base ran on {base_hw!r}, new on {new_hw!r} "
                         "(pass --allow-hardware-mismatch to compare anyway)")
    base, new = latest_per_case(base_frame), latest_per_case(new_frame)
    if not set(base.index) & set(new.index):
        raise InputError(f"no case appears in both runs (base has {len(base)}, new has {len(new)})")
    results = compare_frames(base, new, thresholds, args.alpha)
    if not any(r.tested for r in results if r.change):
        print("warning: the runs hold no raw samples (save with --benchmark-save-data); "
              "this is a threshold-only comparison", file=sys.stderr)
    text = to_markdown(results, thresholds, args.alpha, str(args.base), str(args.new))
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return EXIT_REGRESSION if any(r.verdict == "slower" for r in results) else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from . import charts, scenario_charts
    from .gate import DEFAULT_THRESHOLDS, compare_frames
    from .summary import summary_markdown
    frame = load_frame(args.runs)
    latency = frame[frame["is_latency"]].astype({"batch_size": int})
    if latency.empty:  # scenario runs only: their charts, no matrix summary
        made = [charts.load_curves(frame, _out_dir(args.out)), *charts.accuracy_charts(frame, args.out),
                scenario_charts.generation_chart(frame, args.out), scenario_charts.pipeline_chart(frame, args.out)]
        made = [p for p in made if p is not None]
        if not made:
            raise InputError("the runs hold no latency, load, accuracy, generation or pipeline benchmarks to chart")
        print(f"wrote {', '.join(p.name for p in made)} to {args.out}")
        return EXIT_OK
    out = _out_dir(args.out)
    latest = latest_per_case(latency).reset_index()
    runs = list(dict.fromkeys(latency["run"]))
    regressions = set()
    for prev, cur in zip(runs, runs[1:]):  # each run against the one before it
        a = latest_per_case(latency[latency["run"] == prev])
        b = latest_per_case(latency[latency["run"] == cur])
        regressions |= {(r.case, cur) for r in compare_frames(a, b, DEFAULT_THRESHOLDS, 0.01) if r.verdict == "slower"}
    made = [charts.latency_by_engine(latest, out), charts.throughput_vs_batch(latest, out),
            charts.memory_by_precision(latest, out), charts.speedup_heatmap(latest, out),
            charts.cpu_vs_gpu(latest, out), charts.history_trend(latency, regressions, out),
            charts.load_curves(frame, out), *charts.accuracy_charts(frame, out),
            scenario_charts.generation_chart(frame, out), scenario_charts.pipeline_chart(frame, out)]
    names = [p.name for p in made if p is not None]
    (out / "summary.md").write_text(summary_markdown(latest.set_index("case", drop=False), runs, names))
    print(f"wrote {len(names)} charts and summary.md to {out}")
    return EXIT_OK


def _out_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return cmd_compare(args) if args.command == "compare" else cmd_report(args)
    except InputError as exc:
        print(f"infermatrix: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
