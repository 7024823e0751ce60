"""The per-engine memory figures by both methods of runner/memory.py, side by side.

``load_rss_bytes`` and ``run_peak_rss_bytes`` must mean the same whether a fresh interpreter
("subprocess") or a child of the preloaded fork server ("fork") measures them; only the cost per
case should differ. For each case this builds (or takes from the engine cache) the engine, then
measures it ``--repeats`` times by each method, the methods interleaved so drift on a shared host
falls on both alike, and prints per method the mean and standard deviation of each figure, the
idle baseline, and the seconds per case (each server's start is printed apart: it is paid once per
pytest process). Run it alone on the host:

    flock /tmp/infermatrix-bench.lock python bench/memory_methods.py --repeats 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from infermatrix.core.schema import Case
from infermatrix.engines import get_engine
from infermatrix.engines.cache import EngineCache
from infermatrix.models.builtin import register_builtin_models
from infermatrix.runner import memory_client
from infermatrix.runner.memory import engine_memory, server_profile
from infermatrix.runner.session import RunSession

MIB = 2 ** 20
METHODS = ("subprocess", "fork")
DEFAULT_CASES = ("tiny-cnn:torch", "tiny-cnn:onnxruntime", "tiny-cnn:openvino",
                 "tiny-bert:torch", "tiny-bert:onnxruntime", "tiny-bert:openvino")


def parse_case(text: str) -> Case:
    """``model:engine`` (fp32, batch 1, CPU), or ``model:engine:batch``."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"case {text!r}; expected model:engine or model:engine:batch")
    return Case(parts[0], parts[1], "fp32", int(parts[2]) if len(parts) == 3 else 1, "cpu")


def _stat(values: list[float]) -> str:
    if any(v is None for v in values):
        return "null"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean / MIB:7.2f} ± {sd / MIB:5.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", type=parse_case, default=[parse_case(c) for c in DEFAULT_CASES])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--build-only", action="store_true", help="build the cases' engines and stop (before a timed run)")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("INFERMATRIX_CACHE", Path.home() / ".cache" / "infermatrix")))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    register_builtin_models()
    session = RunSession(EngineCache(args.cache))
    entries = {case: session.engine(case).entry.path for case in args.cases}  # builds: not timed
    session.close()  # also stops a server; the one below is started on purpose, timed apart
    if args.build_only:
        return 0
    for profile in sorted({server_profile(get_engine(c.engine), c.precision, c.model) for c in args.cases}):
        begin = time.perf_counter()
        ready = memory_client.start(profile)
        print(f"fork server {profile!r}: started in {time.perf_counter() - begin:.2f} s wall ({ready['seconds']:.2f} s "
              f"of imports; {ready['python_threads']} Python thread(s); missing: {sorted(ready['missing']) or 'none'})")
    runs: dict[tuple[Case, str], list[tuple[dict, float]]] = {}
    for _ in range(args.repeats):
        for case in args.cases:
            for method in METHODS:
                t0 = time.perf_counter()
                info = engine_memory(case, entries[case], cache_root=args.cache, method=method)
                runs.setdefault((case, method), []).append((info, time.perf_counter() - t0))
                if info.get("memory_error"):
                    print(f"{case.id} {method}: {info['memory_error'].splitlines()[0]}")
    memory_client.shutdown()
    print(f"\n{args.repeats} repetitions per case and method; MiB, mean ± sd")
    print(f"{'case':44} {'method':10} {'load_rss':>15} {'run_peak_rss':>15} {'idle_rss':>9} {'s/case':>7}")
    seconds = {m: [] for m in METHODS}
    for case in args.cases:
        for method in METHODS:
            got = runs[(case, method)]
            seconds[method] += [s for _, s in got]
            print(f"{case.id:44} {method:10} {_stat([i['load_rss_bytes'] for i, _ in got]):>15} "
                  f"{_stat([i['run_peak_rss_bytes'] for i, _ in got]):>15} "
                  f"{statistics.fmean(i['idle_rss_bytes'] or 0 for i, _ in got) / MIB:9.1f} "
                  f"{statistics.fmean(s for _, s in got):7.2f}")
    for method in METHODS:
        print(f"mean seconds per case, {method}: {statistics.fmean(seconds[method]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
