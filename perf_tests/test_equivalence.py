"""Every case's outputs against PyTorch eager fp32 on the same seeded inputs.

Independent of timing, so it runs under pytest-xdist (``-n auto``); the latency benchmarks
repeat the same check before they time anything.
"""
from __future__ import annotations

import pytest


def test_equivalence(case, run_session):
    report = run_session.equivalence(case)
    if not report.passed:
        pytest.fail(report.render(), pytrace=False)
    assert report.outputs, f"{case.id}: nothing was compared"
