"""Matrix generation and filtering, from the registries and the options."""
from __future__ import annotations

import os

import pytest

from infermatrix.engines import ENGINES
from infermatrix.fixtures.matrix import plan_cases
from infermatrix.fixtures.options import MatrixOptions


def opts(explicit=(), **kw) -> MatrixOptions:
    base = dict(models=("tiny-cnn",), engines=("torch", "onnxruntime"), precisions=("fp32", "int8"),
                batch_sizes=(1, 8), devices=("cpu",), explicit=frozenset(explicit),
                overhead_model="tiny-cnn", latency_time=1.0, latency_rounds=None)
    base.update(kw)
    return MatrixOptions(**base)


def ids(planned) -> list[str]:
    return [p.case.id for p in planned]


def test_default_matrix_omits_impossible_combinations():
    planned = plan_cases(opts())
    assert [i for i in ids(planned) if "torch-int8" not in i] == [
        "tiny-cnn-torch-fp32-bs1-cpu", "tiny-cnn-torch-fp32-bs8-cpu",
        "tiny-cnn-onnxruntime-fp32-bs1-cpu", "tiny-cnn-onnxruntime-fp32-bs8-cpu",
        "tiny-cnn-onnxruntime-int8-static_per_channel-bs1-cpu", "tiny-cnn-onnxruntime-int8-static_per_channel-bs8-cpu",
    ]
    # the torch engine's int8 is another recipe (dynamic Linear): listed as a skip that says how to ask for it
    torch_int8 = [p for p in planned if p.case.engine == "torch" and p.case.precision == "int8"]
    assert [p.case.id for p in torch_int8] == ["tiny-cnn-torch-int8-static_per_channel-bs1-cpu",
                                                "tiny-cnn-torch-int8-static_per_channel-bs8-cpu"]
    assert all("torch has no int8 scheme 'static_per_channel'" in p.skip_reason and "--int8-schemes" in p.skip_reason
               for p in torch_int8)
    assert all(p.skip_reason is None for p in planned if p not in torch_int8)


def test_explicit_impossible_precision_is_a_skip_with_the_reason():
    planned = plan_cases(opts(precisions=("fp16",), explicit={"precisions"}, batch_sizes=(1,)))
    reasons = {p.case.engine: p.skip_reason for p in planned}
    assert "onnxruntime does not support 'fp16' on cpu" in reasons["onnxruntime"]
    assert "['fp32', 'int8']" in reasons["onnxruntime"]


def test_a_device_an_engine_lacks_is_a_skip_only_when_the_engine_is_named():
    # --devices cuda asks for the engines that run on CUDA, not for OpenVINO on an NVIDIA GPU
    assert plan_cases(opts(engines=("openvino",), devices=("cuda",), explicit={"devices"},
                           precisions=("fp32",), batch_sizes=(1,))) == []
    planned = plan_cases(opts(engines=("openvino",), devices=("cuda",), explicit={"devices", "engines"},
                              precisions=("fp32",), batch_sizes=(1,)))
    assert len(planned) == 1
    assert "openvino does not run on 'cuda'" in planned[0].skip_reason
    # --engines tensorrt on a CPU run: listed, and says where it runs
    named = plan_cases(opts(engines=("tensorrt",), devices=("cpu",), explicit={"engines"}, precisions=("fp32",),
                            batch_sizes=(1,)))
    assert [p.skip_reason for p in named] == ["tensorrt does not run on 'cpu'; it runs on ['cuda']"]


def test_engines_that_run_only_on_cuda_named_on_a_cpu_run_are_skips_not_an_internal_error(pytester, repo_root,
                                                                                         monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    res = pytester.runpytest_subprocess(str(repo_root / "perf_tests" / "test_latency.py"), "--models", "tiny-cnn",
                                        "--engines", "tensorrt,onnxruntime_trt,torch_compile_cudagraphs",
                                        "--precisions", "fp32", "--batch-sizes", "1", "-p", "no:cacheprovider", "-rs")
    assert res.ret == 0, res.stdout.str()
    assert "INTERNALERROR" not in res.stdout.str() + res.stderr.str()
    res.stdout.fnmatch_lines(["*tensorrt does not run on 'cpu'; it runs on [[]'cuda'[]]*", "*3 skipped*"])


def test_cuda_without_a_gpu_skips(monkeypatch):
    monkeypatch.setattr("infermatrix.fixtures.matrix.cuda_available", lambda: False)
    planned = plan_cases(opts(devices=("cuda",), explicit={"devices"}, precisions=("fp32",), batch_sizes=(1,)))
    assert planned and all("CUDA is not available" in p.skip_reason for p in planned)


@pytest.fixture
def emulated_bf16(monkeypatch):
    """A CPU without AVX512-BF16/AMX (the CPU changes between machines: state it)."""
    from infermatrix.fixtures import hardware
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))


def test_slow_combinations_need_an_explicit_precision(emulated_bf16):
    assert "bf16" not in " ".join(ids(plan_cases(opts(precisions=("fp32", "bf16")))))
    planned = plan_cases(opts(precisions=("bf16",), explicit={"precisions"}, batch_sizes=(1,)))
    torch_bf16 = [p for p in planned if p.case.engine == "torch"]
    assert torch_bf16 and torch_bf16[0].slow and torch_bf16[0].skip_reason is None


def test_missing_dependency_is_a_skip_naming_the_package(monkeypatch):
    cls = ENGINES["onnxruntime"]
    monkeypatch.setattr(cls, "requires", ("torch", "definitely_not_installed_pkg"))
    planned = plan_cases(opts(engines=("onnxruntime",), explicit={"engines"}, batch_sizes=(1,)))
    assert planned and all("definitely_not_installed_pkg" in p.skip_reason for p in planned)


def test_marks_follow_device_engine_and_slowness(emulated_bf16):
    planned = plan_cases(opts(precisions=("bf16",), explicit={"precisions"}, batch_sizes=(1,)))
    marks = {m.name for m in planned[0].param().marks}
    assert {"cpu", "torch", "slow"} <= marks


@pytest.mark.parametrize("args, message", [
    (["--models", "resnet51"], "--models: unknown model 'resnet51'; registered models:"),
    (["--engines", "tensorrtx"], "valid values: " + ", ".join(sorted(ENGINES))),
    (["--precisions", "fp64"], "valid values: fp32, fp16, bf16, int8"),
    (["--batch-sizes", "0"], "'0' is not a positive integer"),
    (["--devices", "tpu"], "valid values: cpu, cuda"),
    (["--latency-time", "-1"], "expected a positive number of seconds"),
    (["--prompt-lengths", "32,x"], "--prompt-lengths = '32,x': 'x' is not a positive integer"),
    (["--pipelines", "vl,nope"], "unknown value(s) 'nope'; valid values: tiny-vl, vl"),
])
def test_unknown_option_values_are_usage_errors(pytester, args, message, repo_root):
    # in this process (tests/test_faults.py likewise): the run stops at configure, before the process
    # policy sets inductor's folder or the thread count for the whole process
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    result = pytester.runpytest_inprocess(str(repo_root / "perf_tests"), "--collect-only", "-q", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") == before


def test_collected_ids_and_narrowing(pytester, repo_root):
    result = pytester.runpytest_subprocess(
        str(repo_root / "perf_tests" / "test_latency.py"), "--collect-only", "-q",
        "--models", "tiny-cnn", "--engines", "onnxruntime,torch", "--batch-sizes", "4", "--precisions", "fp32,int8",
        "-k", "onnxruntime-int8 or torch-fp32")
    result.stdout.fnmatch_lines(["*test_latency[[]tiny-cnn-onnxruntime-int8-static_per_channel-bs4-cpu[]]",
                                 "*test_latency[[]tiny-cnn-torch-fp32-bs4-cpu[]]",
                                 "*2/4 tests collected*"])
