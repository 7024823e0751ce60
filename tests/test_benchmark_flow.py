"""pytest-benchmark's own history flow, end to end on a tiny model (subprocesses).

--benchmark-autosave/--benchmark-save-data/--benchmark-storage/--benchmark-json/
--benchmark-histogram work unchanged; --benchmark-compare refuses other hardware unless told;
--benchmark-compare-fail ends with a readable verdict and a non-zero exit code.
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from infermatrix.core.hardware_kind import HardwareKind


@pytest.fixture
def bench_run(pytester, repo_root, tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(repo_root))
    # under the subprocess's cwd: pytest-benchmark's own machine-info warning crashes on a
    # storage path outside cwd (Path.relative_to in FileStorage.location)
    storage = pytester.path / "history"

    def run(*args, slowdown=0.0):
        monkeypatch.setenv("INFERMATRIX_INJECTED_SLOWDOWN", str(slowdown))
        return pytester.runpytest_subprocess(
            str(repo_root / "perf_tests" / "test_latency.py"), "-p", "bench.slowdown_engine",
            "--models", "tiny-cnn", "--engines", "torch_slowdown", "--precisions", "fp32", "--batch-sizes", "1",
            "--latency-rounds", "60", "--threads", "1", "--engine-cache", str(tmp_path / "cache"),
            # the history flow does not read memory figures (tests/test_memory_queue.py runs them end to
            # end): without them each of these runs starts no fork server (8 s of imports each)
            "--no-engine-memory",
            "--benchmark-storage", f"file://{storage}", "-p", "no:cacheprovider", *args)
    run.storage = storage
    return run


def saved_runs(storage):
    return sorted(storage.rglob("*.json"))


def test_autosave_json_histogram_and_compare_fail(bench_run, tmp_path):
    first = bench_run("--benchmark-autosave", "--benchmark-save-data", "--benchmark-json", str(tmp_path / "out.json"),
                      "--benchmark-histogram", str(tmp_path / "hist"))
    assert first.ret == 0, first.stdout.str()
    [saved] = saved_runs(bench_run.storage)
    data = json.loads(saved.read_text())
    assert len(data["benchmarks"][0]["stats"]["data"]) == 60            # --benchmark-save-data
    assert data["machine_info"]["infermatrix"]["cpu_model"]
    assert json.loads((tmp_path / "out.json").read_text())["benchmarks"]   # --benchmark-json
    assert list(tmp_path.glob("hist*.svg"))                              # --benchmark-histogram
    original = saved.read_bytes()

    same = bench_run("--benchmark-compare", "--benchmark-compare-fail=median:200%")
    assert same.ret == 0, same.stdout.str()

    # 4x slower: a 25 % gate must see it even when the saved run's median was inflated by the other
    # xdist worker's load (at 2x, a saved run taken beside a compile-heavy test hid it once in CI)
    slower = bench_run("--benchmark-compare", "--benchmark-compare-fail=median:25%", slowdown=3.0)
    assert slower.ret == pytest.ExitCode.TESTS_FAILED
    out = slower.stdout.str()
    # pytest-benchmark names what regressed (its own log, through its public exception), the
    # plugin ends with the verdict instead of an INTERNALERROR traceback
    pytest.LineMatcher(slower.outlines + slower.errlines).fnmatch_lines([
        "*Performance has regressed*", "*test_latency[[]tiny-cnn-torch_slowdown-fp32-bs1-cpu[]]*median*"])
    slower.stdout.fnmatch_lines(["*PERFORMANCE REGRESSION (--benchmark-compare-fail)*",
                                 "*slower than the saved run allows*"])
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert saved.read_bytes() == original, "a compare run modified the saved history"


def test_compare_against_other_hardware_is_refused_unless_allowed(bench_run):
    assert bench_run("--benchmark-autosave").ret == 0
    [saved] = saved_runs(bench_run.storage)
    data = json.loads(saved.read_text())
    ours = data["machine_info"]["infermatrix"]
    ours["gpu"] = {"name": "NVIDIA H100 80GB HBM3"}
    # the run's recorded hardware kind is what the compare reads: measured on an H100 host
    kind = HardwareKind.from_json(ours["hardware_kind"])
    ours["hardware_kind"] = replace(kind, gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1).to_json()
    saved.write_text(json.dumps(data))
    refused = bench_run("--benchmark-compare")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert "NVIDIA H100 80GB HBM3" in refused.stderr.str() and "--allow-hardware-mismatch" in refused.stderr.str()
    assert bench_run("--benchmark-compare", "--allow-hardware-mismatch").ret == 0


def test_xdist_with_a_saving_option_is_refused_naming_both(pytester, repo_root, monkeypatch):
    """pytest-benchmark disables itself under xdist: -n 2 --benchmark-autosave saved nothing and exited 0."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    res = pytester.runpytest_subprocess(str(repo_root / "perf_tests" / "test_latency.py"), "-n", "2",
                                        "--benchmark-autosave", "--models", "tiny-cnn", "-p", "no:cacheprovider")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*-n 2 (pytest-xdist) with --benchmark-autosave: pytest-benchmark disables itself*"])
