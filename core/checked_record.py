"""One JSON record per file, checksummed and written whole: what the run keeps beside its engines
(the peak calibration, runner/peak.py; the memory figures, runner/memory_reuse.py).

A reader sees the old file or the new one, never half of one (a temporary file, then
``os.replace``), and a damaged file is told from a missing one: :func:`load` raises
:class:`CorruptRecord` saying what is wrong, so the owner measures again and says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CHECKSUM = "checksum"


class CorruptRecord(ValueError):
    """The file exists and cannot be trusted: unreadable, not JSON, another schema or a checksum that fails."""


def canonical(body: Any) -> str:
    """The one text a body hashes as (sorted keys, no spaces, no NaN)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(body: Any) -> str:
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def load(path: Path, schema: int) -> dict[str, Any] | None:
    """The record's body (its ``checksum`` removed); None when there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptRecord(f"unreadable: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CorruptRecord(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema") if isinstance(data, dict) else data
        raise CorruptRecord(f"schema {found!r}; expected {schema}")
    body = {k: v for k, v in data.items() if k != CHECKSUM}
    try:
        matches = data.get(CHECKSUM) == digest(body)
    except (ValueError, RecursionError) as exc:  # a NaN or Infinity json.loads took, or nesting past the stack
        raise CorruptRecord(f"its contents are not plain JSON values: {exc}") from exc
    if not matches:
        raise CorruptRecord("its checksum does not match its contents")
    return body


def dump(path: Path, body: dict[str, Any]) -> None:
    """Write ``body`` (with its ``schema``) and its checksum whole; the folder must exist."""
    if CHECKSUM in body or "schema" not in body:
        raise ValueError(f"a record body has a 'schema' and no {CHECKSUM!r}; got keys {sorted(body)}")
    text = json.dumps({**json.loads(canonical(body)), CHECKSUM: digest(body)}, indent=1)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make a cache shared between users unreadable to the others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
