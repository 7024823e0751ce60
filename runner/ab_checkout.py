"""`infermatrix ab`'s git checkouts: one worktree per ref side, under the run's temp folder.

A killed `ab` (SIGKILL, a CI timeout) never reaches its cleanup, so its worktrees stay registered
in the repository and their folders stay on disk. Each temp folder holds its owner's pid; the next
run removes the worktrees of every folder whose owner is gone, then lets git prune the rest.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from infermatrix.reports.history import InputError

PREFIX = "infermatrix-ab-"
OWNER = "owner.pid"


def new_temp_folder() -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=PREFIX))
    (tmp / OWNER).write_text(str(os.getpid()))
    return tmp


def checkout(repo: Path, ref: str, dest: Path) -> Path:
    res = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(dest), ref],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise InputError(f"git ref {ref!r} of {repo} cannot be checked out: {res.stderr.strip()}")
    return dest


def remove_checkout(repo: Path, path: Path) -> None:
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)], capture_output=True)


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False  # no owner recorded: nobody can still be using it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # someone else's live process
    return True


def prune_dead_checkouts(repo: Path) -> list[Path]:
    """Remove the worktrees that a killed `ab` left in ``repo``; returns their paths."""
    res = subprocess.run(["git", "-C", str(repo), "worktree", "list", "--porcelain"], capture_output=True, text=True)
    removed = []
    for line in res.stdout.splitlines():
        if not line.startswith("worktree "):
            continue
        path = Path(line.removeprefix("worktree "))
        folder = path.parent
        if folder.name.startswith(PREFIX) and not _alive(folder / OWNER):
            remove_checkout(repo, path)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(path)
    subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)
    return removed
