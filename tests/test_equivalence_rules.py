"""What decides a degenerate reference, and what a case records it was judged by (issue 16 items 6, 18)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from infermatrix.reports.checks_section import checks_section
from infermatrix.runner.equivalence import DEFAULT_POLICY, JUDGED_NORMALLY, compare_output, compare_outputs, cosine

FP32, INT8 = DEFAULT_POLICY["fp32"], DEFAULT_POLICY["int8"]
rng = np.random.default_rng(0)


def test_a_near_zero_reference_is_judged_by_size_not_cosine():
    """A detector's probability map on a random input: max 2e-6. fp32 rounding noise of 1.3e-7
    gave cosine 0.996 and failed the 0.99999 row though the outputs agree to 1e-7."""
    ref = np.abs(rng.normal(0, 1e-6, (1, 1, 64, 64))).astype(np.float32)
    noisy = (ref + rng.normal(0, 1.3e-7, ref.shape)).astype(np.float32)
    assert cosine(ref, noisy) < FP32.min_cosine                     # the old verdict: fail
    ok = compare_output("p", ref, noisy, FP32, gate_top1=False)
    assert ok.failures == [] and ok.judged_by.startswith("reference near zero")
    wrong = compare_output("p", ref, ref + np.float32(5e-4), FP32, gate_top1=False)
    assert any("max |got - ref|" in f and "reference near zero" in f for f in wrong.failures)


def test_a_near_constant_reference_is_judged_on_its_deviations():
    """cos(ref, its mean) already passes the row: an engine that outputs the mean everywhere
    used to pass int8's cosine 0.99; judged on the deviations it fails, a faithful one passes."""
    ref = (5.0 + rng.normal(0, 0.05, (4, 256))).astype(np.float32)
    flat = np.full_like(ref, ref.mean())
    assert cosine(ref, flat) >= INT8.min_cosine                     # the old verdict: pass
    lost = compare_output("y", ref, flat, INT8, gate_top1=True)
    assert lost.judged_by.startswith("reference near constant") and any("deviations" in f for f in lost.failures)
    faithful = compare_output("y", ref, ref + rng.normal(0, 0.002, ref.shape).astype(np.float32), INT8, gate_top1=True)
    assert faithful.failures == [] and faithful.judged_by.startswith("reference near constant")


def test_an_ordinary_reference_keeps_cosine_and_sqnr():
    ref = rng.normal(0, 1, (2, 10)).astype(np.float32)
    comp = compare_output("logits", ref, ref * 1.5, FP32, gate_top1=False)
    assert comp.judged_by == JUDGED_NORMALLY and any("elements outside" in f for f in comp.failures)


def test_each_check_records_the_row_and_the_override_it_was_judged_by():
    ref = {"y": rng.normal(0, 1, (2, 8)).astype(np.float32)}
    default = compare_outputs("m-onnxruntime-int8-bs2-cpu", ref, ref, INT8, "int8").figures()
    assert default["tolerance_override"] is None and default["tolerance"]["min_cosine"] == 0.99
    looser = replace(INT8, min_cosine=0.9, reason="tested looser (set in run.toml: models[0].tolerances.int8)")
    figures = compare_outputs("m-onnxruntime-int8-bs2-cpu", ref, ref, looser, "int8").figures()
    assert figures["tolerance_override"] == looser.reason and figures["tolerance"]["min_cosine"] == 0.9


def _check(case: str, equivalence: str, failures: tuple[str, ...] = (), **extra) -> dict:
    """A saved check as the summary reads it; ``failures`` are what a failed one lists."""
    return {"id": case, "machine": "AMD EPYC", "datetime": "2026-12-06T10:00:00", "path": "run.json",
            "equivalence": equivalence, "equivalence_row": "fp32", "cosine_min": 0.99905, "sqnr_db_min": 30.0,
            "failures": list(failures), "tolerance_override": None, "degenerate_outputs": {}, "tolerance": {}, **extra}


def test_the_summary_lists_failed_checks_overrides_and_degenerate_outputs():
    checks = pd.DataFrame([
        _check("det-openvino-fp32-bs1-cpu", "fail", failures=("cosine 0.99905 < 0.99999",)),
        _check("m-onnxruntime-int8-bs1-cpu", "pass", tolerance_override="tested looser (set in run.toml)",
               tolerance={"min_cosine": 0.9, "min_sqnr_db": 20.0, "atol": None}),
        _check("det-onnxruntime-fp32-bs1-cpu", "pass", degenerate_outputs={"p": "reference near zero (...)"}),
        _check("m-torch-fp32-bs1-cpu", "pass"),
    ])
    text = "\n".join(checks_section(checks))
    assert "## Failed equivalence checks" in text and "det-openvino-fp32-bs1-cpu" in text
    assert "cosine 0.99905 < 0.99999" in text
    assert "## Cases judged by a tolerance override" in text and "tested looser (set in run.toml)" in text
    assert "## Outputs with a degenerate reference" in text and "p: reference near zero" in text
    assert "m-torch-fp32-bs1-cpu" not in text                    # a plain pass is not listed
    assert checks_section(pd.DataFrame([_check("m-torch-fp32-bs1-cpu", "pass")])) == []
