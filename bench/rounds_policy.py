"""Today's rounds plan against the precision-driven one (runner/rounds.py), on real engines.

For each model and engine (fp32, batch 1, CPU; built or taken from the engine cache), each
repetition measures the case once with each policy, in alternating order so drift of the host
hits both alike, timing the whole of what a latency case spends on its rounds: the plan's own
calls, pytest-benchmark's warm-up rounds and the timed rounds (emulated as pedantic does them:
``perf_counter`` around each ``iterations=1`` call). It prints, per case and policy, the rounds,
the seconds, the median of each repetition, how far the repetitions' medians spread, and the
precision the new plan reached (half the median's 95 % CI over the median, runner/median_ci.py).

    flock /tmp/infermatrix-bench.lock python bench/rounds_policy.py            # ~2 min, warm cache
    python bench/rounds_policy.py --models tiny-cnn --engines torch --reps 5 --p99
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def old_plan(run: Callable[[Any], Any], prepared: Any, latency_time: float) -> dict[str, Any]:
    """runner/rounds.py's plan before issue 17: 2 calls, a 3-call probe, rounds filling
    ``latency_time`` (10 to 2000), warm-up 10 % of them."""
    for _ in range(2):
        run(prepared)
    probe = []
    for _ in range(3):
        start = time.perf_counter()
        run(prepared)
        probe.append(time.perf_counter() - start)
    rounds = min(2000, max(10, int(latency_time / max(statistics.median(probe), 1e-6))))
    return {"rounds": rounds, "warmup_rounds": max(3, rounds // 10)}


def new_plan(run: Callable[[Any], Any], prepared: Any, latency_time: float, percentiles) -> dict[str, Any]:
    from infermatrix.runner.rounds import plan_rounds
    plan = plan_rounds(run, prepared, latency_time, precision=0.01, percentiles=percentiles)
    return {"rounds": plan.rounds, "warmup_rounds": plan.warmup_rounds, "settled": plan.warmup_settled,
            "reason": plan.reason}


def measure(policy: str, run: Callable[[Any], Any], prepared: Any, latency_time: float) -> dict[str, Any]:
    """One latency case's rounds under ``policy``: the plan, the warm-up rounds, the timed rounds."""
    from infermatrix.runner.median_ci import median_ci_rel
    start = time.perf_counter()
    plan = (old_plan(run, prepared, latency_time) if policy == "today" else
            new_plan(run, prepared, latency_time, (50, 90, 99) if policy == "new+p99" else (50, 90)))
    for _ in range(plan["warmup_rounds"]):
        run(prepared)
    samples = []
    for _ in range(plan["rounds"]):
        t0 = time.perf_counter()
        run(prepared)
        samples.append(time.perf_counter() - t0)
    return {**plan, "seconds": time.perf_counter() - start, "timed_s": sum(samples),
            "median": statistics.median(samples), "ci": median_ci_rel(samples)}


def spread(values: list[float]) -> float:
    return max(values) / min(values) - 1 if len(values) > 1 else 0.0


def report(case: str, results: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = []
    # medians of the repetitions: one repetition preempted for its whole length (seen: a 716 ms
    # median of a 31 ms model) would move a mean of them by more than any policy does
    base = statistics.median(r["median"] for r in results["today"])
    for policy, runs in results.items():
        medians = [r["median"] for r in runs]
        cis = [r["ci"] for r in runs if r["ci"] is not None]
        settled = [r.get("settled") for r in runs]
        lines.append(
            f"| {case} | {policy} | {statistics.median(r['rounds'] for r in runs):.0f} "
            f"| {statistics.fmean(r['seconds'] for r in runs):.3f} "
            f"| {' '.join(f'{m * 1e3:.3f}' for m in medians)} | {spread(medians):.1%} "
            f"| {statistics.median(medians) / base - 1:+.1%} "
            f"| {statistics.median(cis):.2%} / {max(cis):.2%} "
            f"| {'n/a' if settled[0] is None else f'{sum(bool(s) for s in settled)}/{len(settled)}'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-cnn,tiny-bert,resnet18")
    parser.add_argument("--engines", default="torch,onnxruntime")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--latency-time", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--p99", action="store_true", help="also the new plan with p99 asked for")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from infermatrix.core.schema import Case
    from infermatrix.engines.cache import EngineCache
    from infermatrix.fixtures.options import DEFAULT_CACHE
    from infermatrix.models.builtin import register_builtin_models
    from infermatrix.runner.session import RunSession

    register_builtin_models()
    session = RunSession(EngineCache(Path(os.environ.get("INFERMATRIX_CACHE", DEFAULT_CACHE)).expanduser()),
                         threads=args.threads)
    policies = ["today", "new"] + (["new+p99"] if args.p99 else [])
    load = os.getloadavg()[0]
    began = time.perf_counter()
    rows, totals = [], {p: 0.0 for p in policies}
    for model in args.models.split(","):
        for engine_name in args.engines.split(","):
            case = Case(model, engine_name, "fp32", 1, "cpu")
            engine = session.engine(case).engine
            prepared = engine.prepare(session.inputs(case))
            results: dict[str, list[dict[str, Any]]] = {p: [] for p in policies}
            for rep in range(args.reps):
                order = policies if rep % 2 == 0 else policies[::-1]  # ABBA: drift hits both alike
                for policy in order:
                    results[policy].append(measure(policy, engine.run, prepared, args.latency_time))
            for policy in policies:
                totals[policy] += sum(r["seconds"] for r in results[policy]) / args.reps
            rows += report(case.id, results)
            print(f"{case.id}: new reasons: {sorted({r['reason'] for r in results['new']})}", flush=True)
    print(f"\nload average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
          f"{time.perf_counter() - began:.0f} s in all; {os.cpu_count()} CPUs; --latency-time {args.latency_time}\n")
    print("| case | policy | rounds | s per case | median ms per rep | rep spread | median vs today | CI reached med / max "
          "| settled |")
    print("|---|---|---:|---:|---|---:|---:|---|---|")
    print("\n".join(rows))
    print("\nseconds per case, summed over the cases: " + ", ".join(f"{p} {s:.2f}" for p, s in totals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
