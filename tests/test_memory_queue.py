"""The memory children queued during the run (runner/memory_queue.py): measured after the cases,
``lanes`` at a time where they fit in memory, delivered in the test process's thread, the wait
charged to "memory", a raising measurement said in the case's record, an interrupted run's cases
said to be unmeasured."""
from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from infermatrix.runner import memory_queue
from infermatrix.runner.memory import not_measured
from infermatrix.runner.memory_queue import (CHILD_BASE_BYTES, WEIGHT_COPIES, MemoryQueue, MemoryThreadWarning,
                                             child_footprint, lanes_for)
from infermatrix.runner.time_ledger import TimeLedger

MiB = 1 << 20


def test_nothing_is_measured_before_settle_and_the_figures_arrive_in_the_callers_thread():
    ledger, got, threads = TimeLedger(), [], []
    queue = MemoryQueue(ledger)

    def measure():
        threads.append(threading.get_ident())
        return {"load_rss_bytes": 123}

    queue.submit("a", measure, lambda figures: got.append((threading.get_ident(), figures)))
    time.sleep(0.05)
    assert threads == [] and got == [] and queue.queued == 1   # queued while the cases run
    queue.settle()
    assert got == [(threading.get_ident(), {"load_rss_bytes": 123})]
    assert threads and threads[0] != threading.get_ident()
    assert queue.queued == 0 and ledger.counts.get("memory") == 1


def _meeting(n: int, log: list):
    """Measurements that record how many ran at once (each waits up to 1 s for a partner)."""
    lock, now, met = threading.Lock(), [0], threading.Barrier(n, timeout=1.0)

    def measure():
        with lock:
            now[0] += 1
            log.append(now[0])
        try:
            met.wait()
        except threading.BrokenBarrierError:
            pass
        with lock:
            now[0] -= 1
        return {}
    return measure


def test_two_lanes_measure_two_cases_at_once_and_the_wait_is_charged_to_memory():
    ledger, log, done = TimeLedger(), [], []
    ledger.start()
    queue = MemoryQueue(ledger, lanes=2, available=lambda: 64 << 30)
    measure = _meeting(2, log)
    for name in "abcd":
        queue.submit(name, measure, lambda _, n=name: done.append(n), footprint_bytes=100 * MiB)
    progress = []
    queue.settle(lambda d, t, s: progress.append((d, t)))
    assert max(log) == 2 and sorted(done) == list("abcd")
    assert [d for d, _ in progress] == [1, 2, 3, 4] and {t for _, t in progress} == {4}
    assert ledger.seconds["memory"] > 0


def test_each_childs_seconds_are_kept_and_the_slowest_come_first():
    queue = MemoryQueue(TimeLedger())
    for name, seconds in (("quick", 0.0), ("slow", 0.2), ("middle", 0.1)):
        queue.submit(name, lambda s=seconds: time.sleep(s) or {}, lambda _: None)
    queue.submit("kept", lambda: {"memory_reused": True}, lambda _: None)  # no child ran
    queue.settle()
    assert [label for label, _ in queue.slowest(2)] == ["slow", "middle"]
    assert queue.child_seconds["slow"] >= 0.2 and set(queue.child_seconds) == {"quick", "slow", "middle"}


@pytest.mark.parametrize("footprints, available, why", [
    ((100 * MiB, None), 64 << 30, "a footprint that is not known runs alone"),
    ((3 << 30, 3 << 30), 16 << 30, "two that would hold more than a quarter of the free memory"),
    ((100 * MiB, 100 * MiB), None, "no MemAvailable to check against"),
])
def test_a_child_that_may_not_fit_beside_another_runs_alone(footprints, available, why):
    log = []
    queue = MemoryQueue(TimeLedger(), lanes=2, available=lambda: available)
    measure = _meeting(2, log)  # breaks its barrier after 1 s when no partner comes
    for i, size in enumerate(footprints):
        queue.submit(str(i), measure, lambda _: None, footprint_bytes=size)
    queue.settle()
    assert log == [1, 1], why


def test_a_measurement_that_raises_is_said_in_the_record_and_as_a_warning():
    queue, got = MemoryQueue(TimeLedger()), []

    def broken():
        raise OSError("no /proc here")

    queue.submit("tiny-cnn-torch-fp32-bs1-cpu", broken, got.append)
    with pytest.warns(MemoryThreadWarning, match="tiny-cnn-torch-fp32-bs1-cpu: the memory measurement raised OSError"):
        queue.settle()
    assert got[0]["memory_error"].startswith("the memory measurement raised OSError: no /proc here")


def test_settle_from_another_thread_is_refused():
    queue = MemoryQueue(TimeLedger())
    queue.submit("a", dict, lambda _: None)
    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(RuntimeError, queue.settle)))
    t.start()
    t.join()
    assert errors and "main thread" in str(errors[0].value)


def test_an_abandoned_queue_measures_nothing_and_says_why_in_every_record():
    queue, got, ran = MemoryQueue(TimeLedger()), [], []
    for name in "ab":
        queue.submit(name, lambda: ran.append(1) or {}, got.append)
    assert queue.abandon("the run was interrupted", not_measured) == 2
    assert ran == [] and queue.queued == 0
    assert [g["memory_method"] for g in got] == ["not measured (the run was interrupted)"] * 2
    assert all(g["load_rss_bytes"] is None for g in got)


def test_ctrl_c_while_the_children_run_delivers_the_running_and_leaves_the_rest_to_abandon(monkeypatch):
    queue, got = MemoryQueue(TimeLedger(), lanes=1), []
    started = threading.Event()

    def interrupted_wait(futures, return_when):  # the user presses Ctrl-C while the first child runs
        started.wait(5)
        raise KeyboardInterrupt

    def measure():
        started.set()
        return {"load_rss_bytes": 1}

    for name in "abc":
        queue.submit(name, measure, lambda figures, n=name: got.append((n, figures)))
    monkeypatch.setattr(memory_queue, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        queue.settle()
    assert got == [("a", {"load_rss_bytes": 1})]       # the child that ran is not lost
    assert queue.queued == 2                              # b and c never started
    queue.abandon("interrupted", not_measured)
    assert [n for n, _ in got] == ["a", "b", "c"] and got[2][1]["memory_method"] == "not measured (interrupted)"


@pytest.mark.parametrize("cpus, workers, lanes", [(2, 1, 2), (2, 2, 1), (1, 1, 1), (16, 1, 2), (16, 4, 2), (3, 2, 1)])
def test_lanes_are_the_processs_share_of_the_cpus(cpus, workers, lanes):
    assert lanes_for(cpus, workers) == lanes


def test_a_childs_footprint_counts_the_larger_of_files_and_weights_and_a_gpu_case_runs_alone():
    module = torch.nn.Linear(1024, 1024)  # 4 MiB of weights, 4 KiB of bias
    weights = (1024 * 1024 + 1024) * 4
    assert child_footprint("cpu", 1 * MiB, module) == CHILD_BASE_BYTES + WEIGHT_COPIES * weights
    assert child_footprint("cpu", 64 * MiB, module) == CHILD_BASE_BYTES + WEIGHT_COPIES * 64 * MiB
    assert child_footprint("cpu", 8 * MiB, None) == CHILD_BASE_BYTES + WEIGHT_COPIES * 8 * MiB  # an onnx: model
    assert child_footprint("cuda", 8 * MiB, module) is None


def test_every_case_of_a_saved_run_has_its_memory_the_last_one_included(pytester, repo_root, tmp_path, monkeypatch):
    """The children run after the last test, two at a time on this 2-CPU host (each lane with a fork
    server of its own): every figure joins its record before pytest-benchmark writes the JSON."""
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):  # a plain run, also from an xdist worker
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "run.json"
    result = pytester.runpytest_subprocess(
        str(repo_root / "perf_tests" / "test_latency.py"), "--models", "tiny-cnn", "--engines", "torch,onnxruntime",
        "--precisions", "fp32", "--batch-sizes", "1,2", "--latency-rounds", "5",
        "--engine-cache", str(tmp_path / "cache"), "--benchmark-json", str(out), "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    # the terminal names the children that took longest
    result.stdout.fnmatch_lines(["*memory: 4 children in * at a time; the lanes spent * s starting fork servers); "
                                 "the slowest: tiny-cnn-* s, tiny-cnn-* s, tiny-cnn-* s"])
    benches = json.loads(out.read_text())["benchmarks"]
    assert len(benches) == 4
    for bench in benches:
        info = bench["extra_info"]
        assert "memory_error" not in info, info["memory_error"]
        assert info["load_rss_bytes"] > 0 and info["run_peak_rss_bytes"] >= 0, bench["name"]
        assert info["memory_method"].startswith("forked child"), info["memory_method"]


def _interrupted_run(pytester, repo_root, tmp_path, monkeypatch, plugin: str, source: str):
    """tiny-cnn torch fp32 at batches 1 and 2 with ``plugin`` (written from ``source``) loaded, saved
    as history: (the pytester result, the saved run's benchmarks)."""
    pytester.makepyfile(**{plugin: source})
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    result = pytester.runpytest_subprocess(
        str(repo_root / "perf_tests" / "test_latency.py"), "-p", plugin, "--models", "tiny-cnn",
        "--engines", "torch", "--precisions", "fp32", "--batch-sizes", "1,2", "--latency-rounds", "5",
        "--engine-cache", str(tmp_path / "cache"), "--benchmark-autosave",
        "--benchmark-storage", f"file://{pytester.path / 'history'}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    [saved] = sorted((pytester.path / "history").rglob("*.json"))
    return result, json.loads(saved.read_text())["benchmarks"]


def test_an_interrupted_run_saves_its_cases_and_says_their_memory_was_not_measured(pytester, repo_root, tmp_path,
                                                                                  monkeypatch):
    """Ctrl-C after the first case: no child starts (a user who stops a run does not wait for them),
    and the saved case says why its memory is null."""
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(var, raising=False)
    _, [bench] = _interrupted_run(pytester, repo_root, tmp_path, monkeypatch, "stop_after_first_case", """
        def pytest_runtest_teardown(item, nextitem):
            if "test_latency[" in item.nodeid:
                raise KeyboardInterrupt
    """)
    info = bench["extra_info"]
    assert info["memory_method"] == ("not measured (the run was interrupted before its memory children ran: "
                                     "they run after the timed cases)")
    assert info["load_rss_bytes"] is None and "memory_error" not in info
    assert not list((tmp_path / "cache").glob("_memory/*.json"))  # nothing measured, nothing kept


def test_ctrl_c_while_the_children_run_still_saves_the_run(pytester, repo_root, tmp_path, monkeypatch):
    """Ctrl-C during the children (here: the first wait for one raises it), one lane: the child that
    ran is delivered, the case not started says its memory was not measured, the run is saved and
    ends as interrupted."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")  # an xdist worker's share of 2 CPUs: one lane
    result, benches = _interrupted_run(pytester, repo_root, tmp_path, monkeypatch, "ctrl_c_in_memory", """
        import infermatrix.runner.memory_queue as queue

        def interrupted(futures, return_when):
            raise KeyboardInterrupt

        queue.wait = interrupted
    """)
    result.stdout.fnmatch_lines(["*memory: interrupted, 1 case not measured (their records say so)*"])
    methods = {b["name"]: b["extra_info"]["memory_method"] for b in benches}
    assert methods["test_latency[tiny-cnn-torch-fp32-bs1-cpu]"].startswith("forked child"), methods
    assert methods["test_latency[tiny-cnn-torch-fp32-bs2-cpu]"] == (
        "not measured (the run was interrupted while its memory children ran)"), methods
