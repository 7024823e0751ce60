"""bench/gpu_check.py's report: saved pytest-benchmark runs and JUnit outcomes in, markdown out (pure).

Besides the table it prints the checks a GPU run must decide and that no CPU test can: that the GPU
compute figure covered every sample and sits below host latency, which ONNX Runtime nodes left the
GPU, whether the TensorRT engines (and the TensorRT EP's library floor) loaded, whether NVML saw the
runtimes' device memory, and whether TensorRT ran from two threads at once (the concurrency sweep).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from infermatrix.core.schema import read_record



def junit_outcomes(xml_path: Path) -> dict[str, tuple[str, str]]:
    """``{case id: (outcome, message)}`` from pytest's JUnit XML (passed / failed / error / skipped)."""
    if not xml_path.exists():
        return {}
    outcomes = {}
    for tc in ET.parse(xml_path).getroot().iter("testcase"):
        name = tc.get("name", "")
        case = name[name.index("[") + 1:-1] if "[" in name else name
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = tc.find(tag)
            if node is not None:
                outcome, message = {"failure": "failed"}.get(tag, tag), node.get("message") or (node.text or "")
                break
        outcomes[case] = (outcome, message.strip().splitlines()[0] if message.strip() else "")
    return outcomes


# ---- the report (pure: saved runs in, markdown out) ----
def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.3f} ms"


def _precision(x: dict[str, Any]) -> str:
    return x["precision"] + (f"-{x['int8_scheme']}" if x.get("int8_scheme") else "")


def _label(x: dict[str, Any]) -> str:
    return f"{x['model']} bs{x['batch_size']} {x['engine']} {_precision(x)}"


def hardware_line(machine: dict[str, Any]) -> str:
    """The GPUs, driver and library versions of a saved run, for naming the hardware with the table."""
    info = machine.get("infermatrix") or {}
    listed = info.get("gpus") or ([info["gpu"]] if info.get("gpu") else [])
    # the GPUs this run could use (NVML lists every GPU of the machine; cuda_index marks the visible ones)
    gpus = [g for g in listed if g.get("cuda_index") is not None] or listed
    if not gpus:
        return "GPU: none recorded in machine_info"
    described = []
    for g in gpus:
        facts = [f"cc {g.get('compute_capability') or g.get('capability')}" if g.get("compute_capability")
                 or g.get("capability") else "", f"{g['memory_bytes'] / 2 ** 30:.0f} GiB" if g.get("memory_bytes") else ""]
        facts = [f for f in facts if f]
        described.append(f"{g.get('name')}" + (f" ({', '.join(facts)})" if facts else ""))
    first = gpus[0]
    software = [f"driver {first['driver']}" if first.get("driver") else "",
                f"CUDA {first.get('driver_cuda') or first.get('cuda')}" if first.get("driver_cuda") or first.get("cuda") else "",
                *(f"{k} {v}" for k, v in sorted((info.get("libraries") or {}).items()))]
    return f"GPU: {'; '.join(described)}" + "".join(f"; {s}" for s in software if s)


def render_report(runs: list[dict[str, Any]], outcomes: dict[str, tuple[str, str]] | None = None) -> str:
    """The markdown table from saved pytest-benchmark runs (``--benchmark-json``) plus the
    failed/skipped cases (``outcomes``, from JUnit XML)."""
    outcomes = outcomes or {}
    benches = [b for run in runs for b in run.get("benchmarks", []) if b.get("extra_info", {}).get("model")]
    records = {id(b): read_record(b["extra_info"], str(b.get("name", ""))) for b in benches}
    p50 = {r.case: b["extra_info"]["p50_s"] for b in benches for r in [records[id(b)]]}
    lines = [hardware_line(runs[0].get("machine_info", {})) if runs else "GPU: no run was saved", "",
             "| case | host p50 | speedup vs reference | GPU compute / host p50 (host ÷ GPU) | GPU memory | energy / inference "
             "| equivalence |", "|---|---:|---:|---:|---:|---:|---|"]
    throttled, measured = [], set()
    engine_memory = memory_by_engine([b["extra_info"] for b in benches])
    for b in sorted(benches, key=lambda b: (b["extra_info"]["model"], b["extra_info"]["batch_size"], b["extra_info"]["p50_s"])):
        x, rec = b["extra_info"], records[id(b)]
        measured.add(rec.case.id)
        base = p50.get(rec.reference.of(rec.case)) if rec.reference else None  # the reference the run wrote
        speedup = f"{base / x['p50_s']:.2f}×" if base and x["p50_s"] else "n/a (no reference case)"
        ratio = x.get("host_overhead_ratio")
        gpu_vs_host = (f"{_ms(x.get('gpu_compute_p50_s'))} / {_ms(x['p50_s'])}" + (f" ({ratio:.2f}×)" if ratio else "")
                       if x.get("gpu_compute_p50_s") is not None else "n/a")
        mem, at = engine_memory.get((x["model"], x["engine"], x["precision"], x.get("int8_scheme")), (None, None))
        memory = f"{mem / 2 ** 20:.0f} MiB" + (f" (at bs{at})" if at != x["batch_size"] else "") if mem is not None else "n/a"
        joules = x.get("energy_j_per_inference")
        energy = f"{joules * 1e3:.2f} mJ ({x['avg_power_w']:.0f} W)" if joules is not None else "n/a"
        row = x.get("equivalence_row")
        equivalence = f"{x.get('equivalence', '?')}" + (f" ({row})" if row else "")
        lines.append(f"| {_label(x)} | {_ms(x['p50_s'])} | {speedup} | {gpu_vs_host} | {memory} | {energy} "
                     f"| {equivalence} |")
        if x.get("throttled"):
            throttled.append(f"- {_label(x)}: {', '.join(x.get('throttle_reasons') or []) or 'throttled'}")
    if throttled:
        lines += ["", "Clocks held down (NVML clock-event reasons) during:", *throttled]
    # a case whose equivalence failed is never timed: its figures come from the run's equivalence records
    checks = {r["id"]: r for run in runs for r in run.get("infermatrix_equivalence", [])}
    missing = sorted((case, o) for case, o in outcomes.items() if case not in measured and o[0] != "passed")
    if missing:
        lines += ["", "Not measured:"]
        for case, (outcome, message) in missing:
            r = checks.get(case)
            figures = (f" (equivalence {r['equivalence']}, row {r.get('equivalence_row')}, cosine "
                       f"{r.get('cosine_min')}, SQNR {r.get('sqnr_db_min')} dB)" if r else "")
            lines.append(f"- {case}: {outcome}: {message}{figures}")
    return "\n".join(lines)


def failed_cases(outcomes: dict[str, tuple[str, str]]) -> list[str]:
    return sorted(case for case, (outcome, _) in outcomes.items() if outcome in ("failed", "error"))




def memory_by_engine(benches: list[dict[str, Any]]) -> dict[tuple, tuple[int, int]]:
    """``{(model, engine, precision, scheme): (gpu_peak_bytes, batch measured at)}``: gpu_check
    measures memory once per engine, at its first batch size, and shows it on every row."""
    out: dict[tuple, tuple[int, int]] = {}
    for x in sorted(benches, key=lambda x: x["batch_size"]):
        key = (x["model"], x["engine"], x["precision"], x.get("int8_scheme"))
        if x.get("gpu_peak_bytes") is not None and key not in out:
            out[key] = (x["gpu_peak_bytes"], x["batch_size"])
    return out


def gpu_checks(runs: list[dict[str, Any]], outcomes: dict[str, tuple[str, str]]) -> tuple[list[str], int]:
    """The checks only a GPU run decides, as markdown lines, and how many of them failed."""
    infos = [b["extra_info"] for run in runs for b in run.get("benchmarks", []) if b.get("extra_info", {}).get("model")]
    lines, failed = ["", "Checks only a GPU decides:"], 0

    def check(ok: bool | None, text: str) -> None:
        nonlocal failed
        failed += ok is False
        lines.append(f"- {'ok' if ok else 'not decided' if ok is None else 'FAILED'}: {text}")

    # 1. GPU compute time means kernel time: every sample covered, never above the host's latency
    timed = [x for x in infos if x.get("gpu_compute_p50_s") is not None]
    uncovered = [f"{_label(x)} ({x['gpu_compute_uncovered']})" for x in timed if x.get("gpu_compute_uncovered")]
    above = [_label(x) for x in timed if x["gpu_compute_p50_s"] > 1.02 * x["p50_s"]]
    check(None if not timed else not uncovered,
          f"GPU compute samples covered by the spin in {len(timed) - len(uncovered)} of {len(timed)} cases"
          + (f"; samples dropped in {', '.join(uncovered)}" if uncovered else ""))
    check(None if not timed else not above, "GPU compute p50 at or below host p50 in every case"
          + (f"; above it (events on the wrong stream?) in {', '.join(above)}" if above else ""))
    # 2. ONNX Runtime nodes that left the GPU
    placed = [x for x in infos if "ort_cpu_nodes" in x]
    fallback = [f"{_label(x)}: {x['ort_cpu_fallback']}" for x in placed if x.get("ort_cpu_fallback")]
    shape_only = sum(1 for x in placed if x["ort_cpu_nodes"] and not x.get("ort_cpu_fallback"))
    check(None if not placed else not fallback,
          f"ONNX Runtime compute nodes stayed on the GPU in {len(placed) - len(fallback)} of {len(placed)} cases "
          f"({shape_only} with only ORT's shape nodes on the CPU)" + "".join(f"\n  - {f}" for f in fallback))
    # 3. the TensorRT engines loaded and ran (the EP's library floor, per-thread contexts in the sweep)
    for engine in ("tensorrt", "onnxruntime_trt"):
        mine = {c: o for c, o in outcomes.items() if f"-{engine}-" in c and not c.startswith("concurrency:")}
        ran = sorted(c for c, (o, _) in mine.items() if o == "passed")
        not_ran = sorted({f"{o}: {m}" for o, m in mine.values() if o != "passed"})
        check(None if not mine else bool(ran) and not any(o in ("failed", "error") for o, _ in mine.values()),
              f"{engine}: {len(ran)} of {len(mine)} cases ran" + "".join(f"\n  - {n}" for n in not_ran))
    sweeps = {c: o for c, o in outcomes.items() if c.startswith("concurrency:")}
    check(None if not sweeps else all(o == "passed" for o, _ in sweeps.values()),
          "two threads on one engine (concurrency sweep at 1,2): "
          + (", ".join(f"{c.split(':', 1)[1]} {o}{f' ({m})' if m and o != 'passed' else ''}"
                       for c, (o, m) in sorted(sweeps.items())) or "not run"))
    # 4. NVML saw each runtime's own device memory
    measured = [x for x in infos if "gpu_peak_reason" in x or x.get("gpu_peak_bytes") is not None]
    blind = sorted({f"{x['engine']}: {x['gpu_peak_reason']}" for x in measured if x.get("gpu_peak_reason")})
    check(None if not measured else not blind, f"GPU memory measured for {len(measured) - len(blind)} of "
          f"{len(measured)} engines" + "".join(f"\n  - {b}" for b in blind))
    return lines, failed
