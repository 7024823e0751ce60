"""The infermatrix CLI: exit codes, markdown, charts, bad input; saved runs are never modified."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from reports.cli import main
from tests.runs import bench, write_run


def digest(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def pair(tmp_path):
    base = write_run(tmp_path / "runs" / "0001_base.json",
                     [bench(seed=1), bench(engine="onnxruntime", median=5e-4, seed=2), bench(model="gone", seed=3)])
    new = write_run(tmp_path / "runs" / "0002_new.json",
                    [bench(median=1.5e-3, seed=4), bench(engine="onnxruntime", median=5e-4, seed=5),
                     bench(model="fresh", seed=6)], when="2026-11-26T00:00:00")
    return base, new


def test_compare_flags_a_regression_and_classifies_every_case(pair, tmp_path, capsys):
    base, new = pair
    before = digest(tmp_path / "runs")
    md = tmp_path / "summary.md"
    assert main(["compare", str(base), str(new), "--markdown", str(md)]) == 1
    out = capsys.readouterr().out
    assert md.read_text().strip() == out.strip()
    lines = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    assert "slower" in lines["tiny-cnn-torch-fp32-bs1-cpu"] and "+50" in lines["tiny-cnn-torch-fp32-bs1-cpu"]
    assert "unchanged" in lines["tiny-cnn-onnxruntime-fp32-bs1-cpu"]
    assert "new" in lines["fresh-torch-fp32-bs1-cpu"] and "missing" in lines["gone-torch-fp32-bs1-cpu"]
    assert digest(tmp_path / "runs") == before, "compare modified a saved run"


def test_compare_passes_within_threshold(pair):
    base, new = pair
    assert main(["compare", str(base), str(new), "--threshold", "median=60%,p99=80%"]) == 0


def test_compare_refuses_different_hardware_unless_allowed(tmp_path, capsys):
    a = write_run(tmp_path / "a.json", [bench(seed=1)], gpu="NVIDIA A100")
    b = write_run(tmp_path / "b.json", [bench(seed=2)], gpu="NVIDIA H100")
    assert main(["compare", str(a), str(b)]) == 2
    assert "refusing to compare different hardware" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--allow-hardware-mismatch"]) == 0


def test_threshold_only_comparison_warns(tmp_path, capsys):
    a = write_run(tmp_path / "a.json", [bench(seed=1, save_data=False)])
    b = write_run(tmp_path / "b.json", [bench(seed=2, median=2e-3, save_data=False)])
    assert main(["compare", str(a), str(b)]) == 1
    assert "threshold-only" in capsys.readouterr().err


def _file(name: str, text: str):
    def make(d: Path) -> Path:
        (d / name).write_text(text)
        return d / name
    return make


def _empty_dir(d: Path) -> Path:
    (d / "empty").mkdir()
    return d / "empty"


@pytest.mark.parametrize("make, message", [
    (_file("bad.json", '{"benchmarks": ['), "not valid JSON"),
    (_file("other.json", '{"hello": 1}'), "not a pytest-benchmark run"),
    (_empty_dir, "no saved runs"),
    (lambda d: d / "does-not-exist", "no such file or directory"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, make, message):
    good = write_run(tmp_path / "good.json", [bench()])
    bad = make(tmp_path)
    for args in (["compare", str(good), str(bad)], ["report", str(bad), "--out", str(tmp_path / "o")]):
        assert main(args) == 2
        assert message in capsys.readouterr().err


def test_no_common_cases_and_bad_threshold_exit_2(tmp_path, capsys):
    a = write_run(tmp_path / "a.json", [bench(model="x")])
    b = write_run(tmp_path / "b.json", [bench(model="y")])
    assert main(["compare", str(a), str(b)]) == 2
    assert "no case appears in both runs" in capsys.readouterr().err
    assert main(["compare", str(a), str(a), "--threshold", "median=lots"]) == 2
    assert "does not parse" in capsys.readouterr().err


def test_report_draws_every_chart_and_a_summary(tmp_path):
    runs = tmp_path / "runs"
    for i, factor in enumerate((1.0, 1.02, 1.6)):  # the third run regresses
        cases = [bench(engine=e, precision=p, bs=bs, device=dev, median=m * bs * factor * (0.2 if dev == "cuda" else 1),
                       seed=i * 100 + j)
                 for j, (e, p, m) in enumerate([("torch", "fp32", 1e-3), ("onnxruntime", "fp32", 6e-4),
                                                ("onnxruntime", "int8", 3e-4)])
                 for bs in (1, 8) for dev in ("cpu", "cuda")]
        write_run(runs / f"000{i}_run.json", cases, gpu="NVIDIA H100", when=f"2026-11-2{i}T00:00:00")
    before = digest(runs)
    out = tmp_path / "charts"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    names = {"latency_by_engine.png", "throughput_vs_batch.png", "memory_by_precision.png",
             "speedup_heatmap.png", "cpu_vs_gpu.png", "history_trend.png", "summary.md"}
    assert names <= {p.name for p in out.iterdir()}
    for name in names:
        assert (out / name).stat().st_size > 1000, name
    summary = (out / "summary.md").read_text()
    assert "| tiny-cnn | cpu | 1 | onnxruntime int8 |" in summary
    assert digest(runs) == before


def test_report_draws_load_curves_from_scenario_runs(tmp_path):
    def load_bench(scenario, extra):
        return {"group": f"load-tiny-cnn-{scenario}", "name": f"test_{scenario.lower()}[tiny-cnn-torch-fp32-cpu]",
                "fullname": f"perf_tests/test_load.py::test_{scenario.lower()}[tiny-cnn-torch-fp32-cpu]",
                "stats": {"median": 1.0, "max": 1.0, "mean": 1.0, "rounds": 1},
                "extra_info": {"model": "tiny-cnn", "engine": "torch", "precision": "fp32", "device": "cpu",
                               "scenario": scenario, **extra}}
    run = write_run(tmp_path / "load.json", [
        load_bench("Server", {"latency_bound_s": 0.01, "max_qps_within_bound": 100.0, "trials": [
            {"offered_qps": q, "p99_s": p, "achieved_qps": q, "met": p <= 0.01}
            for q, p in ((50, 0.004), (100, 0.008), (200, 0.05))]}),
        load_bench("Concurrency", {"levels": [{"concurrency": c, "throughput_qps": 100.0 * c, "stable": True}
                                              for c in (1, 2, 4)]})])
    out = tmp_path / "charts"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert (out / "load_curves.png").stat().st_size > 1000


def test_report_draws_accuracy_charts(tmp_path):
    confusion = np.eye(10, dtype=int) * 45
    benches = []
    for engine, precision, acc, p50 in (("torch", "fp32", 0.99, 2e-3), ("onnxruntime", "int8", 0.985, 5e-4)):
        benches.append({"name": f"test_accuracy[digits-{engine}-{precision}]", "fullname": f"a::{engine}{precision}",
                        "stats": {"median": p50, "max": p50, "mean": p50, "rounds": 50},
                        "extra_info": {"model": "digits-finetuned", "engine": engine, "precision": precision,
                                       "device": "cpu", "batch_size": 64, "scenario": "Accuracy", "accuracy": acc,
                                       "macro_f1": acc, "confusion": confusion.tolist(), "p50_s": p50}})
    run = write_run(tmp_path / "acc.json", benches)
    out = tmp_path / "charts"
    assert main(["report", str(run), "--out", str(out)]) == 0
    for name in ("confusion_matrices.png", "accuracy_vs_latency.png"):
        assert (out / name).stat().st_size > 1000


def test_report_draws_generation_and_pipeline_charts(tmp_path):
    def scenario_bench(name, extra):
        return {"name": name, "fullname": f"perf_tests/x.py::{name}", "stats": {"median": 1.0, "max": 1.0, "mean": 1.0,
                                                                                 "rounds": 5},
                "extra_info": {"device": "cpu", "precision": "fp32", **extra}}
    benches = [scenario_bench(f"test_generation[{engine}-p{p}]", {
        "model": "tiny-gpt2", "engine": engine, "scenario": "generation", "prompt_length": p, "new_tokens": 32,
        "batch_size": 1, "decode_tokens_per_s": tps, "ttft_p50_s": 0.01, "ttft_p99_s": 0.02})
        for engine, tps in (("torch", 30.0), ("onnxruntime", 120.0)) for p in (32, 128)]
    benches += [scenario_bench(f"test_pipeline[tiny-vl-{mode}]", {
        "model": "tiny-vl", "engine": mode, "mode": mode, "scenario": "pipeline", "e2e_p99_s": 0.05,
        **{f"{stage}_p50_s": 0.01 for stage in ("preprocess", "vision", "prefill", "decode")}})
        for mode in ("original", "onnx_vision")]
    out = tmp_path / "charts"
    assert main(["report", str(write_run(tmp_path / "scen.json", benches)), "--out", str(out)]) == 0
    for name in ("generation.png", "pipeline_stages.png"):
        assert (out / name).stat().st_size > 1000
