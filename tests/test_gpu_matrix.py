"""The matrix by hardware: precisions a device computes natively are in the default run, the
GPU job (-m gpu) lists its cases as skips where there is no CUDA, and TF32 is a stated policy."""
from __future__ import annotations

import pytest

from infermatrix.engines import get_engine
from infermatrix.fixtures import hardware, matrix
from infermatrix.runner.equivalence import DEFAULT_POLICY, compare_outputs
from infermatrix.fixtures.options import DEFAULT_PRECISIONS
from tests.test_matrix import ids, opts


@pytest.fixture
def gpu_host(monkeypatch):
    """Plan as on a CUDA machine whose GPU has bf16 (no GPU is touched: planning is data)."""
    monkeypatch.setattr(matrix, "cuda_available", lambda: True)
    monkeypatch.setattr(hardware, "cuda_bf16", lambda: True)


def test_cuda_defaults_add_fp16_and_bf16_where_engines_run_them(gpu_host):
    planned = matrix.plan_cases(opts(precisions=DEFAULT_PRECISIONS, devices=("cpu", "cuda"), batch_sizes=(1,)))
    cuda = {i for i in ids(planned) if i.endswith("-cuda")}
    assert {"tiny-cnn-torch-fp16-bs1-cuda", "tiny-cnn-torch-bf16-bs1-cuda", "tiny-cnn-onnxruntime-fp16-bs1-cuda",
            "tiny-cnn-torch-fp32-bs1-cuda"} <= cuda
    # int8 on CUDA only where an engine builds it there; the torch engine's int8 is CPU-only
    assert not any(i.startswith("tiny-cnn-torch-int8") and i.endswith("cuda") for i in cuda)
    assert all(p.skip_reason is None for p in planned if p.case.device == "cuda")


def test_a_gpu_without_bf16_keeps_bf16_out_of_the_default_run(monkeypatch):
    monkeypatch.setattr(matrix, "cuda_available", lambda: True)
    monkeypatch.setattr(hardware, "cuda_bf16", lambda: False)
    planned = matrix.plan_cases(opts(precisions=DEFAULT_PRECISIONS, devices=("cuda",), batch_sizes=(1,)))
    assert not [i for i in ids(planned) if "-bf16-" in i]
    asked = matrix.plan_cases(opts(("precisions",), precisions=("bf16",), devices=("cuda",), batch_sizes=(1,)))
    assert "tiny-cnn-torch-bf16-bs1-cuda" in ids(asked)  # named explicitly: generated


@pytest.mark.parametrize("flags, expected", [(frozenset({"avx512_bf16", "avx512f"}), True),
                                             (frozenset({"amx_bf16"}), True), (frozenset({"avx2"}), False)])
def test_cpu_bf16_is_in_the_default_run_only_where_the_cpu_has_it(monkeypatch, flags, expected):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    planned = matrix.plan_cases(opts(precisions=DEFAULT_PRECISIONS, batch_sizes=(1,)))
    bf16 = [p for p in planned if p.case.precision == "bf16"]
    assert bool(bf16) == expected
    assert all(not p.slow for p in bf16)  # native: an ordinary case, not a slow one


def test_without_cuda_the_gpu_matrix_collects_and_every_case_says_why(monkeypatch):
    monkeypatch.setattr(matrix, "cuda_available", lambda: False)
    planned = matrix.plan_cases(opts(precisions=DEFAULT_PRECISIONS, devices=("cuda",), batch_sizes=(1,)))
    assert {p.case.precision for p in planned} >= {"fp32", "fp16", "bf16"}
    assert all("CUDA is not available" in p.skip_reason for p in planned)


def test_gpu_marker_lists_skips_instead_of_no_tests(pytester, repo_root):
    result = pytester.runpytest_subprocess(str(repo_root / "perf_tests"), "-m", "gpu", "--models", "tiny-cnn",
                                           "-p", "no:cacheprovider", "-rs", "-q")
    if matrix.cuda_available():
        pytest.skip("this machine has CUDA: the GPU job would run, not skip")
    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    assert "no tests ran" not in out and "CUDA is not available on this machine" in out
    result.stdout.fnmatch_lines(["*skipped*"])
    assert " passed" not in out  # nothing ran on the CPU under -m gpu


def test_tf32_is_a_recorded_setting_and_picks_the_fp32_tf32_row_only_when_on():
    on = get_engine("torch")("fp32", "cuda", tf32=True)
    assert on.settings()["tf32"] is True
    assert get_engine("torch")("fp32", "cuda").settings()["tf32"] is False
    assert get_engine("torch")("fp32", "cpu", tf32=True).settings() == {}  # no TF32 on a CPU


def test_reduced_precision_rows_scale_atol_with_the_output():
    import numpy as np
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 20.0, (8, 1000)).astype(np.float32)  # large logits, as a trained model has
    got = (ref + rng.normal(0, 0.05, ref.shape)).astype(np.float32)  # ~52 dB: a good bf16 result
    report = compare_outputs("case", {"y": ref}, {"y": got}, DEFAULT_POLICY["bf16"], "bf16")
    assert report.passed, report.render()
    noisy = (ref + rng.normal(0, 2.0, ref.shape)).astype(np.float32)  # ~20 dB: not bf16 quality
    report = compare_outputs("case", {"y": ref}, {"y": noisy}, DEFAULT_POLICY["bf16"], "bf16")
    assert not report.passed and any("SQNR" in f for o in report.outputs for f in o.failures)


def test_usable_engines_name_what_runs_here_and_why_the_rest_does_not():
    from infermatrix.fixtures.usable import header_lines, usable_engines
    table = usable_engines()
    assert table["torch"]["cpu"] == "usable" and set(table) >= {"torch", "onnxruntime"}
    if not matrix.cuda_available():
        assert "CUDA is not available" in table["torch"]["cuda"]
        assert "CUDAExecutionProvider" in table["onnxruntime"]["cuda"]  # installed, but not usable on a GPU
    assert "torch@cpu" in header_lines()[0]
