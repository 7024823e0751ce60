"""``infermatrix publish HISTORY --out SITE``: the history as a static web page (reports/site/).

SITE/index.html opens from a file, offline: per hardware kind the heat map of speedups with
equivalence status, each case's trend (p50, p90/p99 band, change points), memory and energy, the
int8 schemes side by side, and every point linked to its run file (copied under SITE/runs/).
Exit 0 written, 2 bad input (no history, an unknown kind, an --out folder publish did not write).
"""
from __future__ import annotations

import argparse
from pathlib import Path

EXIT_OK = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("history", type=Path, help="the history folder: HISTORY/<kind id>/runs/*.json")
    parser.add_argument("--out", type=Path, required=True,
                        help="the site's folder: absent, empty, or a site publish wrote before (replaced whole)")
    parser.add_argument("--kind", action="append", dest="kinds", metavar="ID",
                        help="publish only this hardware kind (repeatable; default: every kind in HISTORY)")
    parser.add_argument("--title", default="infermatrix benchmark history", help="the page's title")


def run(args: argparse.Namespace) -> int:
    from infermatrix.reports.site.publish import publish_site
    done = publish_site(args.history, args.out, args.kinds, args.title)
    incomplete = f", {done.incomplete} incomplete (marked, not drawn)" if done.incomplete else ""
    print(f"wrote {done.index}: {len(done.kinds)} hardware kind(s), {done.runs} run(s){incomplete}; "
          f"open it in a browser (file://{done.index.resolve()})")
    return EXIT_OK
