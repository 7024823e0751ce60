"""The engine cache: content-addressed keys, atomic builds, one build per key, corruption."""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from infermatrix.engines import get_engine
from infermatrix.engines.cache import META, STAGE_PREFIX, CorruptEntryWarning, EngineCache, cache_key
from infermatrix.core.schema import Case
from infermatrix.models.registry import get_model, register_model, weights_digest
from infermatrix.runner.session import RunSession


def write_artifact(stage: Path) -> None:
    (stage / "model.bin").write_bytes(b"\x01" * 4096)
    (stage / "sub").mkdir()
    (stage / "sub" / "extra.txt").write_text("hello")


@pytest.fixture
def cache(tmp_path: Path) -> EngineCache:
    return EngineCache(tmp_path / "cache")


def key_fields(case: Case) -> dict:
    return RunSession(EngineCache(Path("/nonexistent"))).cache_fields(case, get_engine(case.engine))


BASE_CASE = Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu")


@pytest.mark.parametrize("field", ["model", "weights", "engine", "precision", "device",
                                   "batch_profile", "versions", "recipe", "host"])
def test_key_changes_when_any_component_changes(field):
    fields = key_fields(BASE_CASE)
    changed = dict(fields)
    changed[field] = {"changed": True} if isinstance(fields[field], dict) else f"{fields[field]}-x"
    assert cache_key(changed) != cache_key(fields)


def test_key_is_stable_and_covers_library_versions():
    fields = key_fields(BASE_CASE)
    assert cache_key(fields) == cache_key(key_fields(BASE_CASE))
    assert {"torch", "torchvision", "transformers", "numpy", "onnx", "onnxscript", "onnxruntime"} <= set(fields["versions"])
    assert fields["batch_profile"] == "dynamic"
    fixed = key_fields(Case("tiny-cnn", "torchscript", "fp32", 8, "cpu"))
    assert fixed["batch_profile"] == 8
    assert {"torch", "torchvision", "transformers"} <= set(fixed["versions"]) and "onnx" not in fixed["versions"]


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_key_changes_when_transformers_changes(monkeypatch, engine):
    """transformers shapes the module every engine builds from, though no engine requires it."""
    import importlib.metadata as md
    case = Case("tiny-cnn", engine, "fp32", 1, "cpu")
    before = cache_key(key_fields(case))
    real = md.version
    monkeypatch.setattr(md, "version", lambda dist: "0.0.1-other" if dist == "transformers" else real(dist))
    after = key_fields(case)
    assert after["versions"]["transformers"] == "0.0.1-other"
    assert cache_key(after) != before


def test_a_torch_compile_key_changes_with_the_torch_its_kernels_compile_against(monkeypatch):
    """inductor keys its C++ kernels by a command line that names torch's headers: an entry built by a
    torch installed elsewhere would compile every kernel again at each load (engines/torch_compile.py)."""
    import torch
    case = Case("tiny-cnn", "torch_compile", "fp32", 1, "cpu")
    fields = key_fields(case)
    assert str(Path(torch.__file__).parent / "include") in fields["recipe"]["headers"]
    monkeypatch.setattr(torch, "__file__", "/elsewhere/site-packages/torch/__init__.py")
    moved = key_fields(case)
    assert "/elsewhere/site-packages/torch/include" in moved["recipe"]["headers"]
    assert cache_key(moved) != cache_key(fields)


def test_artifact_libraries_cover_what_each_engine_requires():
    from infermatrix.engines import ENGINES
    for name, cls in ENGINES.items():
        assert set(cls.requires) <= set(cls.artifact_libraries), name
        assert set(cls.library_versions()) == set(cls.artifact_libraries), name


def test_weights_digest_follows_the_weights():
    base = get_model("tiny-cnn")
    from dataclasses import replace
    register_model(replace(base, name="tiny-cnn-seed7", seed=7))
    assert weights_digest("tiny-cnn") != weights_digest("tiny-cnn-seed7")
    assert weights_digest("tiny-cnn") == weights_digest("tiny-cnn")


def test_build_then_hit(cache):
    first = cache.get_or_build("eng", {"a": 1}, write_artifact)
    second = cache.get_or_build("eng", {"a": 1}, lambda stage: pytest.fail("rebuilt an intact entry"))
    assert first.built and not second.built
    meta = json.loads((first.path / META).read_text())
    assert set(meta["files"]) == {"model.bin", "sub/extra.txt"}
    assert meta["artifact_bytes"] == 4096 + 5
    assert meta["fields"] == {"a": 1}


def test_failed_build_leaves_nothing(cache):
    def broken(stage: Path) -> None:
        (stage / "model.bin").write_bytes(b"half")
        raise RuntimeError("exporter crashed")
    with pytest.raises(RuntimeError, match="exporter crashed"):
        cache.get_or_build("eng", {"a": 1}, broken)
    left = [p.name for p in (cache.root / "eng").iterdir() if p.is_dir()]
    assert left == [], f"a failed build left {left}"


def test_interrupted_build_stage_is_removed(cache):
    key = cache_key({"a": 1})
    stale = cache.root / "eng" / f"{STAGE_PREFIX}{key}-killed"
    stale.mkdir(parents=True)
    (stale / "model.bin").write_bytes(b"partial")
    entry = cache.get_or_build("eng", {"a": 1}, write_artifact)
    assert entry.built and not stale.exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "meta"])
def test_corrupt_entry_is_detected_and_rebuilt(cache, damage):
    entry = cache.get_or_build("eng", {"a": 1}, write_artifact)
    target = entry.path / "model.bin"
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[100] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "delete":
        target.unlink()
    else:
        (entry.path / META).write_text("{not json")
    with pytest.warns(CorruptEntryWarning, match="corrupt"):
        again = cache.get_or_build("eng", {"a": 1}, write_artifact)
    assert again.built
    assert cache.verify(again.path)[1] is None
    assert not any(p.name.startswith(STAGE_PREFIX) for p in (cache.root / "eng").iterdir())


def _race_worker(root: str, counter: str, out: str) -> None:
    def slow_build(stage: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(1.0)
        write_artifact(stage)
    entry = EngineCache(Path(root)).get_or_build("eng", {"race": 1}, slow_build)
    Path(out).write_text(json.dumps({"built": entry.built, "key": entry.meta.key}))


def test_two_processes_build_one_key_once(tmp_path):
    counter = tmp_path / "counter"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_race_worker, args=(str(tmp_path / "c"), str(counter), str(tmp_path / f"o{i}")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert counter.read_text().count("built") == 1
    results = [json.loads((tmp_path / f"o{i}").read_text()) for i in range(2)]
    assert sorted(r["built"] for r in results) == [False, True]
    assert results[0]["key"] == results[1]["key"]


def test_clear_empties_the_cache(cache):
    cache.get_or_build("eng", {"a": 1}, write_artifact)
    cache.get_or_build("other", {"a": 1}, write_artifact)
    assert cache.clear() == 2
    assert list(cache.root.iterdir()) == []
