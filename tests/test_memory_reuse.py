"""Memory figures kept in the engine cache and reused while nothing they depend on changed
(runner/memory_reuse.py), and measured again when anything did, when the file is damaged, or
when the user asks (--memory-remeasure)."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from infermatrix.core.schema import Case
from infermatrix.engines.cache import EngineCache
from infermatrix.runner import memory_reuse
from infermatrix.runner.memory import engine_memory
from infermatrix.runner.memory_reuse import (CorruptMemoryRecordWarning, MemoryReuse, inputs_digest, reuse_key,
                                             reused)
from infermatrix.runner.session import RunSession

REQUEST = {"model": "tiny-cnn", "source": None, "inputs": None, "engine": "onnxruntime", "precision": "fp32",
           "int8_scheme": None, "batch_size": 1, "example_batch": 2, "device": "cpu", "threads": None, "tf32": False,
           "seed": 1, "warmup": 3, "rounds": 10, "entry": "/cache/onnxruntime/abc", "cache_root": "/cache"}
FIGURES = {"load_rss_bytes": 7 << 20, "run_peak_rss_bytes": 3 << 20, "gpu_peak_bytes": None,
           "idle_rss_bytes": 800 << 20, "memory_method": "forked child of a preloaded server: ... (4 runs)"}


def key(**change):
    facts = {"method": "fork", "entry_key": "abc", "artifact_sha256": "0" * 64, "inputs": "i" * 64, "kind_id": "kind-1"}
    request = {k: change.pop(k) if k in change else v for k, v in REQUEST.items()}
    return reuse_key(request, **{**facts, **change})


def test_a_clean_figure_is_kept_and_reused_only_for_the_same_key(tmp_path):
    store = MemoryReuse(tmp_path, "kind-1")
    assert store.get(key()) is None
    put = store.put(key(), FIGURES, "cpu")
    assert put["memory_measured_at"]
    got = store.get(key())
    assert {k: got[k] for k in FIGURES} == FIGURES and got["memory_measured_at"] == put["memory_measured_at"]
    said = reused(got)
    assert said["memory_reused"] is True and said["memory_method"].startswith(FIGURES["memory_method"])
    assert put["memory_measured_at"] in said["memory_method"] and "--memory-remeasure" in said["memory_method"]
    for change in ({"batch_size": 8}, {"threads": 1}, {"precision": "bf16"}, {"kind_id": "kind-2"},
                   {"artifact_sha256": "1" * 64}, {"inputs": "j" * 64}, {"entry_key": "abd"}, {"method": "subprocess"}):
        assert store.get(key(**change)) is None, f"reused across a change of {change}"


def test_a_source_models_key_reads_back_equal_from_its_file(tmp_path):
    # an hf:/onnx: model hands its source over as a tuple (entry, seq_len, dims); JSON gives a list back
    store = MemoryReuse(tmp_path, "kind-1")
    source = ("hf:/models/minilm", 128, (("input_ids", (1, 128)),))
    store.put(key(source=source), FIGURES, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no CorruptMemoryRecordWarning: the record is this key's
        assert store.get(key(source=source))["load_rss_bytes"] == 7 << 20


@pytest.mark.parametrize("variable", ["MALLOC_ARENA_MAX", "OMP_NUM_THREADS", "LD_PRELOAD"])
def test_the_allocator_and_thread_settings_are_part_of_the_key(tmp_path, monkeypatch, variable):
    monkeypatch.delenv(variable, raising=False)
    store = MemoryReuse(tmp_path, "kind-1")
    store.put(key(), FIGURES, "cpu")
    monkeypatch.setenv(variable, "2")
    assert store.get(key()) is None


def test_a_record_with_a_nan_is_damaged_not_an_error(tmp_path):
    store = MemoryReuse(tmp_path, "kind-1")
    store.put(key(), FIGURES, "cpu")
    [path] = (tmp_path / memory_reuse.MEMORY_DIR).glob("*.json")
    path.write_text(path.read_text().replace(str(7 << 20), "NaN"))
    with pytest.warns(CorruptMemoryRecordWarning):
        assert store.get(key()) is None


def test_the_measuring_code_is_part_of_the_key(tmp_path, monkeypatch):
    store = MemoryReuse(tmp_path, "kind-1")
    store.put(key(), FIGURES, "cpu")
    monkeypatch.setattr(memory_reuse, "_code_digest", "another version of runner/memory.py")
    assert store.get(key()) is None


def test_a_failed_or_incomplete_measurement_is_not_kept(tmp_path):
    store = MemoryReuse(tmp_path, "kind-1")
    store.put(key(), {**FIGURES, "memory_error": "the memory child timed out"}, "cpu")
    store.put(key(batch_size=2), {**FIGURES, "run_peak_rss_bytes": None}, "cpu")
    store.put(key(device="cuda"), FIGURES, "cuda")  # no GPU peak: not a complete CUDA figure
    assert not list((tmp_path / memory_reuse.MEMORY_DIR).glob("*.json"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "other-key"])
def test_a_damaged_record_is_measured_again_with_a_warning(tmp_path, damage):
    store = MemoryReuse(tmp_path, "kind-1")
    store.put(key(), FIGURES, "cpu")
    [path] = (tmp_path / memory_reuse.MEMORY_DIR).glob("*.json")
    if damage == "flip":
        path.write_text(path.read_text().replace(str(7 << 20), str(6 << 20)))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
    else:  # a valid record of another case under this case's name
        other = MemoryReuse(tmp_path / "other", "kind-1")
        other.put(key(batch_size=4), FIGURES, "cpu")
        [moved] = (tmp_path / "other" / memory_reuse.MEMORY_DIR).glob("*.json")
        os.replace(moved, path)
    with pytest.warns(CorruptMemoryRecordWarning):
        assert store.get(key()) is None
    assert not path.exists(), "the damaged file is removed (under -W error too, it is never read again)"
    store.put(key(), FIGURES, "cpu")  # measured again: kept whole
    assert store.get(key())["load_rss_bytes"] == 7 << 20


def test_remeasure_ignores_what_is_kept_and_keeps_the_new_figure(tmp_path):
    MemoryReuse(tmp_path, "kind-1").put(key(), FIGURES, "cpu")
    again = MemoryReuse(tmp_path, "kind-1", remeasure=True)
    assert again.get(key()) is None
    again.put(key(), {**FIGURES, "load_rss_bytes": 8 << 20}, "cpu")
    assert MemoryReuse(tmp_path, "kind-1").get(key())["load_rss_bytes"] == 8 << 20


def test_a_cache_that_cannot_be_written_keeps_nothing_and_says_so(tmp_path):
    (tmp_path / memory_reuse.MEMORY_DIR).write_text("a file where the folder goes (as root, chmod would not stop a write)")
    store = MemoryReuse(tmp_path, "kind-1")
    put = store.put(key(), FIGURES, "cpu")
    assert put["load_rss_bytes"] == 7 << 20
    assert str(tmp_path / memory_reuse.MEMORY_DIR) in put["memory_not_kept"]
    assert store.get(key()) is None
    # said per case: a failed measurement is not kept for its own reason, not this one
    assert "memory_not_kept" not in store.put(key(), {**FIGURES, "memory_error": "timed out"}, "cpu")


def test_the_inputs_digest_sees_values_shapes_and_dtypes():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    base = inputs_digest({"x": x})
    assert inputs_digest({"x": x.copy()}) == base
    assert inputs_digest({"x": x + 1}) != base
    assert inputs_digest({"x": x.reshape(3, 2)}) != base
    assert inputs_digest({"x": x.astype(np.float64)}) != base
    assert inputs_digest({"y": x}) != base


def test_a_real_case_is_measured_once_then_reused_then_measured_again_when_asked(tmp_path):
    session = RunSession(EngineCache(tmp_path / "cache"))
    try:
        case = Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu")
        loaded = session.engine(case)
        facts = {"artifact_sha256": loaded.entry.artifact_sha256, "inputs_digest": inputs_digest(session.inputs(case))}
        store = MemoryReuse(session.cache.root, "kind-1")
        first = engine_memory(case, loaded.entry.path, reuse=store, **facts)
        assert "memory_error" not in first, first.get("memory_error")
        assert first["memory_reused"] is False and first["load_rss_bytes"] > 0
        second = engine_memory(case, loaded.entry.path, reuse=store, **facts)
        assert second["memory_reused"] is True
        assert {k: second[k] for k in ("load_rss_bytes", "run_peak_rss_bytes", "memory_measured_at")} == \
            {k: first[k] for k in ("load_rss_bytes", "run_peak_rss_bytes", "memory_measured_at")}
        other_inputs = engine_memory(case, loaded.entry.path, reuse=store, **{**facts, "inputs_digest": "x"})
        assert other_inputs["memory_reused"] is False
        forced = engine_memory(case, loaded.entry.path, reuse=MemoryReuse(session.cache.root, "kind-1", remeasure=True),
                               **facts)
        assert forced["memory_reused"] is False and forced["memory_measured_at"] >= first["memory_measured_at"]
        kept = [json.loads(p.read_text()) for p in (session.cache.root / memory_reuse.MEMORY_DIR).glob("*.json")]
        assert len(kept) == 2 and all(k["key"]["kind"] == "kind-1" for k in kept)
    finally:
        session.close()
