"""Verify the GPU path on a GPU machine: one command, at most ten minutes even on a cold cache, one report.

Runs the GPU latency matrix (every installed engine, the GPU's default precisions) on resnet50 and
distilbert at batch 1 and 8 in phases, so a cold cache cannot eat the measurements and whatever runs
out of time still leaves a table:

1. **build**: the equivalence tests of every case (each engine built once into the cache, then
   checked against eager fp32), for every model; at most ``--build-share`` of the time;
2. **measure** each model: the first batch size with engine memory (one memory subprocess per
   engine, not per case), the other batch sizes without;
3. **concurrency**: a short sweep at 1 and 2 threads on the TensorRT engine (one context and one
   stream per thread), when it is installed.

Each pytest run streams its cases to the terminal as they finish, with the time spent. Then it
prints: case, host p50, speedup vs the case's reference (eager fp32) of the same run, GPU compute vs host p50, GPU memory,
energy per inference, equivalence; throttled, failed, skipped and unrun cases; and the checks only a
GPU decides (bench/gpu_check_report.py). Exit codes: 0 every case passed and no check failed, 1 a
case or check failed or the time ran out, 2 no CUDA device here (with the reason).

    python bench/gpu_check.py                       # the report; files under reports-out/gpu-check/
    python bench/gpu_check.py -- --latency-rounds 50 # anything after -- goes to every pytest run
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.gpu_check_report import failed_cases, gpu_checks, junit_outcomes, render_report  # noqa: E402

MODELS = ("resnet50", "distilbert")
#: the engines that fit 10 minutes: torch.compile's modes compile once per batch size (minutes
#: each, cold) and are added with --engines
ENGINES = ("torch", "torchscript", "onnxruntime", "onnxruntime_trt", "tensorrt")
#: the lines of pytest -v worth echoing: a finished case
OUTCOMES = (" PASSED", " FAILED", " SKIPPED", " ERROR", " XFAIL")


def pytest_command(test: str, model: str, args: argparse.Namespace, batch_sizes: str, out: Path, tag: str,
                   *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", test, "-m", "gpu", "--devices", "cuda", "--models", model,
            "--engines", args.engines, "--batch-sizes", batch_sizes, "--latency-time", str(args.latency_time),
            "--benchmark-json", str(out / f"{tag}.json"), "--junitxml", str(out / f"{tag}.xml"),
            "-p", "no:cacheprovider", "-v", "--no-header", *extra, *args.pytest_args]


def run_pytest(cmd: list[str], timeout_s: float, label: str, began: float) -> tuple[int | None, str]:
    """(exit code or None on timeout, output tail), echoing each finished case with the time spent.
    On a timeout the whole process group goes: the memory subprocesses that pytest started too."""
    print(f"[{time.monotonic() - began:5.0f} s] {label}: $ {' '.join(cmd[3:])}", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    tail: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            tail.append(line)
            del tail[:-200]
            if any(o in line for o in OUTCOMES) and "::" in line:
                print(f"[{time.monotonic() - began:5.0f} s]   {line.strip()}", flush=True)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=max(timeout_s, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    reader.join(5)
    return code, "".join(tail)[-4000:]


def no_cuda_reason() -> str | None:
    from infermatrix.scenarios.gpu_telemetry import cuda_absent_reason
    return cuda_absent_reason()


class Phases:
    """The runs of one check: each one's files, outcomes, and what went wrong, against one deadline."""

    def __init__(self, out: Path, timeout_s: float) -> None:
        self.out, self.began = out, time.monotonic()
        self.deadline = self.began + timeout_s
        self.runs: list[dict] = []
        self.outcomes: dict[str, tuple[str, str]] = {}
        self.problems: list[str] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, cmd: list[str], tag: str, budget_s: float, label: str, keep_timing: bool = True,
            outcome_prefix: str = "") -> bool:
        """Run one pytest command within ``budget_s``; False when it did not finish."""
        if budget_s < 5:
            self.problems.append(f"{label}: not run, the time was spent")
            return False
        code, tail = run_pytest(cmd, budget_s, label, self.began)
        json_path, xml_path = self.out / f"{tag}.json", self.out / f"{tag}.xml"
        if keep_timing and json_path.exists():
            self.runs.append(json.loads(json_path.read_text()))
        found = junit_outcomes(xml_path)
        self.outcomes.update({outcome_prefix + c: o for c, o in found.items()})
        if code is None:
            self.problems.append(f"{label}: timed out after {budget_s:.0f} s; output tail:\n{tail}")
            return False
        # 1: a case failed (listed below), 5: nothing collected; anything else, or a 1 that names no
        # case, is pytest itself failing
        if code not in (0, 1, 5) or (code == 1 and not found):
            self.problems.append(f"{label}: pytest exited with code {code}; output tail:\n{tail}")
        return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma list (default: %(default)s)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma list (default: %(default)s)")
    p.add_argument("--batch-sizes", default="1,8", help="the first is measured with engine memory (default %(default)s)")
    p.add_argument("--latency-time", type=float, default=0.2, help="measured seconds per case (default %(default)s)")
    p.add_argument("--timeout", type=float, default=570.0, help="seconds for the whole check (default %(default)s)")
    p.add_argument("--build-share", type=float, default=0.5, help="most of the time the builds may take")
    p.add_argument("--out", type=Path, default=ROOT / "reports-out" / "gpu-check", help="a new folder is made here")
    args = p.parse_args(ours)
    args.pytest_args = extra
    why = no_cuda_reason()
    if why:
        print(f"gpu_check: no CUDA device is present, nothing was run: {why}", file=sys.stderr)
        return 2
    from infermatrix.core.folders import new_out_dir
    out = new_out_dir(args.out)
    phases = Phases(out, args.timeout)
    models = args.models.split(",")
    first, *rest = args.batch_sizes.split(",")
    built = []
    build_until = phases.began + args.build_share * args.timeout
    for i, model in enumerate(models):  # 1. build (and check) everything first
        budget = (build_until - time.monotonic()) / (len(models) - i)
        if phases.run(pytest_command("perf_tests/test_equivalence.py", model, args, args.batch_sizes, out,
                                     f"{model}-build"), f"{model}-build", budget, f"{model}: build + check",
                      keep_timing=False):
            built.append(model)
    for i, model in enumerate(built):  # 2. measure what was built
        model_until = time.monotonic() + (phases.left() - 30) / (len(built) - i)  # 30 s kept for step 3
        phases.run(pytest_command("perf_tests/test_latency.py", model, args, first, out, f"{model}-bs{first}"),
                   f"{model}-bs{first}", (model_until - time.monotonic()) / (2 if rest else 1),
                   f"{model}: bs{first} with memory")
        if rest:
            phases.run(pytest_command("perf_tests/test_latency.py", model, args, ",".join(rest), out, f"{model}-rest",
                                      "--no-engine-memory"), f"{model}-rest", model_until - time.monotonic(),
                       f"{model}: bs{','.join(rest)}")
    if built and "tensorrt" in args.engines.split(","):  # 3. TensorRT from two threads at once
        phases.run(pytest_command("perf_tests/test_load.py::test_concurrency_sweep", built[0], args, "1", out,
                                  "concurrency", "--load-variants", "tensorrt:fp32", "--concurrency", "1,2",
                                  "--load-window", "0.2", "--load-max-windows", "3"),
                   "concurrency", phases.left() - 5, "tensorrt from 1 and 2 threads", keep_timing=False,
                   outcome_prefix="concurrency:")
    timed = {b["extra_info"]["model"] for r in phases.runs for b in r.get("benchmarks", []) if "extra_info" in b}
    phases.outcomes.update({f"{m}: not measured": ("not run", "out of time") for m in models if m not in timed})
    report = render_report(phases.runs, {c: o for c, o in phases.outcomes.items() if not c.startswith("concurrency:")})
    checks, checks_failed = gpu_checks(phases.runs, phases.outcomes)
    report += "\n" + "\n".join(checks)
    (out / "gpu_check.md").write_text(report + "\n")
    print("\n" + report)
    failed = failed_cases(phases.outcomes)
    for problem in phases.problems:
        print(f"\ngpu_check: {problem}", file=sys.stderr)
    if failed:
        print(f"\ngpu_check: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
    print(f"\nfiles: {out} ({time.monotonic() - phases.began:.0f} s)")
    return 1 if failed or phases.problems or checks_failed else 0


if __name__ == "__main__":
    sys.exit(main())
