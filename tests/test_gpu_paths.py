"""What the GPU paths decide without a GPU: the TensorRT EP's library check, which ONNX Runtime nodes
left the GPU (read from a real session), ORT's C++ log captured for the fallback reason, NVML on a
driver without the newest process query, OpenVINO never on cuda, and gpu_check's GPU-only checks."""
from __future__ import annotations

import os
import types
from pathlib import Path

import onnx
import onnx.helper as oh
import onnxruntime as ort
import pytest

from bench.gpu_check_report import gpu_checks
from infermatrix.engines import ENGINES
from infermatrix.engines.onnxruntime_placement import RECORD_KEY, assignments, cpu_placement, output_types
from infermatrix.engines.onnxruntime_providers import native_stderr
from infermatrix.engines.onnxruntime_tensorrt import (EP_LIBRARIES, LIBNVINFER, LIBNVONNXPARSER, ep_library_problem,
                                                      ep_version_problem, nv_tensorrt_version)
from infermatrix.fixtures import matrix
from infermatrix.runner.memory import compute_processes
from tests.runs import bench
from tests.test_matrix import ids, opts


# ---- 1. the TensorRT the EP can use ----
class FakeLib:
    def __init__(self, version: int) -> None:
        self.version = version

    def getInferLibVersion(self) -> int:  # noqa: N802 - TensorRT's C symbol
        return self.version


def loader(version: int = 101401, missing: str | None = None):
    loaded = []

    def load(name: str):
        loaded.append(name)
        if name == missing:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return FakeLib(version)
    return load, loaded


def test_the_ep_loads_both_linked_libraries_and_needs_the_tensorrt_it_was_built_against():
    assert EP_LIBRARIES == (LIBNVINFER, LIBNVONNXPARSER) == ("libnvinfer.so.10", "libnvonnxparser.so.10")
    load, loaded = loader(101401)
    if ENGINES["tensorrt"].is_installed():
        pytest.skip("tensorrt is installed: the check would load the real libraries")
    assert ep_library_problem(load) is None and loaded == list(EP_LIBRARIES)
    load, _ = loader(101401, missing=LIBNVONNXPARSER)
    problem = ep_library_problem(load)
    assert problem.startswith("libnvonnxparser.so.10 (TensorRT 10") and "infermatrix[gpu,tensorrt]" in problem
    older, _ = loader(101303)  # 10.13.3: the old extra's floor
    assert "TensorRT 10.13.3 is loaded; ONNX Runtime's TensorRT EP was built against 10.14.1" in ep_library_problem(older)
    assert ep_library_problem(loader(101601)[0]) is None  # newer libraries serve older clients


def test_tensorrt_version_numbers_and_majors():
    assert nv_tensorrt_version(101401) == (10, 14, 1) and nv_tensorrt_version(110400) == (11, 4, 0)
    assert "links TensorRT 10" in ep_version_problem((11, 4, 0))
    with pytest.raises(ValueError, match="not a TensorRT >= 10 version"):
        nv_tensorrt_version(8601)


def test_the_tensorrt_extra_pins_the_eps_floor(repo_root):
    text = (repo_root / "pyproject.toml").read_text()
    assert 'tensorrt = ["tensorrt-cu13>=10.14.1,<11"]' in text


# ---- 4. ONNX Runtime nodes that left the GPU ----
def shape_and_compute_graph(path: Path) -> Path:
    """x -> Relu (float) -> Reshape by a shape computed from Shape -> Gather -> Concat (int64)."""
    i64 = onnx.TensorProto.INT64
    nodes = [oh.make_node("Relu", ["x"], ["r"], name="relu"),
             oh.make_node("Shape", ["r"], ["s"], name="shape"),
             oh.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
             oh.make_node("Concat", ["n", "minus1"], ["shape2"], name="concat", axis=0),
             oh.make_node("Reshape", ["r", "shape2"], ["y"], name="reshape")]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 4])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                          [oh.make_tensor("zero", i64, [1], [0]), oh.make_tensor("minus1", i64, [1], [-1])])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)], ir_version=10), str(path))
    return path


def test_cpu_nodes_are_read_from_the_session_and_judged_by_their_output_types(tmp_path):
    model = shape_and_compute_graph(tmp_path / "m.onnx")
    opts_ = ort.SessionOptions()
    opts_.add_session_config_entry(RECORD_KEY, "1")
    opts_.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node to look at
    sess = ort.InferenceSession(str(model), opts_, providers=["CPUExecutionProvider"])
    placed = assignments(sess)
    assert sorted(op for _, op, _ in placed) == ["Concat", "Gather", "Relu", "Reshape", "Shape"]
    types_ = output_types(model)
    assert types_["relu"] == (1,) and types_["concat"] == (7,)  # FLOAT, INT64
    # on this CPU-only session every node is on the CPU EP: the shape chain is shape work, the rest compute
    out = cpu_placement(placed, types_)
    assert out["ort_cpu_nodes"] == {"Relu": 1, "Shape": 1, "Gather": 1, "Concat": 1, "Reshape": 1}
    assert out["ort_cpu_compute_nodes"] == {"Relu": 1, "Reshape": 1}
    assert out["ort_cpu_fallback"].startswith("2 compute node(s) ran on the CPU EP, not the GPU (Relu x1, Reshape x1)")


def test_only_shape_work_on_the_cpu_is_not_a_fallback_and_unknown_types_count_as_compute():
    placed = [("CUDAExecutionProvider", "Conv", "conv"), ("CPUExecutionProvider", "Gather", "g"),
              ("CPUExecutionProvider", "Unsqueeze", "u")]
    shape_only = cpu_placement(placed, {"g": (7,), "u": (7,), "conv": (1,)})
    assert shape_only == {"ort_cpu_nodes": {"Gather": 1, "Unsqueeze": 1}, "ort_cpu_compute_nodes": {}}
    unnamed = cpu_placement([("CPUExecutionProvider", "NonMaxSuppression", "")], {})
    assert unnamed["ort_cpu_compute_nodes"] == {"NonMaxSuppression": 1} and "ort_cpu_fallback" in unnamed


def test_what_onnxruntime_logs_natively_is_captured_and_written_back(tmp_path, capfd):
    model = shape_and_compute_graph(tmp_path / "m.onnx")
    verbose = ort.SessionOptions()
    verbose.log_severity_level = 0
    with native_stderr() as said:
        os.write(2, b"2026-12-06 10:00:00.0 [W:onnxruntime:Default, x.cc:1 f] \x1b[1;31mplanted warning\x1b[m\n")
        ort.InferenceSession(str(model), verbose, providers=["CPUExecutionProvider"])  # ORT's C++ logger, fd 2
    assert "planted warning" in said
    assert "Node placements" not in " ".join(said)  # only warnings and errors are kept as the reason
    err = capfd.readouterr().err
    assert "planted warning" in err and "CPUExecutionProvider" in err  # nothing is hidden from the user


# ---- 7. NVML on a driver without the newest process query ----
class Mismatch(Exception):
    pass


def fake_nvml(v3_fails: bool, v2_fails: bool = False):
    class NVMLError(Exception):
        pass

    def v3(handle):
        if v3_fails:
            raise Mismatch("Unversioned function called and the pyNVML version does not match the NVML lib version")
        return ["v3"]

    def v2(handle):
        if v2_fails:
            raise NVMLError("Function Not Found")
        return ["v2"]
    return types.SimpleNamespace(NVMLError=NVMLError, NVMLLibraryMismatchError=Mismatch,
                                 nvmlDeviceGetComputeRunningProcesses=v3, nvmlDeviceGetComputeRunningProcesses_v2=v2)


def test_a_library_mismatch_falls_back_to_the_versioned_call_or_says_why():
    assert compute_processes(fake_nvml(False), "h") == ["v3"]
    assert compute_processes(fake_nvml(True), "h") == ["v2"]
    with pytest.raises(LookupError, match="NVMLLibraryMismatch|Mismatch: Unversioned"):
        compute_processes(fake_nvml(True, v2_fails=True), "h")


# ---- 5. OpenVINO is never a CUDA case ----
def test_openvino_on_cuda_is_not_generated_even_when_cuda_is_named(monkeypatch):
    monkeypatch.setattr(matrix, "cuda_available", lambda: False)
    planned = matrix.plan_cases(opts(engines=("openvino", "onnxruntime"), devices=("cuda",), batch_sizes=(1,),
                                     precisions=("fp32",), explicit=frozenset({"devices", "precisions"})))
    assert ids(planned) == ["tiny-cnn-onnxruntime-fp32-bs1-cuda"]
    # named both: listed, as a skip that says why
    named = matrix.plan_cases(opts(engines=("openvino",), devices=("cuda",), batch_sizes=(1,), precisions=("fp32",),
                                   explicit=frozenset({"devices", "engines", "precisions"})))
    assert ids(named) == ["tiny-cnn-openvino-fp32-bs1-cuda"]
    assert "openvino does not run on 'cuda'" in named[0].skip_reason
    from infermatrix.engines.openvino_engine import OV_DEVICES
    assert "cuda" not in OV_DEVICES  # OpenVINO's "GPU" is an Intel GPU


# ---- 6. gpu_check's checks ----
def gpu_case(engine: str, **extra):
    b = bench(model="resnet50", engine=engine, precision="fp32", bs=1, device="cuda", median=1e-3)
    b["extra_info"].update(extra)
    return b


def test_gpu_checks_fail_on_uncovered_samples_cpu_compute_nodes_and_a_failed_tensorrt_case():
    good = [gpu_case("torch", gpu_compute_p50_s=0.4e-3, gpu_compute_uncovered=0),
            gpu_case("onnxruntime", gpu_compute_p50_s=0.5e-3, gpu_compute_uncovered=0,
                     ort_cpu_nodes={"Gather": 2}, ort_cpu_compute_nodes={})]
    outcomes = {"resnet50-tensorrt-fp32-bs1-cuda": ("passed", ""),
                "concurrency:resnet50-tensorrt-fp32-cuda": ("passed", "")}
    lines, failed = gpu_checks([{"benchmarks": good}], outcomes)
    assert failed == 0, lines
    assert "- ok: GPU compute samples covered by the spin in 2 of 2 cases" in lines
    stayed = "- ok: ONNX Runtime compute nodes stayed on the GPU in 1 of 1 cases (1 with only"
    assert any(line.startswith(stayed) for line in lines)
    assert "- ok: tensorrt: 1 of 1 cases ran" in lines
    assert "- not decided: onnxruntime_trt: 0 of 0 cases ran" in lines
    bad = [gpu_case("torch", gpu_compute_p50_s=2e-3, gpu_compute_uncovered=3),
           gpu_case("onnxruntime", gpu_compute_p50_s=0.5e-3, ort_cpu_nodes={"Relu": 1}, ort_cpu_compute_nodes={"Relu": 1},
                    ort_cpu_fallback="1 compute node(s) ran on the CPU EP")]
    lines, failed = gpu_checks([{"benchmarks": bad}], {"resnet50-tensorrt-fp32-bs1-cuda": ("failed", "boom")})
    assert failed == 4, lines  # uncovered, above host, CPU compute, tensorrt failed; the rest undecided
    assert any("samples dropped in resnet50 bs1 torch fp32 (3)" in line for line in lines)
    assert any("above it (events on the wrong stream?) in resnet50 bs1 torch fp32" in line for line in lines)
