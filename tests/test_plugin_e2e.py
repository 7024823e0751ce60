"""The plugin end to end, in a subprocess: benchmarks, saved JSON, cache summary, xdist."""
from __future__ import annotations

import json

import pytest

FIELDS = {"model", "engine", "precision", "batch_size", "device", "p50_s", "p90_s", "p99_s",
          "throughput_items_per_s", "load_rss_bytes", "run_peak_rss_bytes", "gpu_peak_bytes",
          "memory_method", "artifact_bytes", "build_seconds",
          "equivalence", "flops", "gflops_per_s"}


@pytest.fixture(autouse=True)
def not_an_xdist_worker(monkeypatch):
    """The subprocess is a plain pytest run even when this test runs in an xdist worker
    (pytest-benchmark disables itself when it sees PYTEST_XDIST_WORKER)."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)


def run(pytester, repo_root, cache, *args):
    return pytester.runpytest_subprocess(
        str(repo_root / "perf_tests" / "test_latency.py"), "--models", "tiny-cnn",
        "--engines", "torch,onnxruntime", "--batch-sizes", "2", "--latency-rounds", "7", "--precisions", "fp32,int8",
        "--engine-cache", str(cache), "-p", "no:cacheprovider", *args)


def test_latency_benchmarks_record_extra_info_and_a_warm_run_builds_nothing(pytester, repo_root, tmp_path):
    cache = tmp_path / "cache"
    first = run(pytester, repo_root, cache, "--benchmark-json", str(tmp_path / "a.json"))
    assert first.ret == 0, first.stdout.str()
    first.stdout.fnmatch_lines(["*engines: 3 built (*s), 0 from cache*",
                                "*memory: 3 cases measured, 0 reused from the engine cache*", "*3 passed*"])
    data = json.loads((tmp_path / "a.json").read_text())
    assert len(data["benchmarks"]) == 3
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        assert FIELDS <= set(info), FIELDS - set(info)
        assert info["equivalence"] == "pass"
        # 7 rounds: a p50, but no p90 (needs 10) and no p99 (needs 100), each with its reason
        assert info["p50_s"] > 0 and info["p90_s"] is None and info["p99_s"] is None
        assert info["percentile_notes"] == {"p90_s": "p90 needs >= 10 samples; 7 were taken",
                                            "p99_s": "p99 needs >= 100 samples; 7 were taken"}
        assert info["throughput_items_per_s"] == pytest.approx(2 / bench["stats"]["mean"])
        assert info["rounds"] == 7 and bench["stats"]["rounds"] == 7
        assert bench["group"] == "tiny-cnn-bs2-cpu"
        # this engine's memory, from its own subprocess (runner/memory.py), not the test process's
        assert "memory_error" not in info, info["memory_error"]
        assert info["load_rss_bytes"] > 0 and info["run_peak_rss_bytes"] >= 0 and info["gpu_peak_bytes"] is None
        assert "peak_rss_bytes" not in info and "gpu_max_allocated_bytes" not in info
        assert info["memory_reused"] is False and info["memory_measured_at"]
    libs = data["machine_info"]["infermatrix"]["libraries"]
    assert {"torch", "onnxruntime", "onnx"} <= set(libs)
    second = run(pytester, repo_root, cache, "--benchmark-json", str(tmp_path / "b.json"))
    assert second.ret == 0
    # the memory figures measured by the first run are reused, and say when they were measured
    second.stdout.fnmatch_lines(["*engines: 0 built (0.0 s), 3 from cache*",
                                 "*memory: 0 cases measured, 3 reused from the engine cache*"])
    before = {b["name"]: b["extra_info"] for b in data["benchmarks"]}
    for bench in json.loads((tmp_path / "b.json").read_text())["benchmarks"]:
        info, was = bench["extra_info"], before[bench["name"]]
        assert info["memory_reused"] is True and info["memory_measured_at"] == was["memory_measured_at"]
        assert (info["load_rss_bytes"], info["run_peak_rss_bytes"]) == (was["load_rss_bytes"], was["run_peak_rss_bytes"])
        assert info["memory_method"].startswith(was["memory_method"]) and "reused: measured" in info["memory_method"]


def test_equivalence_under_xdist_builds_each_engine_once(pytester, repo_root, tmp_path):
    result = pytester.runpytest_subprocess(
        str(repo_root / "perf_tests" / "test_equivalence.py"), "-n", "2", "--models", "tiny-cnn",
        "--engines", "torch,onnxruntime", "--batch-sizes", "1,2", "--precisions", "fp32,int8",
        "--engine-cache", str(tmp_path / "c"),
        "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*6 passed*"])
    # 3 engines (torch, onnxruntime fp32, int8), each built once across both workers, and the
    # ONNX stage's 2 graphs (the export, its int8 quantization) each built once too
    dirs = [p for p in (tmp_path / "c").glob("*/*") if p.is_dir() and not p.name.startswith(".")]
    assert sorted(p.parent.name for p in dirs) == ["onnx-stage", "onnx-stage", "onnxruntime", "onnxruntime", "torch"]
    out = result.stdout.str()
    built = int(out.split("engines: ")[1].split(" built")[0])
    assert built == 3


@pytest.mark.parametrize("env_or_flag", ["env", "flag"])
def test_cache_location_and_clear(pytester, repo_root, tmp_path, monkeypatch, env_or_flag):
    cache = tmp_path / "elsewhere"
    (cache / "stale-engine").mkdir(parents=True)
    args = ["--engine-cache-clear", "--collect-only", "-q"]
    if env_or_flag == "env":
        monkeypatch.setenv("INFERMATRIX_CACHE", str(cache))
    else:
        args += ["--engine-cache", str(cache)]
    result = pytester.runpytest_subprocess(str(repo_root / "perf_tests" / "test_equivalence.py"), *args)
    assert result.ret == 0
    assert not (cache / "stale-engine").exists()
    assert cache.is_dir() and not any(cache.iterdir())


def test_no_engine_memory_records_null_memory_fields(pytester, repo_root, tmp_path):
    result = pytester.runpytest_subprocess(
        str(repo_root / "perf_tests" / "test_latency.py"), "--models", "tiny-cnn", "--engines", "torch",
        "--batch-sizes", "1", "--latency-rounds", "3", "--precisions", "fp32", "--engine-cache", str(tmp_path / "c"),
        "--no-engine-memory",
        "--benchmark-json", str(tmp_path / "off.json"), "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    [bench] = json.loads((tmp_path / "off.json").read_text())["benchmarks"]
    info = bench["extra_info"]
    assert info["load_rss_bytes"] is None and info["run_peak_rss_bytes"] is None and info["gpu_peak_bytes"] is None
    assert info["memory_method"] == "not measured (--no-engine-memory)"
