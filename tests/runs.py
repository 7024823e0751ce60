"""Constructing pytest-benchmark JSON runs for the reports/ tests (no benchmark is run)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from infermatrix.scenarios.measure import latency_summary


def bench(model="tiny-cnn", engine="torch", precision="fp32", bs=1, device="cpu", samples=None,
          median=1e-3, seed=0, save_data=True, memory_measured=True) -> dict:
    if samples is None:
        samples = list(np.random.default_rng(seed).normal(median, median * 0.02, 200).clip(median * 0.5))
    s = sorted(samples)
    case = f"{model}-{engine}-{precision}-bs{bs}-{device}"
    p = lambda q: float(np.percentile(s, q))  # noqa: E731
    stats = {"min": s[0], "max": s[-1], "mean": float(np.mean(s)), "median": p(50), "rounds": len(s),
             "stddev": float(np.std(s)), "iqr": p(75) - p(25), "q1": p(25), "q3": p(75)}
    if save_data:
        stats["data"] = [float(x) for x in samples]
    return {"group": f"{model}-bs{bs}-{device}", "name": f"test_latency[{case}]",
            "fullname": f"perf_tests/test_latency.py::test_latency[{case}]", "params": {"case": case},
            "param": case, "stats": stats,
            "extra_info": {"model": model, "engine": engine, "precision": precision, "batch_size": bs,
                           # what test_latency records: p90/p99 null (with the reason) below 10/100 samples
                           "device": device, **latency_summary(samples, bs),
                           **memory(engine, precision, device, measured=memory_measured), "equivalence": "pass"}}


MIB = 2 ** 20
#: how the constructed weights shrink with precision (fp32 100 MiB)
SCALE = {"fp32": 1.0, "fp16": 0.5, "bf16": 0.5, "int8": 0.25}


def memory(engine="torch", precision="fp32", device="cpu", measured=True) -> dict:
    """Constructed per-engine memory fields as test_latency records them (runner/memory.py);
    ``measured=False`` gives a run saved before they existed (artifact size only)."""
    scale = SCALE.get(precision, 1.0)
    info = {"artifact_bytes": 0 if engine == "torch" else int(100 * MIB * scale)}
    if measured:
        info.update(load_rss_bytes=int((110 if engine == "torch" else 100) * MIB * scale) + 6 * MIB,
                    run_peak_rss_bytes=12 * MIB, gpu_peak_bytes=int(90 * MIB * scale) if device == "cuda" else None,
                    idle_rss_bytes=650 * MIB, memory_method="isolated subprocess: imports baseline, load, 3 warm-up + 10 rounds")
    return info


def write_run(path: Path, benchmarks: list[dict], cpu="AMD EPYC", gpu=None, when="2026-11-25T00:00:00") -> Path:
    machine = {"node": "n", "processor": "x86_64", "cpu": {"brand_raw": cpu},
               "infermatrix": {"cpu_model": cpu, "gpu": {"name": gpu} if gpu else None}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine_info": machine, "commit_info": {}, "benchmarks": benchmarks,
                                "datetime": when, "version": "5.3.1"}))
    return path
