"""``infermatrix watch HISTORY``: the gate learned from a history kept per hardware kind
(reports/history_gate.py), for main; ``infermatrix ab`` stays the gate of a pull request.

Prints a markdown table (fit for ``$GITHUB_STEP_SUMMARY``): per kind and case, the newest value,
the case's own noise band and its change points, "regressed at commit X by Y % (band ±Z %)".
Exit codes: 0 fine (improvements and noisy cases included), 1 a case whose newest change point is a
regression, 2 bad input (no such history, no such kind, fewer complete runs than the gate needs).
"""
from __future__ import annotations

import argparse
from pathlib import Path

EXIT_OK, EXIT_REGRESSION = 0, 1


def _percent(text: str) -> float:
    raw = text.strip().removesuffix("%").strip()
    try:
        value = float(raw) / 100.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage (e.g. 5 or 5%)") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a percentage from 0 to below 100")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from infermatrix.reports.changepoints import DEFAULT_ALPHA, DEFAULT_MIN_CHANGE, DEFAULT_MIN_SEGMENT
    from infermatrix.reports.history_gate import METRICS, MIN_POINTS

    parser.add_argument("history", type=Path, help="the history folder (<kind id>/runs/*.json, from infermatrix merge)")
    parser.add_argument("--kind", help="the hardware kind to watch (`infermatrix kind` prints this host's); "
                                       "default: every kind of the history, each its own series")
    parser.add_argument("--metric", choices=METRICS, default="p50", help="the latency percentile watched (default p50)")
    parser.add_argument("--min-change", type=_percent, default=DEFAULT_MIN_CHANGE,
                        help=f"the smallest step worth a verdict, in %% (default {DEFAULT_MIN_CHANGE * 100:g})")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help=f"false-alarm rate of one judged step: the test's level (default {DEFAULT_ALPHA})")
    parser.add_argument("--min-runs", type=int, default=MIN_POINTS,
                        help=f"complete runs a kind needs before the gate judges it (default {MIN_POINTS})")
    parser.add_argument("--min-segment", type=int, default=DEFAULT_MIN_SEGMENT,
                        help=f"the fewest runs on each side of a step (default {DEFAULT_MIN_SEGMENT}); a step in the "
                             "newest runs is called once enough of them show it beyond the case's noise")
    parser.add_argument("--markdown", type=Path, help="also write the markdown table to this file")


def run(args: argparse.Namespace) -> int:
    from infermatrix.core import history_layout as layout
    from infermatrix.reports.history import InputError
    from infermatrix.reports.history_gate import analyse_history, history_kinds

    if args.min_runs < 2 * args.min_segment or args.min_segment < 1:
        raise InputError(f"--min-runs {args.min_runs} and --min-segment {args.min_segment}: a step needs "
                         f"--min-segment >= 1 runs on each side, so --min-runs must be at least twice it")
    if not 0.0 < args.alpha < 1.0:
        raise InputError(f"--alpha {args.alpha}: expected a probability in (0, 1)")
    kinds = history_kinds(args.history, args.kind)
    sections, short, regressed = [], [], False
    for kind in kinds:
        complete = len(layout.runs(args.history, kind))
        incomplete = len(layout.runs(args.history, kind, include_incomplete=True)) - complete
        if complete < args.min_runs:
            short.append(f"kind `{kind}` has {complete} complete run(s) ({incomplete} incomplete, not read); "
                         f"the gate needs at least {args.min_runs}")
            continue
        trends = analyse_history(args.history, kind, args.metric, min_points=args.min_runs, alpha=args.alpha,
                                 min_change=args.min_change, min_segment=args.min_segment)
        regressed |= any(t.regressed for t in trends)
        sections.append(kind_section(kind, layout.kind_label(args.history, kind), complete, incomplete, trends, args))
    if not sections:
        raise InputError("; ".join(short))
    text = "\n".join([f"### infermatrix watch: `{args.history}` ({args.metric})", "",
                      *(f"- waiting for runs: {s}" for s in short), *([""] if short else []), *sections])
    print(text)
    if args.markdown:
        try:
            args.markdown.write_text(text)
        except OSError as exc:
            raise InputError(f"--markdown {args.markdown}: cannot write it ({exc.strerror or exc})") from None
    return EXIT_REGRESSION if regressed else EXIT_OK


_VERDICT = {"regressed": "🔴 regressed", "improved": "🟢 improved", "steady": "steady"}


def _verdict(trend, min_runs: int) -> tuple[str, str]:
    """(verdict, why) of one case: its newest change point's direction, or why it has none. Runs
    measured under host interference are no evidence: the newest of them get no verdict."""
    clean = sum(not p.noisy for p in trend.points)
    if trend.band_rel is None:
        noisy = len(trend.points) - clean
        if noisy:
            return "noisy", (f"no verdict: {noisy} of {len(trend.points)} runs measured under host interference, "
                             f"{clean} clean (needs {min_runs})")
        return "new", f"{clean} run(s) of this case (needs {min_runs})"
    trailing = next((k for k, p in enumerate(reversed(trend.points)) if not p.noisy), len(trend.points))
    why = f"no verdict on the newest {trailing} run(s): measured under host interference" if trailing else ""
    if not trend.change_points:
        return ("noisy" if trailing else "steady"), why
    return ("regressed" if trend.regressed else "improved"), why


def _cell(text: str) -> str:
    # a case label or a reason is text from a file: a "|" in it would split the table's row
    return text.replace("|", "/")


def kind_section(kind: str, label: str, complete: int, incomplete: int, trends, args) -> str:
    """One kind's table: a row per case, the regressions first."""
    rows = [(t, *_verdict(t, args.min_runs)) for t in trends]
    order = {"regressed": 0, "improved": 1, "noisy": 2, "new": 3, "steady": 4}
    counts = {v: sum(r[1] == v for r in rows) for v in order}
    lines = [f"#### kind `{kind}`", "", f"{_cell(label)}: {complete} complete runs"
             + (f" ({incomplete} incomplete, not read)" if incomplete else "") + ".", "",
             f"Gate: change points of each case's {args.metric} (ruptures PELT, rank cost), a segment's level the "
             f"mean of its fastest third of runs; a step stands beyond what the case's own noise shows at any split "
             f"(bootstrap, alpha {args.alpha:g}) and at least {args.min_change:.1%}. Runs measured under host "
             "interference are no evidence.", "",
             " · ".join(f"{n} {v}" for v, n in counts.items()), "",
             f"| case | verdict | newest {args.metric} | band (one run) | change points |", "|---|---|---:|---:|---|"]
    for trend, verdict, why in sorted(rows, key=lambda r: (order[r[1]], r[0].case)):
        newest = next((p.value(args.metric) for p in reversed(trend.points) if p.value(args.metric)), None)
        steps = "; ".join(c.sentence() for c in trend.change_points)
        lines.append("| {} | {} | {} | {} | {} |".format(
            _cell(trend.case), _VERDICT.get(verdict, verdict),
            f"{newest * 1e3:.4g} ms" if newest else "", f"±{trend.band_rel:.1%}" if trend.band_rel is not None else "",
            _cell("; ".join(filter(None, (steps, why))))))
    return "\n".join(lines) + "\n"
