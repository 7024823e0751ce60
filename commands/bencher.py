"""``infermatrix bencher RUN.json... --out bmf.json``: runs as Bencher Metric Format JSON
(reports/bencher_format.py), and the exact ``bencher run`` that uploads them with the hardware kind
as the testbed. Exit 0 written; 2 input that cannot be one Bencher report (nothing written). Reads
JSON only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infermatrix.reports.bencher_format import BencherExportError, bencher_command, export_runs, write_bmf
from infermatrix.reports.history import InputError

from .main import EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Bencher's own CLI flags (its clap definitions: services/cli/src/parser/run.rs, measure.rs)
    parser.epilog = (
        "It prints the upload, with BENCHER_API_TOKEN in the environment: bencher run --project SLUG "
        "--branch BRANCH --hash COMMIT --testbed KIND --adapter json --file BMF.json --err. Latency is in "
        "nanoseconds and throughput in items per second (Bencher's built-in latency and throughput "
        "measures); create the custom measures once per project: bencher measure create SLUG --name "
        "'Latency p99' --slug latency-p99 --units 'nanoseconds (ns)', and likewise load-rss, "
        "run-peak-rss and gpu-peak-memory with --units bytes.")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN.json",
                        help="runs of one hardware kind and one commit: a merged run from the history "
                             "(HISTORY/<kind>/runs/...), or an unsplit pytest-benchmark JSON")
    parser.add_argument("--out", required=True, type=Path, metavar="BMF.json", help="the BMF file to write")
    parser.add_argument("--project", metavar="SLUG",
                        help="the Bencher project in the printed command (default: $BENCHER_PROJECT)")
    parser.add_argument("--branch", metavar="NAME",
                        help="the Bencher branch in the printed command (default: the run's git branch)")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="export an incomplete merged run or one shard (the cases it lacks are simply "
                             "absent in Bencher, so this is off by default)")


def run(args: argparse.Namespace) -> int:
    try:
        export = export_runs(args.runs, allow_incomplete=args.allow_incomplete)
    except BencherExportError as exc:
        raise InputError(str(exc)) from None
    if not export.bmf:
        raise InputError(f"no case of {', '.join(map(str, args.runs))} has a figure Bencher can take "
                         f"(records by kind: {export.skipped_kinds or 'none'})")
    out = write_bmf(export, args.out)
    measures = sorted({slug for metrics in export.bmf.values() for slug in metrics})
    print(f"{out}: {len(export.bmf)} benchmarks, measures {', '.join(measures)}; testbed {export.testbed}")
    if export.skipped_kinds:
        print("not exported (no Bencher measure for these records): "
              + ", ".join(f"{n} {kind}" for kind, n in sorted(export.skipped_kinds.items())), file=sys.stderr)
    print(bencher_command(export, out, project=args.project, branch=args.branch))
    return EXIT_OK
