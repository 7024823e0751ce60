"""Hostile input that used to end in an INTERNALERROR or run away (issue 16, item 15): a non-UTF-8
config file, an engine cache under a regular file, more threads than the machine has."""
from __future__ import annotations

from pathlib import Path

import pytest

from infermatrix.fixtures.config import build_run_config
from infermatrix.fixtures.option_values import usable_cpus


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("INFERMATRIX_CACHE", raising=False)


def build(tmp_path: Path, env: dict | None = None, **cli):
    return build_run_config(cli, rootdir=tmp_path, env=env or {})


def test_a_config_file_that_is_not_utf8_is_a_usage_error_naming_it(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes(b'models = ["tiny-cnn"]\n# caf\xe9 in latin-1\n')
    with pytest.raises(pytest.UsageError) as info:
        build(tmp_path, config=str(path))
    assert str(path) in str(info.value) and "not UTF-8 text" in str(info.value) and "\\xe9" in str(info.value)


@pytest.mark.parametrize("where", ["cli", "env"])
def test_an_engine_cache_under_a_regular_file_is_a_usage_error(tmp_path, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    wanted = str(blocker / "cache" / "deeper")
    with pytest.raises(pytest.UsageError) as info:
        if where == "cli":
            build(tmp_path, engine_cache=wanted)
        else:
            build(tmp_path, env={"INFERMATRIX_CACHE": wanted})
    assert f"{blocker} is a file, so no folder can be made under it" in str(info.value)


def test_threads_are_bounded_by_the_cpus_this_process_may_use(tmp_path):
    usable = usable_cpus()
    assert build(tmp_path, threads=str(usable)).matrix.threads == usable
    with pytest.raises(pytest.UsageError) as info:
        build(tmp_path, threads="10000")
    assert f"this machine lets the run use {usable} CPU(s); expected 1..{usable}" in str(info.value)
    with pytest.raises(pytest.UsageError, match="expected a positive integer"):
        build(tmp_path, threads="0")


def test_the_pytest_run_says_it_as_a_usage_error_not_an_internal_error(pytester, repo_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = pytester.runpytest_inprocess(str(repo_root / "perf_tests" / "test_latency.py"), "--collect-only", "-q",
                                       "-p", "no:cacheprovider", "--engine-cache", str(blocker / "sub"))
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in res.stdout.str() + res.stderr.str()
    res.stderr.fnmatch_lines([f"*{blocker} is a file, so no folder can be made under it*"])
