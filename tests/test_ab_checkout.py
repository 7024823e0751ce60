"""A killed `infermatrix ab` leaves its git worktrees registered; the next run prunes them (issue 16 item 15)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from infermatrix.runner.ab_checkout import OWNER, checkout, new_temp_folder, prune_dead_checkouts

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    (path / "a.txt").write_text("a")
    git(path, "add", "a.txt")
    git(path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "a")
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_worktrees_of_a_killed_run_are_removed_and_a_live_runs_are_kept(repo):
    killed = new_temp_folder()
    (killed / OWNER).write_text(str(dead_pid()))
    left = checkout(repo, "HEAD", killed / "base")
    live = new_temp_folder()  # owned by this (running) process
    kept = checkout(repo, "HEAD", live / "base")
    try:
        assert str(left) in git(repo, "worktree", "list")
        assert prune_dead_checkouts(repo) == [left]
        listed = git(repo, "worktree", "list")
        assert str(left) not in listed and not killed.exists()
        assert str(kept) in listed and kept.is_dir()
    finally:
        git(repo, "worktree", "remove", "--force", str(kept))
        shutil.rmtree(live, ignore_errors=True)
        shutil.rmtree(killed, ignore_errors=True)


def test_a_worktree_whose_folder_was_deleted_is_pruned(repo):
    gone = new_temp_folder()
    checkout(repo, "HEAD", gone / "new")
    shutil.rmtree(gone)
    prune_dead_checkouts(repo)
    assert git(repo, "worktree", "list").count("\n") == 1   # only the repository itself
