"""Measure how trustworthy `infermatrix compare` is on this machine.

Runs one tiny-model case as N A/A pairs (the same code twice) and N A/B pairs (NEW slowed by
an injected fraction of its own latency, see bench/slowdown_engine.py) and counts how often
`infermatrix compare` flags each. Two protocols:

* ``--protocol processes``: BASE and NEW are separate pytest processes, as two CI jobs are;
* ``--protocol interleaved`` (default): one process times BASE and NEW in alternating blocks
  (bench/interleaved_pair.py) and the blocks are merged into a BASE and a NEW run file.

Both use the gating profile: pinned to one core (taskset), one intra-op thread, GC off.

    python bench/gate_power.py --pairs 20 --slowdown 0.10
    python bench/gate_power.py --pairs 20 --protocol processes
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pytest_run(args: argparse.Namespace, out: Path, slowdown: float, cache: Path, interleaved: bool = False) -> None:
    target = ["bench/interleaved_pair.py"] if interleaved else [
        "perf_tests/test_latency.py", "--models", args.model, "--engines", "torch_slowdown",
        "--precisions", "fp32", "--batch-sizes", "1", "--latency-rounds", str(args.rounds)]
    cmd = [sys.executable, "-m", "pytest", *target, "-q", "-p", "no:cacheprovider", "-p", "bench.slowdown_engine",
           "--engine-cache", str(cache), "--benchmark-json", str(out), "--benchmark-disable-gc"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.pin is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(args.pin)] + cmd
    env = dict(os.environ, INFERMATRIX_INJECTED_SLOWDOWN=str(slowdown), HF_HUB_OFFLINE="1",
               INFERMATRIX_PAIR_MODEL=args.model, INFERMATRIX_PAIR_ROUNDS=str(args.rounds // args.blocks),
               INFERMATRIX_PAIR_BLOCKS=str(args.blocks),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"benchmark run failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def split_pair(both: Path, base: Path, new: Path) -> None:
    """One interleaved run -> a BASE and a NEW run file, each one benchmark of merged samples."""
    data = json.loads(both.read_text())
    for side, path in (("base", base), ("new", new)):
        blocks = sorted((b for b in data["benchmarks"] if b["extra_info"]["side"] == side),
                        key=lambda b: b["extra_info"]["block"])
        samples = [x for b in blocks for x in b["stats"]["data"]]
        ordered = sorted(samples)
        p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
        stats = {"min": ordered[0], "max": ordered[-1], "mean": statistics.fmean(samples),
                 "median": statistics.median(samples), "rounds": len(samples), "data": samples}
        bench = {"name": "interleaved_pair", "fullname": "bench/interleaved_pair.py::pair", "group": "pair",
                 "stats": stats, "extra_info": {"p99_s": p99, "blocks": len(blocks)}}
        path.write_text(json.dumps({**data, "benchmarks": [bench]}))


def flagged(args: argparse.Namespace, base: Path, new: Path) -> bool:
    res = subprocess.run([sys.executable, "-m", "reports.cli", "compare", str(base), str(new),
                          "--threshold", args.threshold, "--alpha", str(args.alpha)],
                         capture_output=True, text=True, cwd=ROOT)
    if res.returncode not in (0, 1):
        raise SystemExit(f"infermatrix compare failed ({res.returncode}): {res.stderr}")
    return res.returncode == 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--slowdown", type=float, default=0.10, help="injected slowdown of the B runs (fraction)")
    p.add_argument("--model", default="tiny-cnn")
    p.add_argument("--rounds", type=int, default=400)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (0: the runtime's default)")
    p.add_argument("--pin", type=int, default=1, help="CPU to pin to with taskset")
    p.add_argument("--no-pin", dest="pin", action="store_const", const=None)
    p.add_argument("--threshold", default="median=5%")
    p.add_argument("--protocol", choices=("interleaved", "processes"), default="interleaved")
    p.add_argument("--blocks", type=int, default=10, help="interleaved: alternating blocks per side")
    p.add_argument("--alpha", type=float, default=0.01)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gate-power-") as tmp:
        work = Path(tmp)
        counts = {"A/A": 0, "A/B": 0}
        for i in range(args.pairs):
            for label, slowdown in (("A/A", 0.0), ("A/B", args.slowdown)):
                base, new = work / f"{i}-{label[-1]}-base.json", work / f"{i}-{label[-1]}-new.json"
                if args.protocol == "interleaved":
                    both = work / f"{i}-{label[-1]}-pair.json"
                    pytest_run(args, both, slowdown, work / "cache", interleaved=True)
                    split_pair(both, base, new)
                else:
                    pytest_run(args, base, 0.0, work / "cache")
                    pytest_run(args, new, slowdown, work / "cache")
                hit = flagged(args, base, new)
                counts[label] += hit
                print(f"pair {i + 1:2d} {label}: {'FLAGGED' if hit else 'not flagged'}", flush=True)
    profile = (f"protocol={args.protocol} pin={args.pin} threads={args.threads or 'default'} "
               f"rounds={args.rounds} gc=off")
    print(f"\n{args.model} torch eager bs1, {profile}, gate: {args.threshold} and Mann-Whitney p<{args.alpha}")
    print(f"A/A (no change):          flagged {counts['A/A']:2d} / {args.pairs}   (goal <= 1)")
    print(f"A/B (+{args.slowdown:.0%} injected):   flagged {counts['A/B']:2d} / {args.pairs}   (goal >= 19)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
