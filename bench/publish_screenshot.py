"""Remake docs/img/publish.png, the picture of a published history in docs/publish.md.

One real saved run (pytest-benchmark JSON, e.g. ``--benchmark-autosave``'s file of the default CPU
matrix) is replayed as a history of its own hardware kind (read from the run's machine_info, never
made up): ``--runs`` complete runs on their own commits, one a day up to the run's date, with a
small deterministic wobble (tests/publish_history.py) and a ``--step`` slowdown of one case from
the ``--step-at``-th commit on, plus one incomplete run that lacks that case. ``infermatrix
publish`` writes the site, and headless Chromium (Debian's /usr/bin/chromium, driven by playwright,
launched as tests/test_publish_browser.py does) takes the picture with the stepped case's trend
selected.

    python bench/publish_screenshot.py RUN.json docs/img/publish.png
    python bench/publish_screenshot.py RUN.json out.png --case resnet50-onnxruntime-fp32-bs1-cpu --height 0

The stepped case must have been measured on a quiet host (no ``interference`` in its record): a
point under host interference is no evidence to the history gate, so its step would not be drawn.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from infermatrix.commands.main import main as infermatrix  # noqa: E402
from infermatrix.core.hardware_kind import kind_of  # noqa: E402
from tests.publish_history import commit_of, series, store  # noqa: E402
from tests.test_publish_browser import ARGS, CHROMIUM  # noqa: E402

LATENCY = "test_latency[{}]"


def latency_cases(run: dict) -> dict[str, dict]:
    """The run's latency cases by label, each with its extra_info."""
    return {b["name"][len("test_latency["):-1]: b.get("extra_info") or {}
            for b in run["benchmarks"] if b["name"].startswith("test_latency[") and b.get("stats")}


def build_history(run: dict, history: Path, case: str, runs: int, step_at: int, step: float):
    """The replayed history of ``run``'s own kind; returns that kind."""
    kind = kind_of(run["machine_info"])
    when = datetime.fromisoformat(run["datetime"])
    start = when - timedelta(days=runs - 1)     # the last complete run on the real run's date
    series(history, kind, run, runs, step_at=step_at, step_cases=(LATENCY.format(case),), step=step, start=start)
    node = next(b["fullname"] for b in run["benchmarks"] if b["name"] == LATENCY.format(case))
    store(history, kind, run, when - timedelta(hours=12), commit_of(runs), complete=False, cases_missing=(node,))
    return kind


def screenshot(index: Path, kind_id: str, case: str, out: Path, height: int) -> None:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": height or 900})
        page.goto(f"{index.as_uri()}#kind={kind_id}&case={quote(case)}")
        page.wait_for_selector("#trend-chart svg")
        title = page.text_content("#trend-title")
        if title != case:
            raise SystemExit(f"the page shows the trend of {title!r}, not of {case!r}")
        page.screenshot(path=str(out), full_page=not height)
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a saved run's pytest-benchmark JSON")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--case", default="resnet50-onnxruntime-fp32-bs1-cpu", help="the case given the step")
    parser.add_argument("--runs", type=int, default=16, help="complete runs in the replayed history")
    parser.add_argument("--step-at", type=int, default=8, help="the first stepped run, counted from 0")
    parser.add_argument("--step", type=float, default=1.3, help="the stepped case's slowdown factor")
    parser.add_argument("--height", type=int, default=1650, help="the picture's height in px (0: the full page)")
    args = parser.parse_args()

    run = json.loads(args.run.read_text())
    cases = latency_cases(run)
    if args.case not in cases:
        raise SystemExit(f"--case {args.case!r} is not a latency case of {args.run}; its cases: {sorted(cases)}")
    if cases[args.case].get("interference"):
        raise SystemExit(f"{args.case} was measured under host interference ({cases[args.case]['interference']}); "
                         f"the gate takes no evidence from it: choose a case measured on a quiet host")
    with tempfile.TemporaryDirectory() as tmp:
        history, site = Path(tmp) / "history", Path(tmp) / "site"
        kind = build_history(run, history, args.case, args.runs, args.step_at, args.step)
        if infermatrix(["publish", str(history), "--out", str(site)]) != 0:
            raise SystemExit("infermatrix publish failed")
        screenshot(site / "index.html", kind.id, args.case, args.out, args.height)
    print(f"wrote {args.out}: kind {kind.id}, {args.runs} runs, {args.case} x{args.step} from run {args.step_at}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
