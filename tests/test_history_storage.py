"""What a run saves (fixtures/history_storage.py): finished cases only, whole files only, at the rootdir.

Each test runs pytest in a subprocess on a small benchmark file with the infermatrix plugin loaded,
and injects the fault: Ctrl-C during a case's rounds, a test failing after timing, a full disk
while pytest-benchmark writes the run, a run started from a subdirectory.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHES = """
import pytest

def test_first(benchmark):
    benchmark.pedantic(lambda: sum(range(100)), rounds=20)

def test_fails_after_timing(benchmark):
    benchmark.pedantic(lambda: sum(range(100)), rounds=20)
    assert False, "the case's check failed"

def test_interrupted_in_warmup(benchmark):
    calls = [0]
    def run():
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
    benchmark.pedantic(run, rounds=20, warmup_rounds=5)
"""

FULL_DISK = """
import errno
import pathlib

_open = pathlib.Path.open


class _FillsTheDisk:
    '''Writes part of the run file, then fails as a full disk does.'''
    def __init__(self, fh):
        self.fh = fh
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.fh.close()
    def write(self, data):
        self.fh.write(data[: len(data) // 3])
        raise OSError(errno.ENOSPC, "No space left on device")


def _open_on_a_full_disk(self, mode="r", *args, **kwargs):
    fh = _open(self, mode, *args, **kwargs)
    return _FillsTheDisk(fh) if "w" in mode and self.suffix == ".json" else fh


pathlib.Path.open = _open_on_a_full_disk
"""


@pytest.fixture
def project(tmp_path, repo_root):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["infermatrix.fixtures.plugin"]\n')
    (tmp_path / "benches").mkdir()
    (tmp_path / "benches" / "test_benches.py").write_text(BENCHES)
    env = {**os.environ, "PYTHONPATH": str(repo_root), "HF_HUB_OFFLINE": "1",
           "INFERMATRIX_CACHE": str(tmp_path / "cache")}
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        env.pop(var, None)

    def run(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    run.root = tmp_path
    return run


def saved(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]


def test_ctrl_c_keeps_the_finished_cases_and_says_what_was_left_out(project):
    res = project("benches", "--benchmark-autosave")
    out = res.stdout + res.stderr
    assert res.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "min() arg is an empty sequence" not in out
    [run] = saved(project.root / ".benchmarks")
    assert [b["name"] for b in run["benchmarks"]] == ["test_first"]
    assert run["benchmarks"][0]["stats"]["rounds"] == 20
    assert "not saved: benches/test_benches.py::test_interrupted_in_warmup (interrupted before its rounds finished)" in out
    assert "not saved: benches/test_benches.py::test_fails_after_timing (its test failed)" in out


def test_history_belongs_to_the_rootdir_when_run_from_a_subdirectory(project):
    res = project(".", "--benchmark-autosave", "-k", "first", cwd=project.root / "benches")
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(saved(project.root / ".benchmarks")) == 1
    assert not (project.root / "benches" / ".benchmarks").exists()
    # comparing from there against a run with other machine_info used to crash in
    # pytest-benchmark's FileStorage.location (a path outside the working directory)
    [path] = sorted((project.root / ".benchmarks").rglob("*.json"))
    data = json.loads(path.read_text())
    data["machine_info"]["node"] = "another-name"
    path.write_text(json.dumps(data))
    again = project(".", "--benchmark-compare", "-k", "first", cwd=project.root / "benches")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "machine_info differs" in again.stdout + again.stderr


def test_a_storage_the_user_names_is_kept(project, tmp_path):
    res = project("benches", "--benchmark-autosave", "-k", "first", "--benchmark-storage", "file://./elsewhere")
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(saved(project.root / "elsewhere")) == 1 and not (project.root / ".benchmarks").exists()


def test_a_full_disk_leaves_no_partial_run_file(project):
    (project.root / "benches" / "conftest.py").write_text(FULL_DISK)
    res = project("benches", "--benchmark-autosave", "-k", "first")
    out = res.stdout + res.stderr
    assert res.returncode == pytest.ExitCode.INTERNAL_ERROR, out
    assert "the run was not saved: [Errno 28] No space left on device; the partial file" in out
    assert list((project.root / ".benchmarks").rglob("*.json")) == []
