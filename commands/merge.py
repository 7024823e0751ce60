"""``infermatrix merge SHARD.json... --into HISTORY``: the fan-in of a sharded run.

The shards (each pytest process's ``--benchmark-json`` file) become one run stored under its
hardware kind in HISTORY (core/history_layout.py). Exit 0: a complete run stored; 1: an incomplete
run stored, marked as such and naming its missing shards and cases (0 with --accept-incomplete);
2: input that cannot be one run, or a run already in the history (nothing written). Reads JSON only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infermatrix.core.history_layout import RunExistsError
from infermatrix.reports.history import InputError
from infermatrix.reports.merge_runs import merge_shards, missing_lines, store

from .main import EXIT_OK

EXIT_INCOMPLETE = 1   # stored, but marked incomplete: never read as "no regression"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", type=Path, metavar="SHARD.json",
                        help="every shard's pytest-benchmark JSON (--benchmark-json) of one run")
    parser.add_argument("--into", required=True, type=Path, metavar="HISTORY",
                        help="the history folder: the run goes to HISTORY/<kind id>/runs/")
    parser.add_argument("--accept-incomplete", action="store_true",
                        help="exit 0 when shards or cases are missing (the run is still stored as incomplete)")


def run(args: argparse.Namespace) -> int:
    merged = merge_shards(args.shards)
    try:
        path = store(args.into, merged)
    except RunExistsError as exc:
        raise InputError(str(exc)) from None
    record = merged.record
    commit = record.commit[:12] if record.commit else "no commit"
    summary = (f"{len(record.shards_present)} of {record.splits} shards, {len(merged.data['benchmarks'])} "
               f"benchmarks, {len(record.outcomes)} outcomes, commit {commit}, kind {record.kind}")
    if record.complete:
        print(f"merged run ({summary}): {path}")
        return EXIT_OK
    print(f"merged INCOMPLETE run ({summary}): {path}", file=sys.stderr)
    for line in missing_lines(record):
        print(line, file=sys.stderr)
    if args.accept_incomplete:
        return EXIT_OK
    print("an incomplete run is never read as 'no regression'; pass --accept-incomplete to exit 0",
          file=sys.stderr)
    return EXIT_INCOMPLETE
