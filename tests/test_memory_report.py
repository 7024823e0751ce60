"""The memory chart and the summary's compression section, from constructed runs (JSON only)."""
from __future__ import annotations

import subprocess
import sys

from infermatrix.commands.main import main
from infermatrix.reports.history import load_frame
from tests.runs import bench, write_run

VARIANTS = [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32")]


def test_memory_chart_and_compression_summary(tmp_path):
    benches = [bench(model=m, engine=e, precision=p, bs=bs, seed=i)
               for i, (m, (e, p), bs) in enumerate((m, v, bs) for m in ("resnet50", "tiny-cnn")
                                                   for v in VARIANTS for bs in (1, 8))]
    benches += [bench(model="resnet50", engine="onnxruntime", precision=p, device="cuda", seed=50 + i)
                for i, p in enumerate(("fp32", "fp16"))]
    failed = bench(model="tiny-cnn", engine="openvino", precision="fp32", bs=1, seed=99)
    failed["extra_info"].update(load_rss_bytes=None, run_peak_rss_bytes=None,
                                memory_error="RuntimeError: the memory subprocess exited with code 1\n<traceback>")
    benches = [b for b in benches if b["name"] != failed["name"]] + [failed]
    out = tmp_path / "out"
    assert main(["report", str(write_run(tmp_path / "r.json", benches, gpu="NVIDIA H100")), "--out", str(out)]) == 0
    assert (out / "memory_by_precision.png").stat().st_size > 20_000
    summary = (out / "summary.md").read_text()
    assert ("- resnet50 onnxruntime@cpu int8 vs fp32: artifact 25 MiB vs 100 MiB = 4.00× smaller; "
            "load RSS 31 MiB vs 106 MiB (71 % less)") in summary
    assert "- resnet50 onnxruntime@cuda fp16 vs fp32: artifact 50 MiB vs 100 MiB = 2.00× smaller" in summary
    assert "GPU peak 45 MiB vs 90 MiB (50 % less)" in summary
    assert "- tiny-cnn torch@cpu bf16 vs fp32: load RSS 61 MiB vs 116 MiB (47 % less)" in summary
    assert "- `tiny-cnn-openvino-fp32-bs1-cpu`: RuntimeError: the memory subprocess exited with code 1" in summary


def test_runs_saved_before_per_engine_memory_still_report(tmp_path):
    old = [bench(engine=e, precision=p, seed=i, memory_measured=False) for i, (e, p) in enumerate(VARIANTS)]
    for b in old:  # what test_latency recorded then: the whole process's peak
        b["extra_info"].update(peak_rss_bytes=2 ** 31, peak_rss_scope="block")
    run = write_run(tmp_path / "old.json", old)
    frame = load_frame([run])
    assert frame[["load_rss_bytes", "run_peak_rss_bytes", "gpu_peak_bytes"]].isna().all().all()
    out = tmp_path / "out"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert (out / "memory_by_precision.png").stat().st_size > 10_000
    assert "tiny-cnn onnxruntime int8 vs fp32: artifact 25 MiB vs 100 MiB = 4.00× smaller\n" in (out / "summary.md").read_text()


def test_reports_import_no_engine():
    """What importing the readers pulls in at run time (the layers themselves are checked statically
    by import-linter in `tox -e lint`): no framework, no engine, model, scenario or runner code."""
    code = ("import sys, infermatrix.reports.cli, infermatrix.reports.charts, infermatrix.reports.memory_charts, "
            "infermatrix.reports.summary, infermatrix.reports.history; "
            "print(sorted(m for m in sys.modules if m in ('torch', 'onnxruntime', 'openvino') or "
            "m.split('.')[:2] in (['infermatrix', x] for x in ('engines', 'models', 'scenarios', 'runner', 'fixtures'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
