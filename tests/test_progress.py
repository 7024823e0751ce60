"""A long build and a long run show progress (fixtures/progress.py): a slow build is announced
and its end said, the tests done and the time left are printed, and ``-q`` prints none of it."""
from __future__ import annotations

import time

import pytest

from infermatrix.fixtures import progress
from infermatrix.fixtures.progress import BuildNotice, duration, progress_line, terminal_writer
from infermatrix.runner.time_ledger import TimeLedger


def test_duration_and_the_estimate_from_the_mean_time_per_finished_test():
    assert [duration(s) for s in (4.4, 59.6, 185, 3725)] == ["4 s", "1 min 00 s", "3 min 05 s", "1 h 02 min"]
    # 10 tests in 100 s: 10 s each, 30 left -> 300 s
    assert progress_line(10, 40, 100.0) == "10/40 tests done in 1 min 40 s, about 5 min 00 s left"


def test_a_build_longer_than_the_notice_time_is_announced_and_its_end_said(monkeypatch):
    monkeypatch.setattr(progress, "BUILD_NOTICE_S", 0.05)
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.1)
    lines: list[str] = []
    ledger = TimeLedger()
    ledger.listeners.append(BuildNotice(lines.append))
    with ledger.phase("build", "resnet18 (openvino int8 on cpu)"):
        time.sleep(0.4)
    assert lines[0] == "building resnet18 (openvino int8 on cpu) ..."
    assert any(line.startswith("still building resnet18 (openvino int8 on cpu): ") for line in lines[1:-1]), lines
    assert lines[-1].startswith("built resnet18 (openvino int8 on cpu) in 0.") and lines[-1].endswith(" s")
    count = len(lines)
    time.sleep(0.2)
    assert len(lines) == count          # the watcher ended with the build: nothing written after it


def test_a_short_build_and_other_phases_print_nothing(monkeypatch):
    monkeypatch.setattr(progress, "BUILD_NOTICE_S", 5.0)
    lines: list[str] = []
    ledger = TimeLedger()
    ledger.listeners.append(BuildNotice(lines.append))
    with ledger.phase("build", "tiny-cnn (torch fp32 on cpu)"):
        pass
    monkeypatch.setattr(progress, "BUILD_NOTICE_S", 0.0)
    with ledger.phase("memory"):
        time.sleep(0.05)
    assert lines == []


@pytest.mark.parametrize("args, writes", [((), True), (("-q",), False)])
def test_quiet_runs_write_no_progress(pytester, args, writes):
    config = pytester.parseconfigure(*args)
    assert (terminal_writer(config) is not None) == writes


SLOW_BUILD = '''
import time

from infermatrix.engines.torch_eager import TorchEagerEngine
from infermatrix.fixtures import progress

progress.BUILD_NOTICE_S = 0.3
progress.PROGRESS_EVERY_S = 0.5
_build = TorchEagerEngine._build_impl


def slow_build(self, spec, workdir):
    time.sleep(1.5)  # a build that outlasts the notice time, and the progress interval
    return _build(self, spec, workdir)


TorchEagerEngine._build_impl = slow_build
'''


def test_a_slow_build_and_the_tests_done_are_shown_while_the_run_goes_on(pytester, repo_root, tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    pytester.makepyfile(slowbuild=SLOW_BUILD)   # `python -m pytest` runs in pytester's folder: importable
    result = pytester.runpytest_subprocess(
        "-p", "slowbuild", str(repo_root / "perf_tests" / "test_latency.py"), "--models", "tiny-cnn",
        "--engines", "torch", "--precisions", "fp32", "--batch-sizes", "1,2", "--latency-rounds", "5",
        "--no-engine-memory", "--engine-cache", str(tmp_path / "c"), "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.re_match_lines([
        r"infermatrix: building tiny-cnn \(torch fp32 on cpu\) \.\.\.",
        r"infermatrix: still building tiny-cnn \(torch fp32 on cpu\): \d+ s so far",
        r"infermatrix: built tiny-cnn \(torch fp32 on cpu\) in \d+\.\d s",
        r"infermatrix: 1/2 tests done in \d+ s, about \d+ s left",
        r"timed rounds: .*",
    ], consecutive=False)
    # the last test's line would only repeat the summary: none is printed
    assert "2/2 tests done" not in result.stdout.str()
