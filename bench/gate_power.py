"""Measure how trustworthy the regression gate is on this machine, in the protocol users run.

Runs one tiny-model case as N A/A pairs (the same code on both sides) and N A/B pairs (NEW
slowed by an injected fraction of its own latency, see bench/slowdown_engine.py) and counts how
often the gate flags each. Two protocols:

* ``--protocol ab`` (default): ``infermatrix ab`` — BASE and NEW in one job, one pytest worker
  per side, alternating blocks (what the README recommends for CI and what
  .github/workflows/gpu-bench.yml runs); the injected slowdown reaches NEW through
  ``--new-env``, exactly as a user's second environment or git ref would;
* ``--protocol processes``: BASE and NEW are separate pytest processes compared with
  ``infermatrix compare``, as two CI jobs are (the flow that does not hold on shared runners).

Both use the quiet profile the README recommends: pinned to one core (taskset), one intra-op
thread, GC off.

    python bench/gate_power.py --pairs 20 --slowdown 0.10
    python bench/gate_power.py --pairs 20 --protocol processes
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLOWDOWN_ENV = "INFERMATRIX_INJECTED_SLOWDOWN"


def _selection(args: argparse.Namespace, cache: Path) -> list[str]:
    sel = ["--models", args.model, "--engines", "torch_slowdown", "--precisions", "fp32", "--batch-sizes", "1",
           "-p", "bench.slowdown_engine", "--engine-cache", str(cache)]
    return sel + (["--threads", str(args.threads)] if args.threads else [])


def _pinned(args: argparse.Namespace, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(args.pin), *cmd] if args.pin is not None and shutil.which("taskset") else cmd


def _env(slowdown: float) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", **{SLOWDOWN_ENV: str(slowdown)},
                PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def ab_pair(args: argparse.Namespace, work: Path, slowdown: float) -> bool:
    """One `infermatrix ab` run; True when the gate flags NEW as slower."""
    cmd = _pinned(args, [sys.executable, "-m", "infermatrix.commands", "ab", "--blocks", str(args.blocks),
                         "--rounds", str(args.rounds // args.blocks), "--threshold", args.threshold,
                         "--alpha", str(args.alpha), "--out", str(work / "ab"),
                         "--base-env", f"{SLOWDOWN_ENV}=0", "--new-env", f"{SLOWDOWN_ENV}={slowdown}",
                         "--", *_selection(args, work / "cache")])
    res = subprocess.run(cmd, env=_env(0.0), capture_output=True, text=True, cwd=ROOT)
    if res.returncode not in (0, 1):
        raise SystemExit(f"infermatrix ab failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res.returncode == 1


def processes_pair(args: argparse.Namespace, work: Path, slowdown: float, tag: str) -> bool:
    """BASE and NEW as two separate pytest processes, then `infermatrix compare`."""
    runs = []
    for side, fraction in (("base", 0.0), ("new", slowdown)):
        out = work / f"{tag}-{side}.json"
        cmd = _pinned(args, [sys.executable, "-m", "pytest", "perf_tests/test_latency.py", *_selection(args, work / "cache"),
                             "--latency-rounds", str(args.rounds), "--no-engine-memory", "-q", "-p", "no:cacheprovider",
                             "--benchmark-json", str(out), "--benchmark-disable-gc"])
        res = subprocess.run(cmd, env=_env(fraction), capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            raise SystemExit(f"benchmark run failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        runs.append(out)
    res = subprocess.run([sys.executable, "-m", "infermatrix.commands", "compare", *map(str, runs), "--threshold",
                          args.threshold, "--alpha", str(args.alpha)], capture_output=True, text=True, cwd=ROOT)
    if res.returncode not in (0, 1):
        raise SystemExit(f"infermatrix compare failed ({res.returncode}): {res.stderr}")
    return res.returncode == 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--slowdown", type=float, default=0.10, help="injected slowdown of the B runs (fraction)")
    p.add_argument("--model", default="tiny-cnn")
    p.add_argument("--rounds", type=int, default=400, help="timed rounds per side (ab: split over the blocks)")
    p.add_argument("--blocks", type=int, default=10, help="ab: alternating blocks per side")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (0: the runtime's default)")
    p.add_argument("--pin", type=int, default=1, help="CPU to pin to with taskset")
    p.add_argument("--no-pin", dest="pin", action="store_const", const=None)
    p.add_argument("--threshold", default="median=5%")
    p.add_argument("--protocol", choices=("ab", "processes"), default="ab")
    p.add_argument("--alpha", type=float, default=0.01)
    args = p.parse_args(argv)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gate-power-") as tmp:
        work = Path(tmp)
        counts = {"A/A": 0, "A/B": 0}
        for i in range(args.pairs):
            for label, slowdown in (("A/A", 0.0), ("A/B", args.slowdown)):
                hit = (ab_pair(args, work, slowdown) if args.protocol == "ab"
                       else processes_pair(args, work, slowdown, f"{i}-{label[-1]}"))
                counts[label] += hit
                print(f"pair {i + 1:2d} {label}: {'FLAGGED' if hit else 'not flagged'}", flush=True)
    profile = f"protocol={args.protocol} pin={args.pin} threads={args.threads or 'default'} rounds={args.rounds}"
    if args.protocol == "ab":
        profile += f" blocks={args.blocks}"
    print(f"\n{args.model} torch eager bs1, {profile}, gc off, gate: {args.threshold} and Mann-Whitney p<{args.alpha}")
    print(f"A/A (no change):          flagged {counts['A/A']:2d} / {args.pairs}   (goal <= 1)")
    print(f"A/B (+{args.slowdown:.0%} injected):   flagged {counts['A/B']:2d} / {args.pairs}   (goal >= 19)")
    print(f"took {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
