"""``infermatrix kind [--json]``: this host's hardware kind (core/hardware_kind.py).

Prints the kind's id, the name a history keeps this host's runs under and that the workflows pick
the durations file by (``perf_tests/durations/<id>.json``); ``--json`` prints the whole kind (id,
label, fields). It reads /proc/cpuinfo, nvidia-smi and the installed packages' metadata and never
imports torch, so a workflow can ask before anything heavy loads.
"""
from __future__ import annotations

import argparse
import json

from infermatrix.fixtures.machine import host_kind

from .main import EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", dest="as_json",
                        help="print the whole kind as JSON (id, label, fields) instead of its id")


def run(args: argparse.Namespace) -> int:
    kind = host_kind()
    print(json.dumps(kind.to_json(), indent=2) if args.as_json else kind.id)
    return EXIT_OK
