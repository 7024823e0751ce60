"""The memory child beside untimed work (runner/memory_overlap.py): figures delivered in the test
process's thread at the next settle, one child at a time, a waiting that is charged to "memory",
and a raising measurement said in the case's record, never lost."""
from __future__ import annotations

import json
import threading
import time

import pytest

from infermatrix.runner.memory_overlap import MemoryOverlap, MemoryThreadWarning
from infermatrix.runner.time_ledger import TimeLedger


def test_the_figures_arrive_at_the_next_settle_in_the_callers_thread():
    ledger, got, threads = TimeLedger(), [], []
    overlap = MemoryOverlap(ledger)
    release = threading.Event()

    def measure():
        threads.append(threading.get_ident())
        release.wait(5)
        return {"load_rss_bytes": 123}

    overlap.submit("a", measure, lambda figures: got.append((threading.get_ident(), figures)))
    time.sleep(0.05)
    assert got == [] and overlap.in_flight == 1          # the caller went on while the child measured
    release.set()
    overlap.settle()
    assert got == [(threading.get_ident(), {"load_rss_bytes": 123})]
    assert threads and threads[0] != threading.get_ident()
    assert overlap.in_flight == 0 and ledger.counts.get("memory") == 1
    overlap.close()


def test_the_wait_is_charged_to_memory_and_a_second_case_waits_for_the_first():
    ledger, order = TimeLedger(), []
    ledger.start()
    overlap = MemoryOverlap(ledger)

    def slow(name):
        def measure():
            time.sleep(0.2)
            order.append(f"measured {name}")
            return {}
        return measure

    overlap.submit("a", slow("a"), lambda _: order.append("delivered a"))
    overlap.submit("b", slow("b"), lambda _: order.append("delivered b"))   # settles "a" first
    assert order == ["measured a", "delivered a"]
    overlap.close()
    assert order == ["measured a", "delivered a", "measured b", "delivered b"]
    assert ledger.seconds["memory"] >= 0.15   # the caller waited for both, and the ledger says so


def test_a_measurement_that_raises_is_said_in_the_record_and_as_a_warning():
    overlap, got = MemoryOverlap(TimeLedger()), []

    def broken():
        raise OSError("no /proc here")

    overlap.submit("tiny-cnn-torch-fp32-bs1-cpu", broken, got.append)
    with pytest.warns(MemoryThreadWarning, match="tiny-cnn-torch-fp32-bs1-cpu: the memory measurement raised OSError"):
        overlap.settle()
    assert got[0]["memory_error"].startswith("the memory measurement raised OSError: no /proc here")
    overlap.close()


def test_settle_from_another_thread_is_refused():
    overlap = MemoryOverlap(TimeLedger())
    overlap.submit("a", dict, lambda _: None)
    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(RuntimeError, overlap.settle)))
    t.start()
    t.join()
    assert errors and "main thread" in str(errors[0].value)
    overlap.close()


def test_every_case_of_a_saved_run_has_its_memory_the_last_one_included(pytester, repo_root, tmp_path, monkeypatch):
    """The last case's child is still in flight when the last test ends: its figures join the record
    before pytest-benchmark writes the JSON."""
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):  # a plain run, also from an xdist worker
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "run.json"
    result = pytester.runpytest_subprocess(
        str(repo_root / "perf_tests" / "test_latency.py"), "--models", "tiny-cnn", "--engines", "torch,onnxruntime",
        "--precisions", "fp32", "--batch-sizes", "1,2", "--latency-rounds", "5",
        "--engine-cache", str(tmp_path / "cache"), "--benchmark-json", str(out), "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    benches = json.loads(out.read_text())["benchmarks"]
    assert len(benches) == 4
    for bench in benches:
        info = bench["extra_info"]
        assert "memory_error" not in info, info["memory_error"]
        assert info["load_rss_bytes"] > 0 and info["run_peak_rss_bytes"] >= 0, bench["name"]
        assert info["memory_method"].startswith("forked child"), info["memory_method"]
