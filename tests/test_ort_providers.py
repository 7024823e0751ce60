"""ONNX Runtime's GPU providers, checked without a GPU: typed settings and their option spelling,
the fallback check on a real CPU session asked for CUDA, the TensorRT EP engine's data and skip,
and the fp16 graph the CUDA EP runs, run here on the CPU provider within the fp16 policy row."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime as ort
import pytest
import torch

from infermatrix.engines import ENGINES, EngineError, EngineUnavailable, onnx_stage
from infermatrix.engines.onnxruntime_engine import OnnxRuntimeEngine
from infermatrix.engines.onnxruntime_providers import (CPU, CUDA, TENSORRT, CudaProviderSettings,
                                                       TensorRtProviderSettings, format_profile, options_not_applied,
                                                       parse_shapes, provider_fallback)
from infermatrix.engines.onnxruntime_tensorrt import (LIBNVINFER, OnnxRuntimeTensorRtEngine, graph_input_shapes,
                                                      trt_profile)
from infermatrix.engines.tensorrt_plan import profile_shapes
from infermatrix.fixtures import matrix
from infermatrix.runner.equivalence import DEFAULT_POLICY, compare_outputs
from infermatrix.models.registry import get_model
from tests.test_matrix import ids, opts


def relu_graph(path: Path, batch: str | int = "N") -> Path:
    """A one-node graph, x[batch,3,4,4] -> Relu; IR 10 (this ONNX Runtime reads up to 13)."""
    x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, 3, 4, 4])
    y = oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [batch, 3, 4, 4])
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)], ir_version=10), str(path))
    return path


# ---- typed settings and their spelling ----
def test_cuda_settings_spell_options_as_the_cuda_ep_parses_them():
    s = CudaProviderSettings(use_tf32=False)
    assert s.provider_options() == {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": "0",
                                    "enable_cuda_graph": "0", "prefer_nhwc": "0"}
    on = CudaProviderSettings(use_tf32=True, device_id=1, cudnn_conv_algo_search="HEURISTIC", enable_cuda_graph=True,
                              prefer_nhwc=True)
    assert on.provider_options() == {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "1",
                                     "enable_cuda_graph": "1", "prefer_nhwc": "1"}
    assert CudaProviderSettings.name == CUDA


@pytest.mark.parametrize("kwargs, message", [
    ({"use_tf32": "0"}, r"use_tf32='0'; expected bool"),
    ({"use_tf32": False, "device_id": True}, r"device_id=True; expected int"),
    ({"use_tf32": False, "device_id": -1}, r"device_id=-1; expected >= 0"),
    ({"use_tf32": False, "cudnn_conv_algo_search": "FAST"}, r"expected one of \('EXHAUSTIVE', 'HEURISTIC', 'DEFAULT'\)"),
])
def test_cuda_settings_refuse_what_would_mean_something_else(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CudaProviderSettings(**kwargs)


def test_tensorrt_settings_put_their_caches_inside_the_entry_and_spell_booleans_for_python(tmp_path):
    s = TensorRtProviderSettings(fp16=True, profile_min_shapes="x:1x3x4x4", profile_opt_shapes="x:8x3x4x4",
                                 profile_max_shapes="x:64x3x4x4")
    assert s.provider_options(tmp_path) == {
        "device_id": "0", "trt_fp16_enable": "True", "trt_int8_enable": "False",
        "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(tmp_path / "trt-engines"),
        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(tmp_path / "trt-timing"),
        "trt_cuda_graph_enable": "False", "trt_profile_min_shapes": "x:1x3x4x4",
        "trt_profile_opt_shapes": "x:8x3x4x4", "trt_profile_max_shapes": "x:64x3x4x4"}
    without_profile = TensorRtProviderSettings(int8=True).provider_options(tmp_path)
    assert without_profile["trt_int8_enable"] == "True" and not any("profile" in k for k in without_profile)
    with pytest.raises(ValueError, match="needs the cache entry"):
        s.provider_options()


@pytest.mark.parametrize("kwargs, message", [
    ({"engine_cache_path": "/tmp/engines"}, "relative path inside the engine's cache entry"),
    ({"timing_cache_path": "../timing"}, "relative path inside the engine's cache entry"),
    ({"fp16": 1}, r"fp16=1; expected bool"),
    ({"profile_min_shapes": "x:1x3"}, "give profile_min_shapes, profile_opt_shapes and profile_max_shapes together"),
    ({"profile_min_shapes": "x:1x3", "profile_opt_shapes": "x:8x3", "profile_max_shapes": "x:4x3"},
     r"need min <= opt <= max"),
    ({"profile_min_shapes": "x:1x3", "profile_opt_shapes": "y:1x3", "profile_max_shapes": "x:1x3"},
     "name different inputs"),
    ({"profile_min_shapes": "x:1x3", "profile_opt_shapes": "x:1x3x1", "profile_max_shapes": "x:1x3"}, "one rank"),
])
def test_tensorrt_settings_validate_paths_and_profiles(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TensorRtProviderSettings(**kwargs)


@pytest.mark.parametrize("text", ["x", "x:", "x:1xa", ":1x3", "x:0x3", "x:1,x:2"])
def test_profile_strings_must_be_name_colon_dims(text):
    with pytest.raises(ValueError, match="is not 'name:d1xd2x...'"):
        parse_shapes(text)


def test_the_dynamic_batch_profile_is_the_tensorrt_engines_in_the_eps_format(tmp_path):
    shared = profile_shapes({"x": (-1, 3, 4, 4)}, {"x": (2, 3, 4, 4)}, max_batch=64, opt_batch=8)
    assert format_profile(shared) == ("x:1x3x4x4", "x:8x3x4x4", "x:64x3x4x4")
    dynamic = graph_input_shapes(relu_graph(tmp_path / "dyn.onnx"))
    assert dynamic == {"x": (-1, 3, 4, 4)}
    assert trt_profile(dynamic, {"x": (2, 3, 4, 4)}, 8, 64) == ("x:1x3x4x4", "x:8x3x4x4", "x:64x3x4x4")
    # a graph with no dynamic dim needs no profile (the EP wants one only for dynamic inputs)
    assert trt_profile(graph_input_shapes(relu_graph(tmp_path / "static.onnx", batch=1)), {"x": (1, 3, 4, 4)}, 8, 64) is None


def test_applied_options_are_compared_across_boolean_spellings():
    asked = {"use_tf32": "0", "trt_fp16_enable": "True", "prefer_nhwc": "0"}
    applied = {"use_tf32": "1", "trt_fp16_enable": "1"}  # what get_provider_options() reports
    assert options_not_applied(asked, applied, ("use_tf32", "trt_fp16_enable", "prefer_nhwc")) == {"use_tf32": ("0", "1")}


# ---- the fallback check, on a real session ----
def test_a_cpu_onnxruntime_asked_for_cuda_really_falls_back_and_the_check_says_so(tmp_path):
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP: it would not fall back")
    model = relu_graph(tmp_path / "relu.onnx")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        sess = ort.InferenceSession(str(model), providers=[(CUDA, CudaProviderSettings(use_tf32=False).provider_options())])
    assert sess.get_providers() == [CPU]  # no error: ONNX Runtime quietly runs on the CPU
    reason = provider_fallback([CUDA], sess.get_providers(), [str(w.message) for w in said])
    assert reason.startswith("asked for CUDAExecutionProvider, ONNX Runtime runs CPUExecutionProvider: "
                             "CUDAExecutionProvider did not load")
    assert "not in available provider names" in reason  # ONNX Runtime's own warning, quoted
    assert provider_fallback([CPU], [CPU]) is None
    partial = provider_fallback([TENSORRT, CUDA], [CUDA, CPU])
    assert "runs CUDAExecutionProvider, CPUExecutionProvider: TensorrtExecutionProvider did not load" in partial


class NoStreamCudaEngine(OnnxRuntimeEngine):
    """The CUDA engine without its torch.cuda.Stream (this machine has no CUDA to make one), so
    its real session code runs here; everything else is the engine's own."""

    def _stream_option(self) -> dict[str, str]:
        return {}


def test_the_cuda_engine_turns_a_fallback_into_a_skip_with_the_reason(tmp_path):
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP: it would not fall back")
    engine = NoStreamCudaEngine("fp32", "cuda")
    with pytest.raises(EngineUnavailable, match=r"onnxruntime on cuda: asked for CUDAExecutionProvider, "
                                                r"ONNX Runtime runs CPUExecutionProvider"):
        engine._session(relu_graph(tmp_path / "relu.onnx"), tmp_path)
    # and a CPU engine's session is what it asked for
    assert OnnxRuntimeEngine("fp32", "cpu")._session(tmp_path / "relu.onnx", tmp_path).get_providers() == [CPU]


# ---- settings as the engines record them ----
def test_the_cuda_engine_records_its_provider_settings_and_an_explicit_tf32():
    off, on = OnnxRuntimeEngine("fp32", "cuda"), OnnxRuntimeEngine("fp32", "cuda", tf32=True)
    assert off.settings() == {"tf32": False, CUDA: {"use_tf32": False, "device_id": 0, "cudnn_conv_algo_search":
                                                    "EXHAUSTIVE", "enable_cuda_graph": False, "prefer_nhwc": False}}
    assert on.settings()[CUDA]["use_tf32"] is True and on.settings()["tf32"] is True
    assert OnnxRuntimeEngine("fp32", "cpu").settings() == {}


def test_the_tensorrt_ep_engine_is_registered_with_its_capabilities_as_data():
    cls = ENGINES["onnxruntime_trt"]
    assert cls is OnnxRuntimeTensorRtEngine and issubclass(cls, OnnxRuntimeEngine)
    assert cls.capabilities == {"cuda": frozenset({"fp32", "fp16", "int8"})}
    assert cls.int8_schemes == frozenset({"static", "static_per_channel"})
    assert cls.execution_providers == {"cuda": (TENSORRT, CUDA)}
    with pytest.raises(EngineError, match="onnxruntime_trt does not run on 'cpu'"):
        cls("fp32", "cpu")
    engine = cls("fp16", "cuda")
    settings = engine.settings()
    # TensorRT's TF32 cannot be cleared through the EP: recorded as on, whatever the run's policy;
    # the CUDA EP that takes TensorRT's leftovers keeps the policy
    assert settings["tf32"] is True and settings[CUDA]["use_tf32"] is False
    assert settings[TENSORRT]["fp16"] is True and settings[TENSORRT]["int8"] is False
    assert settings[TENSORRT]["engine_cache_path"] == "trt-engines"  # relative: no build path in the key
    assert cls.build_recipe()["profile_batches"] == [1, cls.OPT_BATCH, cls.MAX_BATCH]


def test_planned_here_the_tensorrt_ep_cases_skip_with_what_is_missing(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the cases would run")
    monkeypatch.setattr(matrix, "cuda_available", lambda: False)
    planned = matrix.plan_cases(opts(engines=("onnxruntime_trt",), precisions=("fp32", "fp16", "int8"),
                                     devices=("cuda",), batch_sizes=(1,)))
    assert ids(planned) == ["tiny-cnn-onnxruntime_trt-fp32-bs1-cuda", "tiny-cnn-onnxruntime_trt-fp16-bs1-cuda",
                            "tiny-cnn-onnxruntime_trt-int8-static_per_channel-bs1-cuda"]
    assert all("CUDA is not available" in p.skip_reason for p in planned)
    # and the engine itself names everything it lacks here, with how to install it
    problem = OnnxRuntimeTensorRtEngine("fp32", "cuda").availability_problem()
    assert "CUDA is not available on this machine" in problem
    if TENSORRT not in ort.get_available_providers():
        assert "has no TensorrtExecutionProvider, CUDAExecutionProvider" in problem
        assert "pip install 'infermatrix[gpu]'" in problem
    assert f"{LIBNVINFER} (TensorRT 10" in problem and "pip install 'infermatrix[gpu,tensorrt]'" in problem


# ---- the graph the CUDA EP runs at fp16 ----
def test_the_fp16_stage_graph_keeps_fp32_io_and_passes_the_fp16_row_on_the_cpu_provider(tmp_path):
    model = get_model("tiny-cnn")
    module = model.build_module()
    spec = model.build_spec(module, 2)
    inputs = model.inputs(8, seed=1)
    with torch.no_grad():
        ref = {"logits": module(*spec.positional(inputs)).numpy()}
    with onnx_stage.open_stage(onnx_stage.plan(spec, "fp16"), None, tmp_path) as built:
        graph = onnx.load(str(built.model)).graph
        assert {i.type.tensor_type.elem_type for i in (*graph.input, *graph.output)} == {onnx.TensorProto.FLOAT}
        assert onnx.TensorProto.FLOAT16 in {t.data_type for t in graph.initializer}  # the weights are fp16
        sess = ort.InferenceSession(str(built.model), providers=[CPU])
        got = dict(zip(spec.output_names, sess.run(None, {n: inputs[n].numpy() for n in spec.input_names})))
    assert got["logits"].dtype == np.float32
    report = compare_outputs("tiny-cnn-onnxruntime-fp16-bs8-cpu-graph", ref, got, DEFAULT_POLICY["fp16"], "fp16")
    assert report.passed, report.figures()
