"""A read-only, fully built cache serves every entry it holds (issue 16, item 10).

Three ways of making the cache unwritable, since these tests may run as root (which ignores file
permissions):
- simulated: ``mkdir`` and the lock raise PermissionError (always runs);
- chmod: the cache folder made read-only (skipped as root, where it would not be);
- a real read-only bind mount in a private mount namespace (``unshare -m``; skipped where the
  process may not create one), which refuses writes to root too. This one runs whole sessions:
  ONNX Runtime (with its ONNX stage) and torch.compile (whose inductor files come from the entry).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from filelock import FileLock

from infermatrix.core.schema import Case
from infermatrix.engines.cache import CorruptEntryWarning, EngineCache, ReadOnlyCacheError
from infermatrix.runner.session import RunSession


def write_artifact(stage: Path) -> None:
    (stage / "model.bin").write_bytes(b"\x02" * 128)


def refuse_writes(monkeypatch) -> list[str]:
    """Every mkdir and lock acquire raises PermissionError (EACCES); returns what was attempted."""
    attempts: list[str] = []

    def mkdir(self, *a, **k):
        attempts.append(f"mkdir {self}")
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    def acquire(self, *a, **k):
        attempts.append(f"lock {self.lock_file}")
        raise PermissionError(errno.EACCES, "Permission denied", self.lock_file)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(FileLock, "acquire", acquire)
    return attempts


def test_simulated_read_only_cache_serves_an_intact_entry_without_the_lock(tmp_path, monkeypatch):
    cache = EngineCache(tmp_path / "cache")
    built = cache.get_or_build("eng", {"a": 1}, write_artifact)
    attempts = refuse_writes(monkeypatch)
    again = cache.get_or_build("eng", {"a": 1}, lambda stage: pytest.fail("rebuilt an intact entry"))
    assert not again.built and again.meta == built.meta
    assert attempts == [], f"serving an intact entry tried to write: {attempts}"


def test_simulated_read_only_cache_missing_entry_is_a_clear_error(tmp_path, monkeypatch):
    cache = EngineCache(tmp_path / "cache")
    cache.get_or_build("eng", {"a": 1}, write_artifact)
    refuse_writes(monkeypatch)
    with pytest.raises(ReadOnlyCacheError, match=r"engine cache .*cache is read-only .*eng/[0-9a-f]{64} is missing"):
        cache.get_or_build("eng", {"a": 2}, lambda stage: pytest.fail("built in a read-only cache"))


def test_simulated_read_only_cache_corrupt_entry_is_a_clear_error(tmp_path, monkeypatch):
    cache = EngineCache(tmp_path / "cache")
    entry = cache.get_or_build("eng", {"a": 1}, write_artifact)
    (entry.path / "model.bin").write_bytes(b"\x03" * 128)
    refuse_writes(monkeypatch)
    with pytest.raises(ReadOnlyCacheError, match=r"read-only.*is corrupt \(model.bin fails its sha256"):
        cache.get_or_build("eng", {"a": 1}, write_artifact)
    assert (entry.path / "model.bin").exists(), "the corrupt entry of a read-only cache was touched"


def test_a_case_missing_from_a_read_only_cache_fails_without_saying_building(tmp_path, monkeypatch):
    from infermatrix.runner.session import CaseFailed
    session = RunSession(EngineCache(tmp_path / "cache"))
    try:
        session.baseline_outputs(Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu"))  # the eager baseline builds nothing
        refuse_writes(monkeypatch)
        with pytest.raises(CaseFailed) as info:
            session.engine(Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu"))
    finally:
        session.close()
    assert str(info.value).startswith("tiny-cnn-onnxruntime-fp32-bs1-cpu: engine cache ")
    assert "read-only" in str(info.value) and "building" not in str(info.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions (chmod)")
def test_chmod_read_only_cache(tmp_path):
    cache = EngineCache(tmp_path / "cache")
    cache.get_or_build("eng", {"a": 1}, write_artifact)
    folders = [cache.root, cache.root / "eng", *(p for p in (cache.root / "eng").iterdir() if p.is_dir())]
    for d in folders:
        d.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert not cache.get_or_build("eng", {"a": 1}, write_artifact).built
        with pytest.raises(ReadOnlyCacheError, match="read-only"):
            cache.get_or_build("eng", {"a": 2}, write_artifact)
    finally:
        for d in folders:
            d.chmod(stat.S_IRWXU)


# ---- a real read-only mount ----

CHILD = textwrap.dedent("""
    import json, os, subprocess, sys, warnings
    from pathlib import Path
    root = Path(sys.argv[1])
    subprocess.run(["mount", "--bind", str(root), str(root)], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", str(root)], check=True)
    warnings.simplefilter("error")  # nothing may be reported corrupt or rebuilt
    import numpy as np
    from infermatrix.core.schema import Case
    from infermatrix.engines.cache import EngineCache, ReadOnlyCacheError
    from infermatrix.models.builtin import register_builtin_models
    from infermatrix.runner.policy import ProcessPolicy
    from infermatrix.runner.session import RunSession
    register_builtin_models()
    ProcessPolicy(root).apply()  # as the plugin does: inductor's process-wide folder inside the (read-only) cache
    out = {}
    try:
        (root / "probe").write_text("x")
        out["writable"] = True
    except OSError as exc:
        out["writable"] = exc.errno
    import torch._dynamo  # noqa: F401  (creates inductor's cache folder: it must not be in the read-only cache)
    out["inductor"] = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    session = RunSession(EngineCache(root))
    for engine in ("onnxruntime", "torch_compile"):
        case = Case("tiny-cnn", engine, "fp32", 1, "cpu")
        loaded = session.engine(case)
        report = session.equivalence(case)
        out[engine] = {"built": loaded.entry.built, "passed": report.passed}
    session.close()
    for name, fields in (("missing", {"never": "built"}), ("corrupt", {"c": 1})):
        try:
            EngineCache(root).get_or_build("eng", fields, lambda stage: None)
            out[name] = "served"
        except ReadOnlyCacheError as exc:
            out[name] = str(exc)
    print(json.dumps(out))
""")


def can_mount_read_only(tmp_path: Path) -> str | None:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare/mount not installed"
    probe = tmp_path / "probe"
    probe.mkdir()
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {probe} {probe} && mount -o remount,ro,bind {probe} {probe}"],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"cannot create a private read-only mount here: {r.stderr.strip()}"


def test_read_only_mount_serves_every_entry_it_holds(tmp_path):
    why = can_mount_read_only(tmp_path)
    if why:
        pytest.skip(why)
    root = tmp_path / "cache"
    session = RunSession(EngineCache(root))
    for engine in ("onnxruntime", "torch_compile"):
        assert session.equivalence(Case("tiny-cnn", engine, "fp32", 1, "cpu")).passed
    session.close()
    corrupt = EngineCache(root).get_or_build("eng", {"c": 1}, write_artifact)
    (corrupt.path / "model.bin").write_bytes(b"\x00")
    r = subprocess.run(["unshare", "-m", sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["writable"] == errno.EROFS, "the cache was not mounted read-only"
    assert not out["inductor"].startswith(str(root)), out["inductor"]   # a folder of the process instead
    for engine in ("onnxruntime", "torch_compile"):
        assert out[engine] == {"built": False, "passed": True}, (engine, out[engine])
    assert "read-only" in out["missing"] and str(root) in out["missing"] and "is missing" in out["missing"]
    assert "read-only" in out["corrupt"] and "is corrupt (model.bin is 1 bytes" in out["corrupt"]
    # back in a writable cache, the corrupt entry is rebuilt with a warning
    with pytest.warns(CorruptEntryWarning):
        assert EngineCache(root).get_or_build("eng", {"c": 1}, write_artifact).built


# the cache read-only to this process (the suite runs as root, whom file modes do not stop)
READ_ONLY_VIEW = textwrap.dedent("""
    import json, os, subprocess, sys
    from pathlib import Path
    from infermatrix.runner import policy
    root = Path(sys.argv[1])
    real = os.access
    os.access = lambda p, mode: real(p, mode) and not str(p).startswith(str(root))
""")
FALLBACK = READ_ONLY_VIEW + textwrap.dedent("""
    made = policy.inductor_dir(root)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(made)  # as ProcessPolicy.apply sets it
    again = policy.inductor_dir(root)
    # a process this one starts (a memory child, the fork server) inherits the setting
    child = subprocess.run([sys.executable, "-c", READ_ONLY_VIEW + "print(policy.inductor_dir(root))", str(root)],
                           capture_output=True, text=True, check=True)
    print(json.dumps({"made": str(made), "again": str(again), "child": child.stdout.strip(), "exists": made.is_dir()}))
""")


def test_a_read_only_caches_inductor_folder_is_one_per_run_and_removed_at_exit(tmp_path):
    """Each process against a read-only cache left an empty infermatrix-inductor-* folder in the
    temp dir (and a compile's files in it): now one folder, made by the first process, shared with
    the processes it starts, removed when it exits."""
    root = tmp_path / "cache"
    root.mkdir()
    r = subprocess.run([sys.executable, "-c", f"READ_ONLY_VIEW = {READ_ONLY_VIEW!r}\n" + FALLBACK, str(root)],
                       capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(out["made"]).name.startswith("infermatrix-inductor-") and out["exists"], out
    assert out["again"] == out["made"] and out["child"] == out["made"], out
    assert not Path(out["made"]).exists(), "the folder outlived the process that made it"
