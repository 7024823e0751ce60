"""``infermatrix ab [options] -- PYTEST SELECTION``: BASE and NEW benchmarked in one job, in
alternating blocks of rounds (runner/ab.py), then the compare gate (reports/cli.py).

Exit codes: 0 NEW passes, 1 a regression (or a case that fails or is missing under NEW), 2 a
usage or input error (BASE failing its own cases included: there is nothing to gate against).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infermatrix.reports.cli import gate
from infermatrix.reports.gate import parse_thresholds
from infermatrix.reports.history import InputError
from infermatrix.runner.ab import Side, parse_env, run_ab

from .main import EXIT_REGRESSION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Runs the pytest selection after -- under BASE and NEW (git refs of --repo, Python "
                          "interpreters, extra environment variables), alternating blocks of rounds so machine "
                          "drift cancels, then applies the compare gate.")
    for label in ("base", "new"):
        parser.add_argument(f"--{label}-ref", help=f"git ref of --repo for {label.upper()} (default: the working tree)")
        parser.add_argument(f"--{label}-python", default=sys.executable,
                            help=f"Python interpreter of {label.upper()}'s environment (default: this one)")
        parser.add_argument(f"--{label}-env", action="append", metavar="KEY=VALUE",
                            help=f"extra environment variable for {label.upper()} (repeatable)")
    parser.add_argument("--repo", type=Path, default=Path.cwd(),
                        help="the repository holding perf_tests (default: .)")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks per side and case (default 10)")
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds per block (default 40)")
    parser.add_argument("--tests", default="perf_tests/test_latency.py", help="the benchmarks to run (default: latency)")
    parser.add_argument("--out", type=Path, default=Path("ab-runs"),
                        help="runs are kept in a new folder under this one (default ab-runs; not the history dir)")
    parser.add_argument("--threshold", default="median=5%", help="per-metric thresholds (default median=5%%)")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level of the Mann-Whitney U test")
    parser.add_argument("--markdown", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds to wait for a worker's block (default 3600)")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER,
                        help="after --: the selection, e.g. -- --models resnet50 --engines onnxruntime --batch-sizes 1")


def run(args: argparse.Namespace) -> int:
    parse_thresholds(args.threshold)  # a bad threshold fails before minutes of benchmarking
    if args.rounds < 1:
        raise InputError(f"--rounds {args.rounds}: expected >= 1")
    selection = [a for a in args.pytest_args if a != "--"]
    sides = [Side(label, getattr(args, f"{label}_ref"), getattr(args, f"{label}_python"),
                  parse_env(getattr(args, f"{label}_env"), label)) for label in ("base", "new")]
    worker_args = [args.tests, *selection, "--latency-rounds", str(args.rounds), "--benchmark-disable-gc"]
    ab = run_ab(sides[0], sides[1], worker_args, args.blocks, args.out, args.repo.resolve(), args.timeout)
    print(f"BASE: {sides[0].describe()}\nNEW:  {sides[1].describe()}\nruns and worker logs: {ab.folder}\n")
    if "base" in ab.failures:  # the baseline itself is broken: there is nothing to gate against
        raise InputError(f"BASE does not pass its own cases, so nothing can be gated: {ab.failures['base']}")
    verdict = gate(ab.base, ab.new, args, fail_on_missing=True) if ab.new else EXIT_REGRESSION
    if "new" in ab.failures:  # a case that fails under NEW (outputs differ, an error) is never a pass
        print(f"infermatrix ab: NEW fails: {ab.failures['new']}", file=sys.stderr)
        return EXIT_REGRESSION
    return verdict
