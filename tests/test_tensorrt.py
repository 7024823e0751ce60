"""The tensorrt engine without TensorRT or a GPU: version dispatch, the optimization profile, the
settings that key its cache, its symmetric int8 graph (run on ONNX Runtime's CPU provider), its
registration, and the skip a machine without TensorRT gives. Its build and run need a GPU and
``tensorrt``; they have never run here (engines/tensorrt_engine.py)."""
from __future__ import annotations

import threading
from dataclasses import asdict, replace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from infermatrix.engines import ENGINES, EngineError, EngineUnavailable, onnx_stage
from infermatrix.engines.cache import cache_key
from infermatrix.engines.onnx_stage import Export, Float16, OnnxFile, Quantize
from infermatrix.engines.tensorrt_build import SYMMETRIC_RECIPES, SymmetricQuantize, stage_step
from infermatrix.engines.tensorrt_engine import INSTALL, Bound, StreamPerThread, TensorRTEngine
from infermatrix.engines.tensorrt_plan import (TORCH_DTYPES, batch_limits, build_plan_for, driver_from_proc,
                                               profile_shapes, tensorrt_major, tensorrt_settings, version_problem)
from infermatrix.runner.equivalence import DEFAULT_POLICY, compare_outputs
from infermatrix.fixtures.matrix import plan_cases
from infermatrix.fixtures.options import MatrixOptions
from infermatrix.models.registry import get_model

TRT10, TRT11 = "10.14.1.48", "11.4.0.106"


# ---- version dispatch ----
@pytest.mark.parametrize("version", [TRT10, TRT11])
def test_both_majors_build_strongly_typed_and_take_the_precision_from_the_graph(version):
    # TensorRT 10.12 deprecated the weak-typing flags (FP16/INT8) in favour of strong typing; 11 removed them
    for precision in ("fp32", "fp16", "int8"):
        choice = build_plan_for(version, precision)
        assert choice.major == tensorrt_major(version) and choice.strongly_typed
        assert choice.network_flags == ("STRONGLY_TYPED",)
        assert choice.onnx_graph == precision                          # fp16 graph (fp32 I/O), Q/DQ graph
        # no precision flag is ever named, so no getattr can fail on one TensorRT 11 removed
        assert not {"FP16", "INT8", "BF16", "EXPLICIT_BATCH"} & {*choice.builder_flags, *choice.network_flags}


@pytest.mark.parametrize("version", [TRT10, TRT11])
def test_tf32_follows_the_run_policy_and_is_cleared_when_off(version):
    on, off = build_plan_for(version, "fp32", tf32=True), build_plan_for(version, "fp32", tf32=False)
    assert "TF32" in on.builder_flags and "TF32" not in on.cleared_flags
    assert "TF32" in off.cleared_flags and "TF32" not in off.builder_flags   # TensorRT enables it by default


def test_versions_it_was_not_written_for_are_refused_with_the_reason():
    assert tensorrt_major("10.0.1.6") == 10 and tensorrt_major(" 11.4 ") == 11
    assert version_problem(TRT10) is None and version_problem(TRT11) is None
    assert "written for TensorRT 10 and 11" in version_problem("8.6.1")
    with pytest.raises(ValueError, match="written for TensorRT 10 and 11"):
        build_plan_for("12.0.0", "fp32")
    with pytest.raises(ValueError, match="cannot read a TensorRT major"):
        tensorrt_major("dev")
    with pytest.raises(ValueError, match="got precision 'bf16'"):
        build_plan_for(TRT11, "bf16")


# ---- the optimization profile ----
def test_one_profile_spans_batch_one_to_max_with_feature_dims_from_the_example():
    shapes = profile_shapes({"input_ids": (-1, -1), "pixel_values": (-1, 3, 224, 224)},
                            {"input_ids": (2, 128), "pixel_values": (2, 3, 224, 224)}, max_batch=64, opt_batch=8)
    assert shapes["input_ids"] == ((1, 128), (8, 128), (64, 128))
    assert shapes["pixel_values"] == ((1, 3, 224, 224), (8, 3, 224, 224), (64, 3, 224, 224))
    assert batch_limits(shapes) == (1, 64)


def test_a_fixed_batch_graph_keeps_its_batch():
    shapes = profile_shapes({"image": (1, 3, 32, 32)}, {"image": (1, 3, 32, 32)}, max_batch=64, opt_batch=8)
    assert shapes["image"] == ((1, 3, 32, 32),) * 3
    assert batch_limits(shapes) == (1, 1)


def test_profile_mismatches_are_errors_that_say_where():
    with pytest.raises(ValueError, match=r"input 'image' axis 2: the network fixes 32, the example has 16"):
        profile_shapes({"image": (-1, 3, 32, 32)}, {"image": (2, 3, 16, 16)}, 64, 8)
    with pytest.raises(ValueError, match=r"inputs \['mask'\] have no example input"):
        profile_shapes({"ids": (-1, 8), "mask": (-1, 8)}, {"ids": (2, 8)}, 64, 8)
    with pytest.raises(ValueError, match="rank 2"):
        profile_shapes({"ids": (-1, 8)}, {"ids": (2, 8, 1)}, 64, 8)
    with pytest.raises(ValueError, match="opt_batch=128 must lie in 1..max_batch=64"):
        profile_shapes({"ids": (-1, 8)}, {"ids": (2, 8)}, 64, 128)


# ---- what keys the cache ----
def settings(**change):
    base = dict(version=TRT10, precision="fp16", tf32=False, gpu_name="NVIDIA H100 80GB HBM3", capability=(9, 0),
                driver="580.95.05", opt_batch=8, max_batch=64)
    return tensorrt_settings(**{**base, **change})


def test_settings_name_version_gpu_capability_driver_and_how_it_was_built():
    s = asdict(settings())
    assert s["tensorrt_version"] == TRT10 and s["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert s["compute_capability"] == "9.0" and s["driver"] == "580.95.05"
    assert s["builder_flags"] == () and s["cleared_flags"] == ("TF32",)
    assert s["onnx_graph"] == "fp16" and s["strongly_typed"] and s["network_flags"] == ("STRONGLY_TYPED",)
    assert (s["min_batch"], s["opt_batch"], s["max_batch"]) == (1, 8, 64)


@pytest.mark.parametrize("change", [dict(version="10.14.1.49"), dict(version=TRT11), dict(gpu_name="NVIDIA H200"),
                                    dict(capability=(10, 0)), dict(driver="580.95.06"), dict(tf32=True)])
def test_each_fact_a_plan_depends_on_changes_the_key(change):
    assert cache_key(asdict(settings(**change))) != cache_key(asdict(settings()))


def test_driver_version_is_read_from_the_kernel_modules_proc_file():
    proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
    open_module = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder)\n"
    assert driver_from_proc(proprietary) == "550.54.15"
    assert driver_from_proc(open_module) == "580.95.05"
    assert driver_from_proc("no driver here") is None


def test_plan_dtypes_map_onto_torch_dtypes():
    assert all(isinstance(getattr(torch, name), torch.dtype) for name in TORCH_DTYPES.values())
    assert TORCH_DTYPES["INT64"] == "int64" and TORCH_DTYPES["HALF"] == "float16"  # token ids stay int64


# ---- which ONNX graph each build parses ----
@pytest.fixture(scope="module")
def tiny_cnn():
    model = get_model("tiny-cnn")
    return model, model.build_spec(model.build_module(), 2)


def test_each_choice_parses_its_stage_graph(tiny_cnn):
    _, spec = tiny_cnn
    for version in (TRT10, TRT11):
        assert isinstance(stage_step(spec, build_plan_for(version, "fp32")), Export)
        fp16 = stage_step(spec, build_plan_for(version, "fp16"))
        assert isinstance(fp16, Float16) and isinstance(fp16.parent, Export)            # the stage's fp16 graph
        assert fp16.key == onnx_stage.plan(spec, "fp16").key                             # shared with ONNX Runtime's
        int8 = stage_step(spec, build_plan_for(version, "int8"))
        assert isinstance(int8, SymmetricQuantize) and int8.scheme == spec.int8_scheme
        assert isinstance(int8.parent, Export)                                           # never the fused graph
    onnx_file = replace(spec, module=None, onnx_file=__import__("pathlib").Path("model.onnx"))
    assert isinstance(stage_step(onnx_file, build_plan_for(TRT11, "fp32")), OnnxFile)


def test_the_symmetric_graph_is_keyed_apart_from_onnxruntimes_static_int8(tiny_cnn):
    _, spec = tiny_cnn
    ours = SymmetricQuantize(Export(spec), "static", spec.calibration)
    theirs = Quantize(Export(spec), "static", spec.calibration)
    assert ours.key != theirs.key and ours.kind != theirs.kind
    # calibrated alike: same batches (same digest), same method; only the activation form differs
    assert ours.params()["calibration"] == theirs.params()["calibration"]
    assert ours.params()["recipe"]["calibrate_method"] == theirs.params()["recipe"]["calibrate_method"] == "MinMax"
    assert (ours.params()["recipe"]["activation_type"], theirs.params()["recipe"]["activation_type"]) == ("QInt8", "QUInt8")
    with pytest.raises(ValueError, match="explicit Q/DQ graphs"):
        SymmetricQuantize(Export(spec), "dynamic", spec.calibration)


@pytest.mark.parametrize("scheme", sorted(SYMMETRIC_RECIPES))
def test_the_int8_graph_has_zero_points_of_zero_and_passes_the_int8_row_on_onnxruntime(tiny_cnn, tmp_path, scheme):
    import onnxruntime as ort
    model, spec = tiny_cnn
    built = onnx_stage.materialize(SymmetricQuantize(Export(spec), scheme, spec.calibration), None, tmp_path)
    graph = onnx.load(str(built.model)).graph
    weights = {t.name: t for t in graph.initializer}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert sum(n.op_type == "QuantizeLinear" for n in qdq) >= 2                       # activations are quantized
    for node in qdq:  # TensorRT's only form: int8 with zero points 0, no int32 (bias) dequantization
        zero = numpy_helper.to_array(weights[node.input[2]])
        assert zero.dtype == np.int8 and not zero.any(), node.name
        if node.op_type == "DequantizeLinear" and node.input[0] in weights:
            assert numpy_helper.to_array(weights[node.input[0]]).dtype == np.int8, node.name
    # standard ONNX only (no com.microsoft fusions), at an opset TensorRT 10.0's parser reads (9-20,
    # onnx-tensorrt docs/operators.md)
    assert all(n.domain in ("", "ai.onnx") for n in graph.node)
    assert max(o.version for o in onnx.load(str(built.model)).opset_import if o.domain in ("", "ai.onnx")) <= 20
    assert built.record["steps"] == ["export", "quantize-symmetric"] and built.record["int8_scheme"] == scheme
    inputs = model.inputs(4, seed=3)
    session = ort.InferenceSession(str(built.model), providers=["CPUExecutionProvider"])
    got = dict(zip(model.output_names, session.run(None, {n: inputs[n].numpy() for n in model.input_names})))
    with torch.inference_mode():
        ref = {model.output_names[0]: spec.module(*spec.positional(inputs)).numpy()}
    report = compare_outputs("tiny-cnn-int8", ref, got, DEFAULT_POLICY["int8"], "int8")
    assert report.passed, report.render()


# ---- registration and the skip without TensorRT ----
def test_registered_with_its_capabilities_as_data():
    cls = ENGINES["tensorrt"]
    assert cls is TensorRTEngine
    assert dict(cls.capabilities) == {"cuda": frozenset({"fp32", "fp16", "int8"})}
    assert cls.int8_schemes == frozenset({"static", "static_per_channel"})
    assert cls.consumes == frozenset({"torch", "onnx"}) and cls.dynamic_batch and not cls.dynamic_shapes
    assert cls.gpu_memory == "process" and "tensorrt" in cls.requires
    assert {"tensorrt", "onnx", "onnxruntime", "torch"} <= set(cls.artifact_libraries)
    with pytest.raises(EngineError, match="tensorrt does not run on 'cpu'"):
        TensorRTEngine("fp32", "cpu")


needs_missing = pytest.mark.skipif(TensorRTEngine.is_installed(), reason="tensorrt is installed on this machine")


@needs_missing
def test_a_planned_tensorrt_case_is_a_skip_naming_the_package_and_the_install_command():
    opts = MatrixOptions(models=("tiny-cnn",), engines=("tensorrt",), precisions=("fp32", "fp16", "int8"),
                         batch_sizes=(1, 8), devices=("cuda",), explicit=frozenset(), overhead_model="tiny-cnn",
                         latency_time=1.0, latency_rounds=None)
    planned = plan_cases(opts)
    assert sorted({(p.case.precision, p.case.batch_size) for p in planned}) == [
        (p, bs) for p in ("fp16", "fp32", "int8") for bs in (1, 8)]
    for p in planned:
        assert "tensorrt needs ['tensorrt']" in p.skip_reason, p.skip_reason
        assert INSTALL in p.skip_reason and "pip install tensorrt-cu13" in p.skip_reason


def test_settings_of_an_engine_that_cannot_run_here_say_why():
    engine = TensorRTEngine("fp16", "cuda", tf32=True)
    problem = engine.availability_problem()
    if problem is None:  # a GPU runner with TensorRT: the real facts
        s = engine.settings()
        assert s["tf32"] and s["tensorrt_version"] and s["compute_capability"] and s["driver"]
        return
    with pytest.raises(EngineUnavailable, match="tensorrt"):
        engine.settings()


# ---- one execution context per prepared input set, one stream per thread ----
class FakeContext:
    """Records what the engine asks of an IExecutionContext; ``gate`` holds an enqueue open."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.enqueued: list[tuple[str, int]] = []
        self.addresses_set = 0
        self.gate, self.inside = gate, threading.Event()

    def set_tensor_address(self, name, memory):
        self.addresses_set += 1
        return True

    def execute_async_v3(self, stream_handle):
        self.inside.set()
        if self.gate is not None:
            self.gate.wait(5)
        self.enqueued.append((threading.current_thread().name, stream_handle))
        return True


class FakeStream:
    made = 0

    def __init__(self) -> None:
        FakeStream.made += 1
        self.cuda_stream = 1000 + FakeStream.made


def runner() -> TensorRTEngine:
    """The engine's run path with fake streams (no GPU here): what _run_impl does is the engine's own."""
    engine = TensorRTEngine.__new__(TensorRTEngine)
    engine._streams = StreamPerThread(FakeStream)
    return engine


def test_runs_never_rebind_and_each_thread_enqueues_on_its_own_stream():
    engine = runner()
    a, b = Bound({}, {"y": "out-a"}, FakeContext()), Bound({}, {"y": "out-b"}, FakeContext())
    assert engine._run_impl(a) == {"y": "out-a"}
    assert engine._run_impl(b) == {"y": "out-b"} and engine._run_impl(a)  # LoadGen cycling through samples
    worker = threading.Thread(target=lambda: engine._run_impl(b), name="worker")
    worker.start()
    worker.join()
    assert a.context.addresses_set == b.context.addresses_set == 0      # bound once, in prepare
    main_stream = a.context.enqueued[0][1]
    assert [s for _, s in a.context.enqueued] == [main_stream, main_stream]
    assert b.context.enqueued[0][1] == main_stream                      # one stream per thread ...
    assert b.context.enqueued[1][0] == "worker" and b.context.enqueued[1][1] != main_stream  # ... the worker's own
    assert engine._cuda_stream_impl().cuda_stream == main_stream  # CUDA events record on the caller's stream


def test_one_prepared_set_enqueued_from_two_threads_at_once_is_refused():
    engine = runner()
    gate = threading.Event()
    shared = Bound({}, {}, FakeContext(gate))
    first = threading.Thread(target=lambda: engine._run_impl(shared))
    first.start()
    assert shared.context.inside.wait(5)
    with pytest.raises(EngineError, match="two threads ran one prepared input set at once"):
        engine._run_impl(shared)
    gate.set()
    first.join()
    assert len(shared.context.enqueued) == 1
    shared.context = None  # what close() does to every prepared set
    with pytest.raises(EngineError, match="closed engine"):
        engine._run_impl(shared)
