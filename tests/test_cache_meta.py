"""meta.json is validated against a typed schema and its own checksum (issue 16, item 12), and
torch.compile's inductor files are checked like every other artifact (item 11)."""
from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infermatrix.engines.cache import META, CorruptEntryWarning, EngineCache, cache_key

# a non-ASCII value: meta.json writes it as a \\u escape, whose hex digits' case is a bit flip
# that leaves the parsed meta identical (the one kind of flip that may be accepted)
FIELDS = {"model": "café-net", "batch": 1, "shape": (1, 3)}


def write_artifact(stage: Path) -> None:
    (stage / "model.bin").write_bytes(b"\x01" * 64)


def resign(raw: dict) -> dict:
    """``raw`` with its checksum recomputed: a schema violation the checksum alone would not catch."""
    body = {k: v for k, v in raw.items() if k != "checksum"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return {**body, "checksum": hashlib.sha256(canon.encode()).hexdigest()}


@pytest.fixture
def entry(tmp_path):
    cache = EngineCache(tmp_path / "cache")
    return cache, cache.get_or_build("eng", FIELDS, write_artifact)


def test_meta_round_trips_and_matches_the_entry(entry):
    cache, e = entry
    meta, problem = cache.verify(e.path)
    assert problem is None and meta == e.meta
    assert meta.key == e.path.name == cache_key(FIELDS) == cache_key(meta.fields)
    assert meta.artifact_bytes == 64 and meta.files["model.bin"].bytes == 64
    assert "\\u00e9" in (e.path / META).read_text()  # the escape the exhaustive test relies on


def _edit(raw: dict, what: str) -> dict:
    if what == "bytes-as-string":
        raw["files"]["model.bin"]["bytes"] = "64"
    elif what == "bytes-as-bool":
        raw["files"]["model.bin"]["bytes"] = True
    elif what == "artifact_bytes":
        raw["artifact_bytes"] = 65
    elif what == "sha-uppercase":
        raw["files"]["model.bin"]["sha256"] = raw["files"]["model.bin"]["sha256"].upper()
    elif what == "sha-short":
        raw["files"]["model.bin"]["sha256"] = raw["files"]["model.bin"]["sha256"][:-1]
    elif what == "fields":
        raw["fields"]["batch"] = 2
    elif what == "key":
        raw["key"] = "0" * 64
    elif what == "engine":
        raw["engine"] = "other"
    elif what == "missing-key":
        del raw["created"]
    elif what == "extra-key":
        raw["extra"] = 1
    elif what == "path-escape":
        raw["files"]["../model.bin"] = raw["files"].pop("model.bin")
    elif what == "files-list":
        raw["files"] = [raw["files"]]
    elif what == "negative-seconds":
        raw["build_seconds"] = -1.0
    elif what == "format":
        raw["format"] = 1
    return resign(raw)


EDITS = {"bytes-as-string": "bytes '64'", "bytes-as-bool": "bytes True", "artifact_bytes": "artifact_bytes 65",
         "sha-uppercase": "64 lowercase hex", "sha-short": "64 lowercase hex", "fields": "do not hash",
         "key": "key '000", "engine": "engine 'other'", "missing-key": "keys", "extra-key": "keys",
         "path-escape": "not a plain path", "files-list": "files is list", "negative-seconds": "build_seconds -1.0",
         "format": "format 1"}


@pytest.mark.parametrize("what", sorted(EDITS))
def test_schema_violation_is_a_corrupt_entry_even_with_a_valid_checksum(entry, what):
    cache, e = entry
    raw = _edit(json.loads((e.path / META).read_text()), what)
    (e.path / META).write_text(json.dumps(raw))
    meta, problem = cache.verify(e.path)
    assert meta is None and EDITS[what] in problem, problem
    with pytest.warns(CorruptEntryWarning, match="invalid meta.json"):
        again = cache.get_or_build("eng", FIELDS, write_artifact)
    assert again.built and cache.verify(again.path)[1] is None


def test_checksum_catches_a_consistent_edit(entry):
    """Both artifact_bytes and a file's size changed together: only the meta's checksum sees it."""
    cache, e = entry
    raw = json.loads((e.path / META).read_text())
    raw["created"] = "2000-01-01T00:00:00+0000"
    (e.path / META).write_text(json.dumps(raw))
    assert "checksum does not match" in cache.verify(e.path)[1]


def test_nan_in_meta_is_rejected(entry):
    cache, e = entry
    text = (e.path / META).read_text()
    raw = json.loads(text)
    (e.path / META).write_text(text.replace(json.dumps(raw["build_seconds"]), "NaN", 1))
    assert "non-finite" in cache.verify(e.path)[1]


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_any_single_bit_flip_is_detected_or_harmless_and_then_rebuilt(where):
    with tempfile.TemporaryDirectory() as tmp:
        cache = EngineCache(Path(tmp))
        good = cache.get_or_build("eng", FIELDS, write_artifact)
        meta_file = good.path / META
        original = meta_file.read_bytes()
        meta_file.write_bytes(flip(original, int(where * len(original) * 8)))
        meta, problem = cache.verify(good.path)  # never raises
        assert (meta is None) != (problem is None)
        assert meta is None or meta == good.meta
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = cache.get_or_build("eng", FIELDS, write_artifact)
        assert again.built == (problem is not None)
        assert any(issubclass(w.category, CorruptEntryWarning) for w in caught) == (problem is not None)
        assert cache.verify(again.path)[0] == again.meta
        assert (again.path / "model.bin").read_bytes() == b"\x01" * 64


def test_every_single_bit_flip_of_one_meta(tmp_path):
    """All bits of one small meta.json (a few thousand): none is accepted as something else."""
    cache = EngineCache(tmp_path)
    good = cache.get_or_build("eng", FIELDS, write_artifact)
    meta_file = good.path / META
    original = meta_file.read_bytes()
    same = detected = 0
    for bit in range(len(original) * 8):
        meta_file.write_bytes(flip(original, bit))
        meta, problem = cache.verify(good.path)
        if meta is None:
            assert problem
            detected += 1
        else:
            assert meta == good.meta, f"bit {bit} accepted a different meta"
            same += 1
    assert detected + same == len(original) * 8
    assert same >= 1  # the \\u00e9 escape's hex case (and any exponent e/E) parse the same
    assert detected > 0.99 * len(original) * 8


# ---- torch.compile: inductor's files are part of the entry (item 11) ----

def _torch_compile_run(cache: EngineCache):
    """Build (or take from ``cache``) a torch_compile entry for tiny-cnn, load it in a fresh engine
    and return (entry, outputs, eager outputs)."""
    import torch

    from infermatrix.engines.torch_compile import TorchCompileEngine
    from infermatrix.models.registry import get_model
    model = get_model("tiny-cnn")
    module = model.build_module()
    spec = model.build_spec(module, 1)
    builder = TorchCompileEngine("fp32", "cpu")
    entry = cache.get_or_build("torch_compile", {"model": "tiny-cnn", "test": "inductor"},
                               lambda stage: builder.build(spec, stage))
    engine = TorchCompileEngine("fp32", "cpu")  # a fresh engine: the warm path, from the entry's files
    engine.load(entry.path, spec)
    inputs = model.inputs(1, seed=3)
    try:
        got = engine.to_host(engine.run(engine.prepare(inputs)))["logits"]
    finally:
        engine.close()
    with torch.inference_mode():
        want = module(*[inputs[n] for n in model.input_names]).numpy()
    return entry, got, want


def test_flipped_inductor_file_is_detected_and_rebuilt(tmp_path):
    pytest.importorskip("torch")
    cache = EngineCache(tmp_path / "cache")
    first, got, want = _torch_compile_run(cache)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    inductor = sorted(rel for rel in first.meta.files if rel.startswith("inductor/"))
    pickles = [rel for rel in inductor if rel.startswith("inductor/fxgraph/")]
    assert pickles, f"no FX graph cache entry in the torch_compile entry: {inductor}"
    target = first.path / pickles[0]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))
    with pytest.warns(CorruptEntryWarning, match=r"inductor/fxgraph/.* fails its sha256"):
        again, got, want = _torch_compile_run(cache)
    assert again.built
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert any(rel.startswith("inductor/fxgraph/") for rel in again.meta.files), "the rebuild wrote no FX graph"
    third, got, _ = _torch_compile_run(cache)  # the rebuilt entry now serves a warm load
    assert not third.built
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
