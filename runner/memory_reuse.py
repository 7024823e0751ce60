"""A case's memory figures, kept in the engine cache and reused while nothing that makes them changed.

An engine's memory (runner/memory.py: load RSS, run peak, GPU peak, each measured alone in a
process of its own) is a property of the artifact, the batch, the thread count, the libraries and
the host, not of the run: measured again on the same of all of them it moves by the allocator's
own spread (about 2 MiB for PyTorch here), where the timings move by 10-35 %. A warm default
matrix spent about half of its wall time measuring it again. So a clean measurement is kept,
one file per case under ``<engine cache>/_memory/``, keyed by everything it depends on:

- the memory request (model and its source, engine, precision, int8 scheme, batch, device,
  threads, TF32, warm-up and rounds) and the method (fork server or fresh interpreter);
- the engine entry's cache key (weights and code digest, library versions, recipe, settings,
  host fingerprint) and the artifact's sha256;
- the inputs' digest (their bytes, shapes and dtypes);
- the hardware kind id (CPU model and the flags that change results, usable CPUs, GPU, driver,
  CUDA, every engine library's version: core/hardware_kind.py);
- the digest of the code that measures (runner/memory*.py, runner/policy.py,
  scenarios/measure.py, models/handoff.py) and of every engine module;
- the process's settings: the Python build, the kernel, transparent huge pages, and the
  allocator and thread variables of the environment (``MEMORY_ENV``).

A reused figure says so: ``memory_method`` ends with when it was measured, and the record's
details carry ``memory_measured_at`` and ``memory_reused``. ``--memory-remeasure`` measures every
case again (and keeps the new figures); ``--engine-cache-clear`` removes them with the engines.
Only a clean figure is kept (no ``memory_error``, every figure the device has); a damaged file
is measured again with a :class:`CorruptMemoryRecordWarning`; a cache that cannot be written
keeps nothing and the run measures as before.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from infermatrix.core import checked_record

MEMORY_DIR = "_memory"  # inside the engine cache root, beside the engines (cleared with them)
SCHEMA = 1
_ROOT = Path(__file__).resolve().parents[1]
#: the code whose change can move a figure; every engine module is added to it
MEASURING_CODE = ("runner/memory.py", "runner/memory_server.py", "runner/memory_client.py", "runner/memory_gpu.py",
                  "runner/policy.py", "scenarios/measure.py", "models/handoff.py")
#: the request's fields that say what is measured (the entry's and the cache's paths are not: its key is)
REQUEST_FIELDS = ("model", "source", "inputs", "engine", "precision", "int8_scheme", "batch_size", "example_batch",
                  "device", "threads", "tf32", "seed", "warmup", "rounds")
#: environment variables that change an allocator's or a thread pool's footprint
MEMORY_ENV = ("LD_PRELOAD", "MALLOC_ARENA_MAX", "MALLOC_CONF", "GLIBC_TUNABLES", "PYTHONMALLOC", "OMP_NUM_THREADS",
              "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_code_digest: str | None = None


class CorruptMemoryRecordWarning(UserWarning):
    """A kept memory figure failed its checks: the case is measured again."""


def measuring_code_digest() -> str:
    """sha256 over the measuring modules and the engines package, by relative path (memoised)."""
    global _code_digest
    if _code_digest is None:
        files = sorted({*(_ROOT / rel for rel in MEASURING_CODE), *(_ROOT / "engines").glob("*.py")})
        h = hashlib.sha256()
        for path in files:
            h.update(path.relative_to(_ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        _code_digest = h.hexdigest()
    return _code_digest


def inputs_digest(inputs: dict[str, Any]) -> str:
    """The inputs' bytes, shapes and dtypes by name (numpy arrays or CPU tensors)."""
    import numpy as np
    h = hashlib.sha256()
    for name in sorted(inputs):
        array = np.ascontiguousarray(np.asarray(inputs[name]))
        h.update(f"{name}:{array.dtype.str}:{array.shape}".encode() + b"\0" + array.tobytes() + b"\0")
    return h.hexdigest()


def process_settings() -> dict[str, Any]:
    """What moves resident memory beside the code and the libraries: the Python build, the
    kernel, transparent huge pages, and the allocator and thread settings of the environment."""
    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        thp = None
    return {"python": sys.version, "kernel": platform.release(), "transparent_hugepage": thp,
            "env": {k: os.environ.get(k) for k in MEMORY_ENV}}


def reuse_key(request: dict[str, Any], *, method: str, entry_key: str, artifact_sha256: str | None,
              inputs: str, kind_id: str) -> dict[str, Any]:
    """Everything a kept figure depends on (the module's list)."""
    missing = [f for f in REQUEST_FIELDS if f not in request]
    if missing:
        raise ValueError(f"memory request without {missing}; expected the fields {list(REQUEST_FIELDS)}")
    key = {"request": {f: request[f] for f in REQUEST_FIELDS}, "method": method, "entry": entry_key,
           "artifact_sha256": artifact_sha256, "inputs": inputs, "kind": kind_id, "code": measuring_code_digest(),
           "process": process_settings()}
    return json.loads(checked_record.canonical(key))  # as it reads back from its file (a source's tuple is a list)


def clean(info: dict[str, Any], device: str) -> bool:
    """A figure worth keeping: measured without an error, with every figure the device has."""
    wanted = ("load_rss_bytes", "run_peak_rss_bytes") + (("gpu_peak_bytes",) if device == "cuda" else ())
    return not info.get("memory_error") and all(isinstance(info.get(k), int) for k in wanted)


class MemoryReuse:
    """The kept figures of one engine cache root on this hardware kind."""

    def __init__(self, root: Path | None, kind_id: str, *, remeasure: bool = False) -> None:
        self.folder = Path(root).expanduser() / MEMORY_DIR if root is not None else None
        self.kind_id, self.remeasure = kind_id, remeasure

    def _path(self, key: dict[str, Any]) -> Path:
        return self.folder / f"{checked_record.digest(key)[:32]}.json"

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The kept figures for ``key`` with their measurement time, or None (to be measured)."""
        if self.folder is None or self.remeasure:
            return None
        path = self._path(key)
        try:
            body = checked_record.load(path, SCHEMA)
        except checked_record.CorruptRecord as exc:
            return self._damaged(path, str(exc))
        if body is None:
            return None
        if body.get("key") != key or not isinstance(body.get("figures"), dict) or not body.get("measured_at"):
            return self._damaged(path, "it holds another case's key or no figures")
        return {**body["figures"], "memory_measured_at": body["measured_at"]}

    @staticmethod
    def _damaged(path: Path, why: str) -> None:
        """Remove the damaged file first (a warning turned into an error must not keep it), then say so."""
        try:
            path.unlink()
        except OSError:  # a read-only cache: it stays, and is measured again each run
            pass
        warnings.warn(f"memory record {path} is corrupt ({why}); measuring the case again",
                      CorruptMemoryRecordWarning, stacklevel=3)

    def put(self, key: dict[str, Any], info: dict[str, Any], device: str) -> dict[str, Any]:
        """Keep ``info`` when it is clean; returns it with its measurement time (now) and, for a
        clean figure that could not be kept, ``memory_not_kept`` saying why."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.folder is None or not clean(info, device):
            return {**info, "memory_measured_at": now}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            checked_record.dump(self._path(key), {"schema": SCHEMA, "key": key, "measured_at": now,
                                                  "figures": json_figures(info)})
        except OSError as exc:  # a read-only shared cache, a full disk: measured for this run, kept nowhere
            return {**info, "memory_measured_at": now,
                    "memory_not_kept": f"memory figures not kept: {self.folder}: {exc.strerror or exc}"}
        return {**info, "memory_measured_at": now}


def json_figures(info: dict[str, Any]) -> dict[str, Any]:
    """The parts of a measurement that are kept (plain JSON values)."""
    return {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool, type(None)))}


def reused(figures: dict[str, Any]) -> dict[str, Any]:
    """A kept measurement as this run's record gives it: the method says when it was measured."""
    when = figures["memory_measured_at"]
    note = (f"; reused: measured {when} by an earlier run on this hardware kind (same engine entry, batch, threads, "
            "inputs, libraries and measuring code; --memory-remeasure measures again)")
    return {**figures, "memory_method": (figures.get("memory_method") or "") + note, "memory_reused": True}
