"""The history's layout on disk, read and written here only (reports and commands import this).

    HISTORY/
      <kind id>/
        kind.json                                            # HardwareKind.to_json()
        runs/<YYYYmmddTHHMMSSZ>-<commit 12 hex | nocommit>[-incomplete].json

One folder per hardware kind, so that runs of two kinds are never one series; a run file is
pytest-benchmark's JSON (``pytest-benchmark compare FILE`` reads it) plus the ``infermatrix_run``
record (core/run_record.py). A run file is never overwritten: it is written to a temporary file in
the same folder and hard-linked to its name, which fails when the name exists, so a second merge of
the same run is refused and a failed write leaves no half-written run.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

KIND_FILE = "kind.json"
RUNS_DIR = "runs"
RUN_KEY = "infermatrix_run"
NO_COMMIT = "nocommit"
INCOMPLETE_SUFFIX = "-incomplete"
SHORT_COMMIT_LEN = 12

KIND_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
RUN_NAME_RE = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)-(?P<commit>[0-9a-f]{12}|nocommit)(?P<incomplete>-incomplete)?\.json$")


class HistoryLayoutError(ValueError):
    """A history folder or run that does not follow the layout (the message names the path/value)."""


class RunExistsError(HistoryLayoutError, FileExistsError):
    """The run's file is already in the history: runs are never overwritten."""

    def __init__(self, path: Path):
        super().__init__(f"{path} already exists: a run in the history is never overwritten "
                         f"(this run was merged before)")
        self.path = path


class KindLike(Protocol):
    """What write_run needs of a hardware kind (core/hardware_kind.py HardwareKind)."""

    @property
    def id(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RunEntry:
    """One run file of one kind, as its name says (the file itself is read by load_run)."""

    path: Path
    kind_id: str
    datetime: datetime        # UTC, to the second (the run's start)
    commit: str | None        # the commit's first 12 hex digits; None: run outside a git checkout
    complete: bool

    def __post_init__(self) -> None:
        check_kind_id(self.kind_id)
        if self.datetime.tzinfo is None:
            raise HistoryLayoutError(f"RunEntry datetime {self.datetime!r} has no time zone (must be UTC)")
        if self.commit is not None and not re.fullmatch(r"[0-9a-f]{12}", self.commit):
            raise HistoryLayoutError(f"RunEntry commit {self.commit!r} is not 12 hex digits or None")


def check_kind_id(kind_id: str) -> str:
    if not isinstance(kind_id, str) or not KIND_ID_RE.fullmatch(kind_id):
        raise HistoryLayoutError(f"kind id {kind_id!r} is not a kind id ([a-z0-9-], 1 to 80 characters)")
    return kind_id


def parse_utc(value: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (a naive one is taken as UTC, as pytest-benchmark
    wrote them before 4.0)."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise HistoryLayoutError(f"datetime {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def run_file_name(when: datetime | str, commit: str | None, complete: bool) -> str:
    """``20250101T120000Z-0123456789ab.json``; ``-incomplete`` before ``.json`` when not complete."""
    stamp = (parse_utc(when) if isinstance(when, str) else when.astimezone(timezone.utc)).strftime(_STAMP_FORMAT)
    if commit is None:
        short = NO_COMMIT
    else:
        short = str(commit).lower()[:SHORT_COMMIT_LEN]
        if not re.fullmatch(r"[0-9a-f]{12}", short):
            raise HistoryLayoutError(f"commit {commit!r} is not a git commit id (at least 12 hex digits)")
    return f"{stamp}-{short}{'' if complete else INCOMPLETE_SUFFIX}.json"


def parse_run_file_name(name: str, kind_id: str, folder: Path) -> RunEntry | None:
    """The entry a run file's name describes; None for a name that is not a run's (a temporary
    file, a note someone left)."""
    match = RUN_NAME_RE.fullmatch(name)
    if match is None:
        return None
    when = datetime.strptime(match["stamp"], _STAMP_FORMAT).replace(tzinfo=timezone.utc)
    commit = None if match["commit"] == NO_COMMIT else match["commit"]
    return RunEntry(path=folder / name, kind_id=kind_id, datetime=when, commit=commit,
                    complete=match["incomplete"] is None)


def kind_dir(history: Path, kind_id: str) -> Path:
    return Path(history) / check_kind_id(kind_id)


def runs_dir(history: Path, kind_id: str) -> Path:
    return kind_dir(history, kind_id) / RUNS_DIR


def kinds(history: Path) -> list[str]:
    """The kind ids that have a folder in the history (kind.json or runs/), sorted."""
    history = Path(history)
    if not history.is_dir():
        return []
    return sorted(p.name for p in history.iterdir()
                  if p.is_dir() and KIND_ID_RE.fullmatch(p.name)
                  and ((p / KIND_FILE).is_file() or (p / RUNS_DIR).is_dir()))


def kind_json(history: Path, kind_id: str) -> dict[str, Any] | None:
    """The kind's kind.json ({"id", "label", "fields"}); None when the folder has none."""
    path = kind_dir(history, kind_id) / KIND_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HistoryLayoutError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HistoryLayoutError(f"{path}: a JSON object expected, found {type(data).__name__}")
    return data


def kind_label(history: Path, kind_id: str) -> str:
    """The kind's human line from its kind.json; the id itself when there is no label."""
    data = kind_json(history, kind_id) or {}
    label = data.get("label")
    return label if isinstance(label, str) and label else kind_id


def runs(history: Path, kind_id: str, include_incomplete: bool = False) -> list[RunEntry]:
    """The kind's runs, oldest first (then by name); incomplete runs only when asked for: an
    incomplete run is never read as a point of the series."""
    folder = runs_dir(history, kind_id)
    if not folder.is_dir():
        return []
    entries = [e for e in (parse_run_file_name(p.name, kind_id, folder) for p in folder.iterdir() if p.is_file())
               if e is not None and (include_incomplete or e.complete)]
    return sorted(entries, key=lambda e: (e.datetime, e.path.name))


def load_run(entry: RunEntry | Path) -> dict[str, Any]:
    """A run file's JSON (pytest-benchmark's format plus the infermatrix_run record)."""
    path = entry.path if isinstance(entry, RunEntry) else Path(entry)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HistoryLayoutError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise HistoryLayoutError(f"{path}: not a pytest-benchmark run (no 'benchmarks' list)")
    return data


def _write_new(path: Path, text: str) -> None:
    """Write a file that must not exist yet: all of it or nothing (temp file + fsync + link)."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)   # atomic, and fails when the name exists: never an overwrite
        except FileExistsError:
            raise RunExistsError(path) from None
        except OSError:
            # a file system without hard links: check, then rename (a race here is only possible
            # between two writers of the very same run)
            if path.exists():
                raise RunExistsError(path) from None
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_kind(history: Path, kind: KindLike) -> Path:
    """The kind's folder and kind.json (written once; an existing one is kept)."""
    folder = kind_dir(history, kind.id)
    (folder / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    path = folder / KIND_FILE
    if not path.exists():
        with contextlib.suppress(RunExistsError):   # a concurrent writer of the same kind won
            _write_new(path, json.dumps(kind.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def write_run(history: Path, kind: KindLike, data: dict[str, Any]) -> Path:
    """Store one merged run under its kind; its name comes from its infermatrix_run record.

    Raises RunExistsError (naming the file) when the run is already there.
    """
    from .run_record import RunRecord   # the record's own module validates the block

    record = RunRecord.from_json(data.get(RUN_KEY))
    if record.kind != kind.id:
        raise HistoryLayoutError(f"run of kind {record.kind!r} cannot be stored under kind {kind.id!r}")
    write_kind(history, kind)
    path = runs_dir(history, kind.id) / run_file_name(record.datetime, record.commit, record.complete)
    if path.exists():
        raise RunExistsError(path)
    _write_new(path, json.dumps(data, indent=2) + "\n")
    return path
