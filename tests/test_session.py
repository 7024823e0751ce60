"""The run session: build-once-then-cache, export failures, corrupt entries, measurements."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infermatrix.engines.cache import STAGE_PREFIX, CorruptEntryWarning, EngineCache
from infermatrix.core.schema import Case
from infermatrix.scenarios.measure import (MIN_SAMPLES, NOTES_KEY, PeakRss, latency_summary, percentile,
                              percentile_figures, percentiles)
from infermatrix.models.registry import MODELS, ModelSpec, register_checkpoint, register_model
from infermatrix.runner.session import CaseFailed, RunSession
from infermatrix.models.zoo import IMAGE, image_inputs
from tests.unexportable import Unexportable


if "refuses-export" not in MODELS:
    register_model(ModelSpec("refuses-export", Unexportable, image_inputs(8), IMAGE))


@pytest.fixture
def session(tmp_path):
    s = RunSession(EngineCache(tmp_path / "cache"))
    yield s
    s.close()


def test_second_session_takes_every_engine_from_the_cache(tmp_path):
    case = Case("tiny-cnn", "onnxruntime", "int8", 1, "cpu")
    first = RunSession(EngineCache(tmp_path / "cache"))
    assert first.equivalence(case).passed
    assert first.stats.built == 2 and first.stats.cached == 0  # the baseline and the int8 engine
    first.close()
    second = RunSession(EngineCache(tmp_path / "cache"))
    report = second.equivalence(case)
    assert report.passed and second.stats.built == 0 and second.stats.cached == 2
    assert report.outputs[0].sqnr_db > 20
    second.close()


def test_export_failure_is_a_clear_error_and_leaves_no_artifact(session):
    case = Case("refuses-export", "onnxruntime", "fp32", 1, "cpu")
    with pytest.raises(RuntimeError, match=r"building refuses-export-onnxruntime-fp32-bs1-cpu failed: .*every exporter"):
        session.engine(case)
    engine_dir = session.cache.root / "onnxruntime"
    assert not [p for p in engine_dir.iterdir() if p.is_dir()], "a failed build left a directory"


def test_corrupt_onnx_artifact_is_rebuilt_and_still_equivalent(tmp_path):
    case = Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu")
    first = RunSession(EngineCache(tmp_path / "cache"))
    assert first.equivalence(case).passed
    path = first.engine(case).entry.path
    first.close()
    onnx_file = path / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    second = RunSession(EngineCache(tmp_path / "cache"))
    with pytest.warns(CorruptEntryWarning, match="model.onnx is .* bytes; meta says"):
        assert second.equivalence(case).passed
    assert second.stats.built == 1
    assert not list((tmp_path / "cache" / "onnxruntime").glob(STAGE_PREFIX + "*"))
    second.close()


def test_missing_engine_package_skips_with_the_reason(session, monkeypatch):
    from infermatrix.engines import ENGINES
    monkeypatch.setattr(ENGINES["openvino"], "requires", ("torch", "openvino_not_here"))
    with pytest.raises(pytest.skip.Exception, match="openvino needs \\['openvino_not_here'\\]"):
        session.engine(Case("tiny-cnn", "openvino", "fp32", 1, "cpu"))


def test_user_checkpoint_is_loaded_from_a_local_path(tmp_path, session):
    from safetensors.torch import save_file
    module = MODELS["tiny-cnn"].build_module()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5)
    ckpt = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(ckpt))
    name = f"mine-{tmp_path.name}"
    spec = register_checkpoint(name, "tiny-cnn", ckpt)
    loaded = spec.build_module()
    torch.testing.assert_close(loaded.state_dict(), module.state_dict())
    assert session.equivalence(Case(name, "onnxruntime", "fp32", 1, "cpu")).passed
    with pytest.raises(FileNotFoundError, match="not found"):
        register_checkpoint("nope", "tiny-cnn", tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    save_file({"unrelated.weight": torch.zeros(2)}, str(bad))
    with pytest.raises(ValueError, match="does not fit 'tiny-cnn'"):
        register_checkpoint(f"bad-{tmp_path.name}", "tiny-cnn", bad).build_module()


def test_percentiles_match_numpy():
    rng = np.random.default_rng(0)
    xs = list(rng.exponential(size=101))
    for q in (0, 50, 90, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    with pytest.raises(ValueError):
        percentile([], 50)


def test_p99_is_null_below_100_samples_with_the_reason():
    rng = np.random.default_rng(1)
    few = list(rng.exponential(size=40))
    s = latency_summary(few, batch_size=1)
    assert s["p50_s"] == pytest.approx(float(np.percentile(few, 50)))
    assert s["p90_s"] == pytest.approx(float(np.percentile(few, 90)))
    assert s["p99_s"] is None and s["p99_s"] != max(few)
    assert s[NOTES_KEY] == {"p99_s": "p99 needs >= 100 samples; 40 were taken"}
    nine = latency_summary(few[:9], batch_size=1)
    assert nine["p90_s"] is None and nine["p99_s"] is None and nine["p50_s"] is not None
    assert nine[NOTES_KEY]["p90_s"] == "p90 needs >= 10 samples; 9 were taken"
    enough = latency_summary(list(rng.exponential(size=MIN_SAMPLES[99])), batch_size=1)
    assert enough["p99_s"] is not None and enough[NOTES_KEY] == {}


def test_percentile_figures_prefix_and_merge_notes():
    first = percentile_figures([0.1, 0.2], (50, 99), "ttft_")
    second = percentile_figures([0.01] * 12, (50, 90, 99), "tpot_", notes=first[NOTES_KEY])
    assert first["ttft_p50_s"] == pytest.approx(0.15) and first["ttft_p99_s"] is None
    assert second["tpot_p90_s"] == pytest.approx(0.01)
    assert set(second[NOTES_KEY]) == {"ttft_p99_s", "tpot_p99_s"}
    assert percentile_figures([], (50,))["p50_s"] is None  # p50 needs one sample
    with pytest.raises(ValueError, match="no minimum"):
        percentiles([1.0], (75,))


def test_throughput_is_items_over_the_mean_not_over_p50():
    # skewed: p50 = 0.01 s but the mean is 0.04 s; 8 items per call
    s = latency_summary([0.01, 0.01, 0.01, 0.13], batch_size=8)
    assert s["p50_s"] == pytest.approx(0.01) and s["mean_s"] == pytest.approx(0.04)
    assert s["throughput_items_per_s"] == pytest.approx(8 / 0.04)   # 200/s, not 8 / p50 = 800/s


def test_peak_rss_sees_an_allocation_inside_the_block():
    rss = PeakRss()
    with rss.measure():
        block = np.ones(64 * 1024 * 1024, dtype=np.uint8)  # 64 MiB, touched
        block[::4096] = 2
    del block
    assert rss.bytes > 64 * 1024 * 1024


class NanNet(torch.nn.Module):
    """A broken model: its fp32 outputs are NaN whatever the input (a division by zero in its code)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 10)

    def forward(self, pixel_values):
        return self.fc(pixel_values.flatten(1)) * torch.tensor(float("nan"))


if "nan-net" not in MODELS:
    register_model(ModelSpec("nan-net", NanNet, image_inputs(8), IMAGE, int8_scheme="static"))


def test_a_broken_baseline_is_said_once_as_the_models_fault_before_any_engine_is_built(session):
    int8 = Case("nan-net", "onnxruntime", "int8", 1, "cpu", "static")
    with pytest.raises(CaseFailed, match=r"nan-net: its baseline \(torch fp32 on cpu\) gives NaN/Inf .*logits: 10 "
                                         r"values.*the model or its inputs are broken, not the engine under test"):
        session.engine(int8)  # static int8 calibration would otherwise die on NaN ranges
    assert session.stats.built == 1  # the baseline only: the int8 engine was never built
    with pytest.raises(CaseFailed, match="nan-net: its baseline"):
        session.equivalence(Case("nan-net", "onnxruntime", "fp32", 1, "cpu"))
    assert session.stats.built == 1  # said again for the next case, without building anything more


class _Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_collect_garbage_freezes_survivors_and_hands_them_back_when_the_model_changes(tmp_path):
    import gc
    import weakref
    s = RunSession(EngineCache(tmp_path / "cache"))
    first, other = Case("tiny-cnn", "torch", "fp32", 1, "cpu"), Case("tiny-bert", "torch", "fp32", 1, "cpu")
    try:
        s.collect_garbage(first)
        assert gc.get_freeze_count() > 0
        made_after = _Node()
        ref = weakref.ref(made_after)
        del made_after
        s.collect_garbage(first)  # garbage made since the freeze is still collected
        assert ref() is None
        frozen = _Node()
        ref = weakref.ref(frozen)
        s.collect_garbage(first)  # survives: frozen with the rest
        del frozen
        s.collect_garbage(first)
        assert ref() is not None, "a frozen object is skipped by the collections of the same model"
        s.collect_garbage(other)  # a new model: everything goes back to the collector first
        assert ref() is None
    finally:
        s.close()
    assert gc.get_freeze_count() == 0
