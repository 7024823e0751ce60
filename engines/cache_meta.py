"""``meta.json`` of an engine cache entry, as a typed and checksummed record.

A parsed meta is only trusted once every field has its type and shape, the key is the entry's
directory name and the hash of the recorded fields, ``artifact_bytes`` is the sum of the files'
sizes, and ``checksum`` (sha256 of the canonical JSON of everything else) matches. A single
flipped bit anywhere in the file then either breaks one of those checks or leaves the parsed
record identical (e.g. the case of a hex digit in a ``\\u00e9`` escape); it is never accepted as
something else. Any failure is :class:`MetaError`, which the cache treats as a corrupt entry.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

META = "meta.json"
META_FORMAT = 2  # 1: the unchecked meta of earlier versions (no format, no checksum)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYS = frozenset({"format", "engine", "key", "fields", "build_seconds", "artifact_bytes", "files",
                   "created", "checksum"})


class MetaError(ValueError):
    """meta.json does not describe a valid entry: the entry is corrupt."""


def plain_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` as meta.json reads them back (tuples as lists, non-str keys and objects as str)."""
    return json.loads(json.dumps(dict(fields), default=str))


def cache_key(fields: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``fields``: any change of any field changes the key. Taken
    of the fields as JSON reads them back, so a meta.json's own fields hash to its key."""
    blob = json.dumps(plain_fields(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise MetaError(f"non-finite number {name}; meta.json holds only finite numbers")


def _want(cond: bool, what: str) -> None:
    if not cond:
        raise MetaError(what)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _sha_shape(v: Any, where: str) -> str:
    _want(isinstance(v, str) and _HEX64.fullmatch(v) is not None,
          f"{where} is {v!r}; expected 64 lowercase hex digits (a sha256)")
    return v


def _safe_rel(rel: Any) -> str:
    """A file name inside the entry: relative, no '..', not meta.json itself."""
    _want(isinstance(rel, str) and rel != "", f"files: name {rel!r}; expected a non-empty relative path")
    p = PurePosixPath(rel)
    _want(not p.is_absolute() and ".." not in p.parts and p.as_posix() == rel and rel != META
          and "\\" not in rel and "\x00" not in rel, f"files: name {rel!r} is not a plain path inside the entry")
    return rel


@dataclass(frozen=True)
class FileRecord:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class EntryMeta:
    engine: str
    key: str
    fields: Mapping[str, Any]
    build_seconds: float
    artifact_bytes: int
    files: Mapping[str, FileRecord]
    created: str
    format: int = META_FORMAT
    checksum: str = field(default="", compare=True)

    # ---- writing ----
    @classmethod
    def new(cls, engine: str, key: str, fields: Mapping[str, Any], build_seconds: float,
            files: Mapping[str, FileRecord]) -> EntryMeta:
        """A meta for a fresh build, checksummed; its fields as JSON would read them back."""
        fields = plain_fields(fields)
        draft = cls(engine=engine, key=key, fields=fields, build_seconds=float(build_seconds),
                    artifact_bytes=sum(f.bytes for f in files.values()), files=dict(sorted(files.items())),
                    created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        return cls(**{**draft.__dict__, "checksum": hashlib.sha256(_canonical(draft._body()).encode()).hexdigest()})

    def _body(self) -> dict[str, Any]:
        return {"format": self.format, "engine": self.engine, "key": self.key, "fields": self.fields,
                "build_seconds": self.build_seconds, "artifact_bytes": self.artifact_bytes,
                "files": {rel: {"bytes": f.bytes, "sha256": f.sha256} for rel, f in self.files.items()},
                "created": self.created}

    def to_json(self) -> str:
        return json.dumps({**self._body(), "checksum": self.checksum}, indent=1, sort_keys=True,
                          ensure_ascii=True, allow_nan=False)

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON data (what meta.json holds)."""
        return json.loads(self.to_json())

    # ---- reading ----
    @classmethod
    def from_json(cls, text: str, *, engine: str, key: str) -> EntryMeta:
        """Parse and check ``text`` for the entry ``<engine>/<key>``; :class:`MetaError` if anything is off."""
        try:
            raw = json.loads(text, parse_constant=_reject_constant)
        except RecursionError as exc:
            raise MetaError(f"not JSON: {exc}") from None
        except ValueError as exc:  # JSONDecodeError, and MetaError from parse_constant
            raise MetaError(f"not JSON: {exc}") from None
        _want(isinstance(raw, dict), f"top level is {type(raw).__name__}; expected an object")
        _want(set(raw) == _KEYS, f"keys {sorted(raw)}; expected {sorted(_KEYS)}"
              + ("" if "checksum" in raw else " (written by an earlier infermatrix?)"))
        _want(_is_int(raw["format"]) and raw["format"] == META_FORMAT,
              f"format {raw['format']!r}; expected {META_FORMAT}")
        _want(isinstance(raw["engine"], str) and raw["engine"] == engine,
              f"engine {raw['engine']!r}; the entry's directory says {engine!r}")
        _want(isinstance(raw["key"], str) and raw["key"] == key,
              f"key {raw['key']!r}; the entry's directory says {key!r}")
        _want(isinstance(raw["fields"], dict), f"fields is {type(raw['fields']).__name__}; expected an object")
        _want(cache_key(raw["fields"]) == key, "fields do not hash to the entry's key")
        secs = raw["build_seconds"]
        _want(isinstance(secs, (int, float)) and not isinstance(secs, bool) and math.isfinite(secs) and secs >= 0,
              f"build_seconds {secs!r}; expected a finite number >= 0")
        _want(isinstance(raw["files"], dict), f"files is {type(raw['files']).__name__}; expected an object")
        files: dict[str, FileRecord] = {}
        for rel, rec in raw["files"].items():
            _safe_rel(rel)
            _want(isinstance(rec, dict) and set(rec) == {"bytes", "sha256"},
                  f"files[{rel!r}] is {rec!r}; expected {{'bytes': int, 'sha256': hex}}")
            _want(_is_int(rec["bytes"]) and rec["bytes"] >= 0, f"files[{rel!r}].bytes {rec['bytes']!r}; expected an int >= 0")
            files[rel] = FileRecord(rec["bytes"], _sha_shape(rec["sha256"], f"files[{rel!r}].sha256"))
        total = raw["artifact_bytes"]
        _want(_is_int(total) and total == sum(f.bytes for f in files.values()),
              f"artifact_bytes {total!r}; the files add up to {sum(f.bytes for f in files.values())}")
        _want(isinstance(raw["created"], str), f"created {raw['created']!r}; expected a timestamp string")
        meta = cls(engine=engine, key=key, fields=raw["fields"], build_seconds=float(secs),
                   artifact_bytes=total, files=files, created=raw["created"],
                   checksum=_sha_shape(raw["checksum"], "checksum"))
        # the body as parsed, re-serialised: build_seconds must keep the JSON type it was written with
        body = {**meta._body(), "build_seconds": secs}
        _want(hashlib.sha256(_canonical(body).encode()).hexdigest() == meta.checksum,
              "checksum does not match the content (a changed field)")
        return meta
