"""A build that refuses (EngineUnavailable from the build itself, e.g. NNCF int8 that collapsed to a
constant) is remembered per cache key, so the next run skips at once instead of building again."""
from __future__ import annotations

from typing import Any, ClassVar

import pytest

from infermatrix.core.schema import Case
from infermatrix.engines import ENGINES
from infermatrix.engines.base import EngineUnavailable
from infermatrix.engines.cache import REFUSED_SUFFIX, EngineCache
from infermatrix.engines.onnxruntime_engine import OnnxRuntimeEngine
from infermatrix.runner.session import RunSession

BUILDS: list[str] = []


class RefusingEngine(OnnxRuntimeEngine):
    """Builds, then finds the result unusable (as NNCF's collapse check does)."""
    name: ClassVar[str] = "refusing_ort"

    def _build_impl(self, spec: Any, workdir) -> None:
        BUILDS.append("fp32")
        raise EngineUnavailable("its int8 outputs no longer depend on the input (test)")


@pytest.fixture
def engine(monkeypatch):
    monkeypatch.setitem(ENGINES, RefusingEngine.name, RefusingEngine)
    BUILDS.clear()
    return Case("tiny-cnn", RefusingEngine.name, "fp32", 1, "cpu")


def refused(cache: EngineCache, case: Case) -> str:
    session = RunSession(cache)
    try:
        with pytest.raises(EngineUnavailable) as info:
            session.engine(case)
    finally:
        session.close()
    return str(info.value)


def test_a_refusal_is_remembered_and_not_built_again(tmp_path, engine):
    cache = EngineCache(tmp_path)
    first = refused(cache, engine)
    assert BUILDS == ["fp32"] and "remembered" not in first
    second = refused(cache, engine)
    assert BUILDS == ["fp32"], "the refused key was built again"
    assert second.startswith("its int8 outputs no longer depend on the input (test)")
    assert "remembered from an earlier build of this exact key; --engine-cache-clear builds it again" in second


def test_a_damaged_refusal_record_is_ignored_and_clear_forgets_it(tmp_path, engine):
    cache = EngineCache(tmp_path)
    refused(cache, engine)
    [record] = (tmp_path / RefusingEngine.name).glob(f"*{REFUSED_SUFFIX}")
    record.write_text(record.read_text().replace("(test)", "(edited)"))   # the checksum no longer holds
    refused(cache, engine)
    assert BUILDS == ["fp32", "fp32"]
    cache.clear()
    refused(cache, engine)
    assert BUILDS == ["fp32", "fp32", "fp32"]


def test_a_missing_package_is_never_remembered(tmp_path, engine, monkeypatch):
    monkeypatch.setattr(RefusingEngine, "requires", ("onnxruntime", "infermatrix_no_such_runtime"))
    cache = EngineCache(tmp_path)
    assert "infermatrix_no_such_runtime" in refused(cache, engine)
    assert not list(tmp_path.rglob(f"*{REFUSED_SUFFIX}")) and BUILDS == []
