"""The infermatrix CLI: exit codes, markdown, charts, bad input; saved runs are never modified."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from infermatrix.reports.charts import speedup_table
from infermatrix.commands.main import main
from infermatrix.reports.cli import trend_regressions
from infermatrix.reports.history import latest_per_machine, load_frame
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
        load_bench("Server", {"latency_bound_s": 0.01, "max_valid_qps": 100.0, "trials": [
            {"target_qps": q, "p99_s": p, "achieved_qps": q, "verdict": "VALID" if p <= 0.01 else "INVALID"}
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


def test_history_never_uses_max_for_a_missing_p99(tmp_path):
    few = list(np.random.default_rng(0).normal(1e-3, 1e-4, 40))   # 40 rounds: no p99
    run = write_run(tmp_path / "r.json", [bench(samples=few), bench(engine="onnxruntime", samples=few)])
    frame = load_frame([run])
    assert frame["p99_s"].isna().all() and not (frame["p99_s"] == max(few)).any()
    assert frame["p50_s"].tolist() == pytest.approx([float(np.median(few))] * 2)  # p50 is the median
    assert frame["notes"][0]["p99_s"] == "p99 needs >= 100 samples; 40 were taken"
    out = tmp_path / "charts"
    assert main(["report", str(run), "--out", str(out)]) == 0        # charts cope with a null p99
    summary = (out / "summary.md").read_text()
    assert "| n/a (p99 needs >= 100 samples; 40 were taken) |" in summary


def _two_runs_baseline_only_in_the_older(runs: Path) -> tuple[Path, Path]:
    old = write_run(runs / "0001_old.json", [bench(median=2e-3, seed=1), bench(engine="onnxruntime", median=1e-3,
                                                                               seed=2)])
    new = write_run(runs / "0002_new.json", [bench(engine="onnxruntime", samples=[5e-4] * 150)],
                    when="2026-11-26T00:00:00")
    return old, new


def test_speedup_is_never_borrowed_from_another_run(tmp_path):
    runs = tmp_path / "runs"
    _two_runs_baseline_only_in_the_older(runs)
    latest = latest_per_machine(load_frame([runs])).set_index("case")
    # onnxruntime's newest row is from 0002, which has no eager fp32: no speedup (not 2e-3/5e-4 = 4x)
    assert latest.loc["tiny-cnn-onnxruntime-fp32-bs1-cpu", "run"] == "0002_new.json"
    assert np.isnan(latest.loc["tiny-cnn-onnxruntime-fp32-bs1-cpu", "baseline_p50_s"])
    assert latest.loc["tiny-cnn-torch-fp32-bs1-cpu", "run"] == "0001_old.json"
    out = tmp_path / "charts"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| tiny-cnn-onnxruntime-fp32-bs1-cpu |"))
    assert "| n/a |" in row and "`0002_new.json`" in row and "4.00×" not in summary
    # best engine: compared within the newest run only (0002 holds just onnxruntime)
    assert "| tiny-cnn | cpu | 1 | onnxruntime fp32 | 0.500 ms | n/a | n/a | `0002_new.json` |" in summary


def test_speedup_divides_two_cases_of_the_same_run(tmp_path):
    runs = tmp_path / "runs"
    old, _ = _two_runs_baseline_only_in_the_older(runs)
    write_run(runs / "0003_newest.json", [bench(median=4e-3, seed=4), bench(engine="onnxruntime", median=1e-3, seed=5)],
              when="2026-11-27T00:00:00")
    table = speedup_table(latest_per_machine(load_frame([runs]))).set_index("case")
    assert table.loc["tiny-cnn-onnxruntime-fp32-bs1-cpu", "speedup"] == pytest.approx(4.0, rel=0.02)
    assert table.loc["tiny-cnn-torch-fp32-bs1-cpu", "speedup"] == pytest.approx(1.0)


def test_compare_refuses_a_side_that_mixes_hardware(tmp_path, capsys):
    base = tmp_path / "base"
    write_run(base / "0001.json", [bench(seed=1)], cpu="AMD EPYC")
    write_run(base / "0002.json", [bench(seed=2)], cpu="Intel Xeon", when="2026-11-26T00:00:00")
    new = write_run(tmp_path / "new.json", [bench(seed=3)], cpu="Intel Xeon", when="2026-11-27T00:00:00")
    # the last base run matches new's machine; the older one does not
    assert main(["compare", str(base), str(new)]) == 2
    err = capsys.readouterr().err
    assert "refusing to compare different hardware" in err and "'AMD EPYC'" in err and "'Intel Xeon'" in err
    assert main(["compare", str(base), str(new), "--allow-hardware-mismatch"]) == 0


def test_trends_compare_each_run_with_the_same_machines_previous_run(tmp_path):
    runs = tmp_path / "runs"
    a1 = write_run(runs / "a" / "0001.json", [bench(median=1e-3, seed=1)], cpu="fast", when="2026-11-21T00:00:00")
    b1 = write_run(runs / "b" / "0001.json", [bench(median=3e-3, seed=2)], cpu="slow", when="2026-11-22T00:00:00")
    a2 = write_run(runs / "a" / "0002.json", [bench(median=1e-3, seed=3)], cpu="fast", when="2026-11-23T00:00:00")
    b2 = write_run(runs / "b" / "0002.json", [bench(median=6e-3, seed=4)], cpu="slow", when="2026-11-24T00:00:00")
    latency = load_frame([runs])
    # interleaved by time, machine b's run is 3x a's: no regression; b2 is 2x b1: a regression
    assert trend_regressions(latency) == {("tiny-cnn-torch-fp32-bs1-cpu", str(b2))}
    assert {str(a1), str(b1), str(a2)}.isdisjoint(r for _, r in trend_regressions(latency))
    out = tmp_path / "charts"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "## Machine: fast" in summary and "## Machine: slow" in summary


def test_bad_figures_and_an_unwritable_markdown_are_bad_input_not_a_regression(pair, tmp_path, capsys):
    base, new = pair
    assert main(["compare", str(base), str(new), "--markdown", str(tmp_path / "no-such-dir" / "x.md")]) == 2
    assert "--markdown" in capsys.readouterr().err
    nulls = write_run(tmp_path / "nulls.json", [bench(seed=7)])
    data = nulls.read_text().replace('"median": ', '"median": null, "was": ', 1)
    nulls.write_text(data)
    assert main(["compare", str(base), str(nulls)]) == 2
    err = capsys.readouterr().err
    assert "nulls.json" in err and "test_latency[tiny-cnn-torch-fp32-bs1-cpu]" in err and "stats.median" in err


def test_report_reads_a_history_kept_per_kind_without_its_kind_file_or_incomplete_runs(tmp_path):
    """``infermatrix merge`` lays a history out as <kind>/kind.json + <kind>/runs/*.json: the report
    reads the complete runs, never kind.json as a run nor an incomplete run as a point."""
    runs = tmp_path / "history" / "amd-epyc-2cpu-0123abcd" / "runs"
    (runs.parent / "kind.json").parent.mkdir(parents=True)
    (runs.parent / "kind.json").write_text('{"id": "amd-epyc-2cpu-0123abcd", "label": "AMD EPYC", "fields": {}}')
    write_run(runs / "20261120T000000Z-0123456789ab.json", [bench(seed=1)], when="2026-11-20T00:00:00")
    write_run(runs / "20261121T000000Z-0123456789ac.json", [bench(seed=2)], when="2026-11-21T00:00:00")
    write_run(runs / "20261122T000000Z-0123456789ad-incomplete.json", [bench(median=9.0, seed=3)],
              when="2026-11-22T00:00:00")
    frame = load_frame([tmp_path / "history"])
    assert sorted(Path(p).name for p in frame["path"].unique()) == [
        "20261120T000000Z-0123456789ab.json", "20261121T000000Z-0123456789ac.json"]
    assert main(["report", str(tmp_path / "history"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "summary.md").is_file()
