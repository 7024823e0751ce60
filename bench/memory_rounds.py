"""Do two saved runs give the same per-engine memory? Compares ``load_rss_bytes`` and
``run_peak_rss_bytes`` case by case (and how many runs each child made, from ``memory_method``).

Made to check that the memory child's early stop (runner/memory.py ``run_until_peak_holds``: stop
once the high-water mark held for 3 runs, at most 3 warm-up + 10 rounds) gives the figures of the
13 fixed runs it replaced: run the same matrix once with each and compare.

    python bench/memory_rounds.py OLD_RUN.json NEW_RUN.json [--tolerance-mib 1]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

MIB = 1024 * 1024


def figures(path: Path) -> dict[str, dict]:
    out = {}
    for bench in json.loads(path.read_text())["benchmarks"]:
        info = bench.get("extra_info") or {}
        if info.get("load_rss_bytes") is None:
            continue
        runs = re.search(r"\((\d+) runs\)", info.get("memory_method") or "")
        out[bench["name"]] = {"load": info["load_rss_bytes"], "peak": info.get("run_peak_rss_bytes"),
                              "runs": int(runs.group(1)) if runs else 13}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--tolerance-mib", type=float, default=1.0,
                        help="a difference above this many MiB is listed (default 1)")
    args = parser.parse_args(argv)
    old, new = figures(args.old), figures(args.new)
    common = sorted(set(old) & set(new))
    if not common:
        parser.error(f"no case has memory figures in both {args.old} and {args.new}")
    rows, dl, dp = [], [], []
    for name in common:
        a, b = old[name], new[name]
        d_load = (b["load"] - a["load"]) / MIB
        d_peak = None if a["peak"] is None or b["peak"] is None else (b["peak"] - a["peak"]) / MIB
        dl.append(abs(d_load))
        if d_peak is not None:
            dp.append(abs(d_peak))
        if abs(d_load) > args.tolerance_mib or (d_peak is not None and abs(d_peak) > args.tolerance_mib):
            peak_a = "-" if a["peak"] is None else f"{a['peak'] / MIB:.1f}"
            peak_b = "-" if b["peak"] is None else f"{b['peak'] / MIB:.1f}"
            rows.append(f"| {name} | {a['load'] / MIB:.1f} | {b['load'] / MIB:.1f} | {peak_a} | {peak_b} | "
                        f"{a['runs']} | {b['runs']} |")
    runs_new = [new[n]["runs"] for n in common]
    runs_old = [old[n]["runs"] for n in common]
    print(f"{len(common)} cases with memory in both runs; runs per child: old median {statistics.median(runs_old):g}, "
          f"new median {statistics.median(runs_new):g} (min {min(runs_new)}, max {max(runs_new)})")
    print(f"|load_rss difference|: median {statistics.median(dl):.2f} MiB, max {max(dl):.2f} MiB")
    if dp:
        print(f"|run_peak_rss difference|: median {statistics.median(dp):.2f} MiB, max {max(dp):.2f} MiB")
    print(f"cases differing by more than {args.tolerance_mib:g} MiB: {len(rows)}")
    if rows:
        print("| case | load old MiB | load new MiB | peak old MiB | peak new MiB | runs old | runs new |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
