"""Verify the GPU path on a lent GPU: one command, at most ten minutes, one markdown table.

Runs the GPU latency matrix (every installed engine, the GPU's default precisions) on resnet50
and distilbert at batch 1 and 8, one pytest run per model so a model that runs out of time still
leaves the other's results, then prints: case, p50, speedup vs eager fp32 of the same run, GPU
(CUDA-event) vs host p50, GPU memory, energy per inference, equivalence; throttled, failed and
skipped cases below it. Exit codes: 0 all measured cases passed, 1 a case failed or the time ran
out, 2 no CUDA device here (with the reason).

    python bench/gpu_check.py                       # the table; files under reports-out/gpu-check/
    python bench/gpu_check.py -- --no-engine-memory # anything after -- goes to pytest
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("resnet50", "distilbert")
BASELINE = ("torch", "fp32")  # eager PyTorch fp32: the speedup reference, as in seed 001
#: the engines that fit 10 minutes: torch.compile's modes compile once per batch size (minutes
#: each, cold) and are added with --engines
ENGINES = ("torch", "torchscript", "onnxruntime", "onnxruntime_trt", "tensorrt")


def pytest_command(model: str, args: argparse.Namespace, json_path: Path, xml_path: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", "perf_tests/test_latency.py", "-m", "gpu", "--devices", "cuda",
            "--models", model, "--engines", args.engines, "--batch-sizes", args.batch_sizes,
            "--latency-time", str(args.latency_time),
            "--benchmark-json", str(json_path), "--junitxml", str(xml_path), "-p", "no:cacheprovider", "-q",
            *args.pytest_args]


def run_pytest(cmd: list[str], timeout_s: float) -> tuple[int | None, str]:
    """(exit code or None on timeout, output tail). On a timeout the whole process group goes:
    the memory subprocesses that pytest started too."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(timeout_s, 1.0))
        return proc.returncode, out[-4000:]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, (out or "")[-4000:]


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


def _case_id(x: dict[str, Any]) -> str:
    """The case's test id (scenarios/case.py Case.id), to match JUnit outcomes with saved benchmarks."""
    return f"{x['model']}-{x['engine']}-{_precision(x)}-bs{x['batch_size']}-{x['device']}"


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
    baseline = {(x["model"], x["batch_size"], x["device"]): x["p50_s"] for x in (b["extra_info"] for b in benches)
                if (x["engine"], x["precision"]) == BASELINE}
    lines = [hardware_line(runs[0].get("machine_info", {})) if runs else "GPU: no run was saved", "",
             "| case | p50 | speedup vs eager fp32 | GPU / host p50 (host ÷ GPU) | GPU memory | energy / inference "
             "| equivalence |", "|---|---:|---:|---:|---:|---:|---|"]
    throttled, measured = [], set()
    for x in sorted((b["extra_info"] for b in benches), key=lambda x: (x["model"], x["batch_size"], x["p50_s"])):
        measured.add(_case_id(x))
        base = baseline.get((x["model"], x["batch_size"], x["device"]))
        speedup = f"{base / x['p50_s']:.2f}×" if base and x["p50_s"] else "n/a (no eager fp32)"
        ratio = x.get("host_overhead_ratio")
        gpu_vs_host = (f"{_ms(x.get('gpu_p50_s'))} / {_ms(x['p50_s'])}" + (f" ({ratio:.2f}×)" if ratio else "")
                       if x.get("gpu_p50_s") is not None else "n/a")
        mem = x.get("gpu_peak_bytes")
        memory = f"{mem / 2 ** 20:.0f} MiB" if mem is not None else "n/a"
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


def no_cuda_reason() -> str | None:
    from infermatrix.scenarios.gpu_telemetry import cuda_absent_reason
    return cuda_absent_reason()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma list; one pytest run each (default: %(default)s)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma list (default: %(default)s)")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--latency-time", type=float, default=0.2, help="measured seconds per case (default %(default)s)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole check (default %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "reports-out" / "gpu-check", help="a new folder is made here")
    args = p.parse_args(ours)
    args.pytest_args = extra
    why = no_cuda_reason()
    if why:
        print(f"gpu_check: no CUDA device is present, nothing was run: {why}", file=sys.stderr)
        return 2
    from infermatrix.reports.folders import new_out_dir
    out = new_out_dir(args.out)
    deadline = time.monotonic() + args.timeout
    runs, outcomes, problems = [], {}, []
    models = args.models.split(",")
    for i, model in enumerate(models):
        # each model gets an equal share of what is left, so the first cannot starve the rest
        left = (deadline - time.monotonic()) / (len(models) - i)
        if left < 5:
            problems.append(f"{model}: not run, the {args.timeout:g} s were spent")
            continue
        json_path, xml_path = out / f"{model}.json", out / f"{model}.xml"
        cmd = pytest_command(model, args, json_path, xml_path)
        print("$ " + " ".join(cmd[1:]), flush=True)
        code, tail = run_pytest(cmd, left)
        if code is None:
            problems.append(f"{model}: timed out (the check has {args.timeout:g} s in all); output tail:\n{tail}")
        elif code not in (0, 1):  # 1 = some test failed (listed below); anything else: pytest itself failed
            problems.append(f"{model}: pytest exited with code {code}; output tail:\n{tail}")
        if json_path.exists():
            runs.append(json.loads(json_path.read_text()))
        outcomes.update(junit_outcomes(xml_path))
    report = render_report(runs, outcomes)
    (out / "gpu_check.md").write_text(report + "\n")
    print("\n" + report)
    failed = failed_cases(outcomes)
    for problem in problems:
        print(f"\ngpu_check: {problem}", file=sys.stderr)
    if failed:
        print(f"\ngpu_check: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
    print(f"\nfiles: {out}")
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
