"""Every temporary file of a stage build lives in the build's own folder (issue 16, item 17).

ONNX Runtime's symbolic shape inference saves ``sym_shape_infer_temp.onnx`` and a
weights-sized ``<uuid>.data`` to the cwd when it gives up, and its quantization tools make
``tempfile.TemporaryDirectory()`` in the system temp dir. A static build of the Paddle-like
detector (tests/test_static_int8_symbolic.py) goes through both, failing and succeeding; the
cwd stays as it was, every temp dir made lies in the cache, and the cache holds only complete
entries (and its per-key lock files).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from infermatrix.core.schema import Case
from infermatrix.engines import onnx_stage
from infermatrix.engines.cache import EngineCache
from infermatrix.engines.onnx_stage import OnnxFile, Quantize, materialize
from infermatrix.models.registry import get_model
from infermatrix.models.sources import resolve
from infermatrix.runner.session import RunSession

from tests.test_static_int8_symbolic import GIVEN, paddle_like_detector


@pytest.fixture
def made_temp(monkeypatch) -> list[Path]:
    """Every directory and file tempfile makes while the test runs."""
    made: list[Path] = []
    mkdtemp, mkstemp = tempfile.mkdtemp, tempfile.mkstemp

    def spy_dir(*args, **kwargs):
        path = mkdtemp(*args, **kwargs)
        made.append(Path(path).resolve())
        return path

    def spy_file(*args, **kwargs):
        fd, path = mkstemp(*args, **kwargs)
        made.append(Path(path).resolve())
        return fd, path

    monkeypatch.setattr(tempfile, "mkdtemp", spy_dir)
    monkeypatch.setattr(tempfile, "mkstemp", spy_file)
    return made


def leftovers(cache: EngineCache) -> list[str]:
    """What the cache holds besides complete, verified entries and lock files."""
    bad = []
    for kind in cache.root.iterdir():
        for child in kind.iterdir():
            if child.is_file() and child.suffix == ".lock":
                continue
            meta, problem = cache.verify(child) if child.is_dir() else (None, "a stray file")
            extra = [p.name for p in child.iterdir() if p.name.startswith(".")] if child.is_dir() else []
            if problem or extra:
                bad.append(f"{kind.name}/{child.name}: {problem or extra}")
    return bad


def test_a_failed_and_a_passing_static_build_leave_nothing_outside_the_cache(tmp_path, monkeypatch, made_temp):
    detector = paddle_like_detector(tmp_path / "paddle-det-tempfiles.onnx")
    cwd, cache = tmp_path / "cwd", EngineCache(tmp_path / "cache")
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    seen = tempfile.tempdir

    # fails after symbolic shape inference gave up (its temp files written): the batches have
    # 4 channels where the graph takes 3, so calibration's first run raises
    wrong = [{"x": np.random.default_rng(i).standard_normal((2, 4, 32, 32)).astype(np.float32)} for i in range(2)]
    with pytest.raises(Exception, match=r"Input channels C is not equal to kernel channels"):
        materialize(Quantize(OnnxFile(detector), "static", calibration=lambda: wrong), cache.store)
    assert sorted(p.name for p in cwd.iterdir()) == []
    assert leftovers(cache) == []
    assert not list((cache.root / onnx_stage.KIND).glob("*/model.onnx"))     # no entry of the failed step

    # succeeds, through the engine and the session as a run builds it
    session = RunSession(cache)
    try:
        name = resolve(f"onnx:{detector}", dims=GIVEN)
        report = session.equivalence(Case(name, "onnxruntime", "int8", 2, "cpu", scheme="static"))
    finally:
        session.close()
    assert report.figures()["cosine_min"] > 0.99            # it built and ran
    assert get_model(name).onnx_file == detector
    assert sorted(p.name for p in cwd.iterdir()) == []
    assert leftovers(cache) == []
    assert tempfile.tempdir == seen                          # build_folder put it back
    assert made_temp, "no temp dir was made: the builds did not run ORT's tools"
    outside = [p for p in made_temp if not p.is_relative_to(cache.root.resolve())]
    assert outside == [], f"temporary files made outside the cache: {outside}"


def test_a_relative_cache_root_builds_from_another_cwd(tmp_path, monkeypatch):
    """build_folder changes the cwd while a step builds: a relative cache root still works."""
    paddle_like_detector(tmp_path / "paddle-det.onnx")
    monkeypatch.chdir(tmp_path)
    cache = EngineCache(Path("cache"))
    batches = [{"x": np.random.default_rng(i).standard_normal((2, 3, 32, 32)).astype(np.float32)} for i in range(2)]
    built = materialize(Quantize(OnnxFile(Path("paddle-det.onnx")), "static", calibration=lambda: batches),
                        cache.store)
    assert built.model.is_file() and built.record["int8_ops"]["QuantizeLinear"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "paddle-det.onnx"]
    assert leftovers(cache) == []
