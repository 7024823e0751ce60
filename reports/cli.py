"""``infermatrix compare`` (the statistical gate between saved runs, also ``infermatrix ab``'s
verdict) and ``infermatrix report`` (charts and summary.md): their arguments and their functions.

The program and its dispatch live in commands/main.py; this module reads saved JSON only and
imports nothing outside reports/ and core/. A command returns its exit code (0 fine, 1 a
regression) or raises InputError, which the program turns into exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .history import InputError, latest_per_case, latest_per_machine, load_frame, runs_by_machine

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """``infermatrix compare``'s arguments."""
    parser.add_argument("base", help="baseline: a run JSON or a storage directory (its latest run per case)")
    parser.add_argument("new", help="candidate: a run JSON or a storage directory")
    parser.add_argument("--threshold", default="median=10%", help="per-metric thresholds, e.g. median=10%%,p99=15%%")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level of the Mann-Whitney U test")
    parser.add_argument("--markdown", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--allow-hardware-mismatch", action="store_true",
                        help="compare runs from different CPUs/GPUs anyway")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """``infermatrix report``'s arguments."""
    parser.add_argument("runs", nargs="+", help="run JSON files and/or storage directories")
    parser.add_argument("--out", type=Path, required=True, help="directory for the PNGs and summary.md")


def cmd_compare(args: argparse.Namespace) -> int:
    return gate(args.base, args.new, args)


def gate(base_path, new_path, args: argparse.Namespace, fail_on_missing: bool = False) -> int:
    """The statistical gate between two sets of saved runs; prints (and writes) the markdown table."""
    from .gate import compare_frames, parse_thresholds, to_markdown
    thresholds = parse_thresholds(args.threshold)
    base_frame, new_frame = load_frame([base_path]), load_frame([new_path])
    # every run on each side, not the last one: a storage dir may hold several machines
    # the hardware, not the whole kind: an A/B of a library upgrade compares two kinds of one machine
    base_hw, new_hw = sorted(set(base_frame["hardware"])), sorted(set(new_frame["hardware"]))
    if len(set(base_hw) | set(new_hw)) > 1 and not getattr(args, "allow_hardware_mismatch", False):
        raise InputError("refusing to compare different hardware: base ran on "
                         f"{', '.join(map(repr, base_hw))}, new on {', '.join(map(repr, new_hw))} "
                         "(every run must come from one machine; pass --allow-hardware-mismatch to compare anyway)")
    base, new = latest_per_case(base_frame), latest_per_case(new_frame)
    if not set(base.index) & set(new.index):
        raise InputError(f"no case appears in both runs (base has {len(base)}, new has {len(new)})")
    results = compare_frames(base, new, thresholds, args.alpha)
    if not any(r.tested for r in results if r.change):
        print("warning: the runs hold no raw samples (save with --benchmark-save-data); "
              "this is a threshold-only comparison", file=sys.stderr)
    text = to_markdown(results, thresholds, args.alpha, str(base_path), str(new_path))
    print(text)
    if args.markdown:
        try:
            args.markdown.write_text(text)
        except OSError as exc:  # bad input, exit 2: not a regression's exit 1
            raise InputError(f"--markdown {args.markdown}: cannot write it ({exc.strerror or exc})") from None
    # ab: BASE and NEW ran the same selection, so a case on one side only is a case that failed
    bad = ("slower", "missing", "new") if fail_on_missing else ("slower",)
    return EXIT_REGRESSION if any(r.verdict in bad for r in results) else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from . import charts, scenario_charts
    from .int8_schemes import load_checks
    from .summary import summary_markdown
    from .time_section import load_times
    frame = load_frame(args.runs)
    latency = frame[frame["is_latency"]].astype({"batch_size": int})
    if latency.empty:  # scenario runs only: their charts, no matrix summary
        made = [charts.load_curves(frame, _out_dir(args.out)), *charts.accuracy_charts(frame, args.out),
                *scenario_charts.scenario_charts(frame, args.out)]
        made = [p for p in made if p is not None]
        if not made:
            raise InputError("the runs hold no benchmark with a chart (latency, load, accuracy, generation, pipeline, "
                             "or a scenario whose record declares one)")
        print(f"wrote {', '.join(p.name for p in made)} to {args.out}")
        return EXIT_OK
    out = _out_dir(args.out)
    # per machine, each case from the newest run holding it, its baseline from that same run
    latest = latest_per_machine(latency)
    regressions = trend_regressions(latency)
    made = [charts.latency_by_engine(latest, out), charts.throughput_vs_batch(latest, out),
            charts.memory_by_precision(latest, out), charts.speedup_heatmap(latest, out),
            charts.cpu_vs_gpu(latest, out), charts.history_trend(latency, regressions, out),
            charts.load_curves(frame, out), *charts.accuracy_charts(frame, out),
            *scenario_charts.scenario_charts(frame, out)]
    names = [p.name for p in made if p is not None]
    checks = load_checks(args.runs)  # every equivalence check, failed int8 schemes included
    (out / "summary.md").write_text(summary_markdown(latest, latency["path"].nunique(), names, checks,
                                                     load_times(args.runs)))
    print(f"wrote {len(names)} charts and summary.md to {out}")
    return EXIT_OK


def trend_regressions(latency) -> set[tuple[str, str]]:
    """``(case, run path)`` for each case slower than in the previous run **of the same
    machine** (the default gate); runs of different machines are never compared."""
    from .gate import DEFAULT_THRESHOLDS, compare_frames
    out = set()
    for paths in runs_by_machine(latency).values():
        for prev, cur in zip(paths, paths[1:]):
            a = latest_per_case(latency[latency["path"] == prev])
            b = latest_per_case(latency[latency["path"] == cur])
            out |= {(r.case, cur) for r in compare_frames(a, b, DEFAULT_THRESHOLDS, 0.01) if r.verdict == "slower"}
    return out


def _out_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out

