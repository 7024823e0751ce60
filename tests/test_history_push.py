"""The history branch's writer (.ci/history_branch.sh) against a real bare git repository: writers
that push to one branch at the same time all land, a rejected push is retried a bounded number of
times, and a conflict is never forced."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

BRANCH = "infermatrix-history"


@pytest.fixture
def git_env(tmp_path, monkeypatch) -> dict[str, str]:
    """git isolated from the host's configuration, with an identity."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "HISTORY_PUSH_PAUSE_S": "0"}
    return env


def git(env, cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def origin(tmp_path, git_env) -> Path:
    """A bare repository with the project on main, as GitHub holds it."""
    bare = tmp_path / "origin.git"
    git(git_env, tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    seed = tmp_path / "seed"
    git(git_env, tmp_path, "clone", "--quiet", str(bare), str(seed))
    (seed / "README.md").write_text("project\n")
    git(git_env, seed, "add", "README.md")
    git(git_env, seed, "commit", "--quiet", "-m", "project")
    git(git_env, seed, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    return bare


def clone(env, origin: Path, name: str) -> Path:
    path = origin.parent / name
    git(env, origin.parent, "clone", "--quiet", str(origin), str(path))
    return path


def script(repo_root, env, cwd, *args, attempts=8) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo_root / ".ci" / "history_branch.sh"), *args], cwd=cwd,
                          env={**env, "HISTORY_PUSH_ATTEMPTS": str(attempts)}, capture_output=True, text=True,
                          timeout=120)


def write_run(history: Path, kind: str, name: str) -> str:
    """What `infermatrix merge` adds: the kind's description (the same for every writer of the
    kind) and one run file of a unique name."""
    (history / kind / "runs").mkdir(parents=True, exist_ok=True)
    (history / kind / "kind.json").write_text(json.dumps({"id": kind, "label": kind, "fields": {}}))
    rel = f"{kind}/runs/{name}.json"
    (history / rel).write_text(json.dumps({"benchmarks": [], "name": name}))
    return rel


def remote_files(env, origin: Path) -> set[str]:
    return set(git(env, origin, "ls-tree", "-r", "--name-only", BRANCH).split())


def test_first_writers_start_the_branch_together_and_neither_is_lost(repo_root, git_env, origin):
    # two fan-ins find no history branch, each starts it as an orphan with the same kind
    clones = [clone(git_env, origin, f"runner{i}") for i in (1, 2)]
    runs = []
    for i, repo in enumerate(clones, 1):
        out = script(repo_root, git_env, repo, "checkout", "history")
        assert out.returncode == 0, out.stderr
        assert "orphan" in out.stdout
        assert sorted(p.name for p in (repo / "history").iterdir()) == [".git"]  # nothing of the project
        runs.append(write_run(repo / "history", "amd-epyc-2cpu-1a2b3c4d", f"20261206T10000{i}Z-aaaaaaaaaaaa"))
    procs = [subprocess.Popen(["bash", str(repo_root / ".ci" / "history_branch.sh"), "push", "history", "run"],
                              cwd=repo, env={**git_env, "HISTORY_PUSH_ATTEMPTS": "5"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for repo in clones]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert remote_files(git_env, origin) == {*runs, "amd-epyc-2cpu-1a2b3c4d/kind.json"}
    # one commit each, the second on top of the first (a rebase, not a forced push)
    assert len(git(git_env, origin, "rev-list", BRANCH).split()) == 2
    # main is untouched
    assert git(git_env, origin, "ls-tree", "--name-only", "main").split() == ["README.md"]


def test_a_stale_writer_is_rejected_once_rebases_and_lands(repo_root, git_env, origin):
    first, second = clone(git_env, origin, "a"), clone(git_env, origin, "b")
    assert script(repo_root, git_env, first, "checkout", "history").returncode == 0
    base = write_run(first / "history", "kind-a", "20261206T090000Z-000000000000")
    assert script(repo_root, git_env, first, "push", "history", "base").returncode == 0
    # both now hold the same head and add a run; the first pushes, so the second is stale
    out = script(repo_root, git_env, second, "checkout", "history")
    assert out.returncode == 0 and "checked out" in out.stdout, out.stderr
    run_a = write_run(first / "history", "kind-a", "20261206T100000Z-111111111111")
    run_b = write_run(second / "history", "kind-b", "20261206T100001Z-222222222222")
    assert script(repo_root, git_env, first, "push", "history", "a").returncode == 0
    out = script(repo_root, git_env, second, "push", "history", "b", attempts=3)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("push rejected") == 1
    assert "(attempt 2 of 3)" in out.stdout
    assert remote_files(git_env, origin) >= {base, run_a, run_b}
    assert len(git(git_env, origin, "rev-list", BRANCH).split()) == 3


def test_many_concurrent_writers_all_land(repo_root, git_env, origin):
    seed = clone(git_env, origin, "seed-history")
    assert script(repo_root, git_env, seed, "checkout", "history").returncode == 0
    write_run(seed / "history", "kind-a", "20261206T080000Z-000000000000")
    assert script(repo_root, git_env, seed, "push", "history", "seed").returncode == 0
    writers = [clone(git_env, origin, f"w{i}") for i in range(4)]
    expected = set(remote_files(git_env, origin))
    for i, repo in enumerate(writers):
        assert script(repo_root, git_env, repo, "checkout", "history").returncode == 0
        expected.add(write_run(repo / "history", "kind-a", f"20261206T10000{i}Z-{i:012d}"))
    env = {**git_env, "HISTORY_PUSH_ATTEMPTS": "10", "HISTORY_PUSH_PAUSE_S": "1"}
    procs = [subprocess.Popen(["bash", str(repo_root / ".ci" / "history_branch.sh"), "push", "history", f"w{i}"],
                              cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, repo in enumerate(writers)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert remote_files(git_env, origin) == expected
    # all but the first were stale when they started: each one was rejected at least once
    assert sum(out.count("push rejected") for out, _ in outputs) >= 3


def test_a_conflict_is_never_forced(repo_root, git_env, origin):
    first, second = clone(git_env, origin, "a"), clone(git_env, origin, "b")
    for repo in (first, second):
        assert script(repo_root, git_env, repo, "checkout", "history").returncode == 0
    # both refresh one kind's durations differently (the same path, different content)
    for repo, seconds in ((first, 1.0), (second, 2.0)):
        path = repo / "history" / "perf_tests" / "durations" / "kind-a.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"perf_tests/test_latency.py::test_latency[x]": seconds}))
    assert script(repo_root, git_env, first, "push", "history", "a").returncode == 0
    out = script(repo_root, git_env, second, "push", "history", "b")
    assert out.returncode == 3
    assert "perf_tests/durations/kind-a.json" in out.stderr
    shown = git(git_env, origin, "show", f"{BRANCH}:perf_tests/durations/kind-a.json")
    assert json.loads(shown) == {"perf_tests/test_latency.py::test_latency[x]": 1.0}
    # the losing writer's commit is still there to push by hand, its rebase aborted
    assert not (second / ".git" / "worktrees" / "history" / "rebase-merge").exists()


def test_the_retries_are_bounded(repo_root, git_env, origin):
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'rejected by the test' >&2\nexit 1\n")
    hook.chmod(0o755)
    repo = clone(git_env, origin, "a")
    assert script(repo_root, git_env, repo, "checkout", "history").returncode == 0
    write_run(repo / "history", "kind-a", "20261206T100000Z-000000000000")
    out = script(repo_root, git_env, repo, "push", "history", "a", attempts=3)
    assert out.returncode == 1
    assert out.stdout.count("push rejected") == 2  # attempts 1 and 2 retried, 3 was the last
    assert "after 3 attempts" in out.stderr


def test_nothing_new_is_not_a_commit(repo_root, git_env, origin):
    repo = clone(git_env, origin, "a")
    assert script(repo_root, git_env, repo, "checkout", "history").returncode == 0
    out = script(repo_root, git_env, repo, "push", "history", "empty")
    assert out.returncode == 0 and "nothing new" in out.stdout
    assert git(git_env, origin, "branch", "--list", BRANCH).strip() == ""


def test_usage_errors_exit_2(repo_root, git_env, origin):
    repo = clone(git_env, origin, "a")
    assert script(repo_root, git_env, repo, "pull", "history").returncode == 2
    assert script(repo_root, git_env, repo, "push", "history").returncode == 2
