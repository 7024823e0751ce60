"""The equivalence metrics and policy on constructed arrays."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from infermatrix.runner.equivalence import (DEFAULT_POLICY, Tolerance, compare_outputs, cosine, policy_row, sqnr_db,
                                  top1_agreement)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False, width=32)
vectors = arrays(np.float32, st.integers(2, 64), elements=finite)


@given(vectors)
def test_identical_outputs_pass_every_row(x):
    for row, tol in DEFAULT_POLICY.items():
        report = compare_outputs("c", {"y": x}, {"y": x.copy()}, tol, row, gate_top1=True)
        assert report.passed, report.render()


@given(vectors, vectors)
def test_cosine_is_symmetric_and_bounded(a, b):
    if a.shape != b.shape:
        b = np.resize(b, a.shape)
    c1, c2 = cosine(a, b), cosine(b, a)
    assert -1.0 <= c1 <= 1.0
    assert math.isclose(c1, c2, abs_tol=1e-12)


@given(vectors, st.floats(0.01, 100.0))
def test_cosine_ignores_positive_scale(a, k):
    if np.linalg.norm(a.astype(np.float64)) > 0:
        assert cosine(a, a * np.float32(k)) == pytest.approx(1.0, abs=1e-6)


def test_sqnr_of_known_noise():
    ref = np.ones(1000, np.float32)
    noisy = ref + np.float32(0.1)  # noise power 0.01 vs signal 1 -> 20 dB
    assert sqnr_db(ref, noisy) == pytest.approx(20.0, abs=1e-3)
    assert sqnr_db(ref, ref) == math.inf


def test_smallest_passing_tolerance_is_tight():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 100)).astype(np.float32)
    got = ref + rng.normal(scale=1e-3, size=ref.shape).astype(np.float32)
    comp = compare_outputs("c", {"y": ref}, {"y": got}, DEFAULT_POLICY["fp32"], "fp32").outputs[0]
    t = comp.smallest_passing_tol
    passing = Tolerance(t * 1.0001, t * 1.0001, 0.0)
    failing = Tolerance(t * 0.99, t * 0.99, 0.0)
    assert compare_outputs("c", {"y": ref}, {"y": got}, passing, "x").passed
    assert not compare_outputs("c", {"y": ref}, {"y": got}, failing, "x").passed


def test_fp32_rejects_fp16_sized_error_and_reports_every_metric():
    ref = np.linspace(-5, 5, 1000, dtype=np.float32).reshape(10, 100)
    got = ref + np.float32(3e-3)
    report = compare_outputs("m-e-fp32-bs1-cpu", {"logits": ref}, {"logits": got},
                             DEFAULT_POLICY["fp32"], "fp32")
    assert not report.passed
    text = report.render()
    for word in ("max_abs", "max_rel", "cosine", "sqnr", "top1", "smallest passing", "elements outside"):
        assert word in text
    assert compare_outputs("c", {"logits": ref}, {"logits": got}, DEFAULT_POLICY["fp16"], "fp16").passed


def test_int8_row_judges_by_cosine_and_sqnr_not_elementwise():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(8, 1000)).astype(np.float32)
    mild = ref + rng.normal(scale=0.03, size=ref.shape).astype(np.float32)   # ~30 dB
    harsh = ref + rng.normal(scale=0.3, size=ref.shape).astype(np.float32)   # ~10 dB
    tol = DEFAULT_POLICY["int8"]
    assert compare_outputs("c", {"y": ref}, {"y": mild}, tol, "int8").passed
    failed = compare_outputs("c", {"y": ref}, {"y": harsh}, tol, "int8")
    assert not failed.passed and "SQNR" in failed.render()


def test_top1_gated_only_when_asked():
    ref = np.array([[1.0, 0.9], [0.0, 1.0]], np.float32)
    swapped = np.array([[0.9, 1.0], [0.0, 1.0]], np.float32)
    tol = Tolerance(None, None, 0.0, min_top1=0.99)
    assert top1_agreement(ref, swapped) == 0.5
    assert compare_outputs("c", {"y": ref}, {"y": swapped}, tol, "x", gate_top1=False).passed
    assert not compare_outputs("c", {"y": ref}, {"y": swapped}, tol, "x", gate_top1=True).passed
    # only the named prediction outputs are gated (a KV cache's argmax means nothing)
    assert compare_outputs("c", {"y": ref}, {"y": swapped}, tol, "x", gate_top1=True, top1_outputs=("logits",)).passed


@settings(max_examples=25)
@given(vectors)
def test_nan_output_always_fails(x):
    bad = x.copy()
    bad[0] = np.nan
    assert not compare_outputs("c", {"y": x}, {"y": bad}, DEFAULT_POLICY["int8"], "int8").passed


def test_shape_and_name_mismatches_are_reported():
    a = np.zeros((2, 3), np.float32)
    report = compare_outputs("c", {"y": a}, {"y": a[:1], "z": a}, DEFAULT_POLICY["fp32"], "fp32")
    assert not report.passed
    assert "output names differ" in report.render() and "shape" in report.render()


def test_policy_rows_and_validation():
    assert policy_row("fp32", "cuda") == "fp32"  # TF32 off (the default policy): fp32 is judged as fp32
    assert policy_row("fp32", "cuda", tf32=True) == "fp32-tf32"
    assert policy_row("fp32", "cpu", tf32=True) == "fp32"
    assert policy_row("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="give both or neither"):
        Tolerance(1e-3, None, 0.9)
    with pytest.raises(ValueError, match="min_cosine"):
        Tolerance(None, None, 1.5)
