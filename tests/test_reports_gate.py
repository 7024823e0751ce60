"""The statistical gate on constructed samples."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infermatrix.reports.gate import compare_case, parse_thresholds, to_markdown
from infermatrix.reports.history import InputError


def row(samples) -> pd.Series:
    s = np.asarray(samples)
    return pd.Series({"median_s": float(np.median(s)), "p99_s": float(np.percentile(s, 99)),
                      "throughput": 1.0 / float(np.median(s)), "samples": [float(x) for x in s]})


def noisy(median, n=200, seed=0, rel=0.03):
    return np.random.default_rng(seed).normal(median, median * rel, n).clip(median * 0.5)


def test_identical_samples_never_regress():
    s = noisy(1e-3)
    r = compare_case("c", row(s), row(s), {"median": 0.0, "p99": 0.0}, 0.01)
    assert r.verdict == "unchanged" and r.tested


def test_a_clear_doubling_always_regresses():
    r = compare_case("c", row(noisy(1e-3, seed=1)), row(noisy(2e-3, seed=2)), {"median": 0.10}, 0.01)
    assert r.verdict == "slower" and r.change["median"] == pytest.approx(1.0, abs=0.05)
    assert r.p_slower < 1e-10 and "median +" in r.reasons[0]


def test_significant_but_below_threshold_is_unchanged():
    r = compare_case("c", row(noisy(1e-3, seed=3, rel=0.001)), row(noisy(1.03e-3, seed=4, rel=0.001)),
                     {"median": 0.10}, 0.01)
    assert r.p_slower < 0.01 and r.verdict == "unchanged"


def test_above_threshold_but_not_significant_is_unchanged():
    base = np.array([1.0, 3.0, 1.0, 3.0, 1.0, 3.0]) * 1e-3
    new = np.array([3.0, 1.0, 3.0, 1.2, 3.0, 1.2]) * 1e-3
    r = compare_case("c", row(base), row(new), {"median": 0.02}, 0.01)
    assert r.change["median"] > 0.02 and r.p_slower > 0.01 and r.verdict == "unchanged"


def test_without_samples_the_threshold_alone_decides():
    base, new = row(noisy(1e-3, seed=5)), row(noisy(1.2e-3, seed=6))
    base["samples"] = new["samples"] = None
    r = compare_case("c", base, new, {"median": 0.10}, 0.01)
    assert r.verdict == "slower" and not r.tested and r.p_slower is None


@settings(max_examples=30, deadline=None)
@given(st.floats(1e-4, 1e-1), st.floats(1.3, 4.0), st.integers(0, 10_000))
def test_faster_and_slower_are_symmetric(median, factor, seed):
    a, b = noisy(median, seed=seed), noisy(median * factor, seed=seed + 1)
    th = {"median": 0.10}
    assert compare_case("c", row(a), row(b), th, 0.01).verdict == "slower"
    assert compare_case("c", row(b), row(a), th, 0.01).verdict == "faster"


@pytest.mark.parametrize("text, expected", [
    ("median=10%", {"median": 0.10}),
    ("median=7.5%,p99=15%", {"median": 0.075, "p99": 0.15}),
    (" throughput = 2.25 % ", {"throughput": 0.0225}),
])
def test_thresholds_parse_with_decimals(text, expected):
    assert parse_thresholds(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["median", "median=ten%", "mean=10%", "median=10", ""])
def test_bad_thresholds_are_input_errors(bad):
    with pytest.raises(InputError, match="does not parse"):
        parse_thresholds(bad)


def test_p99_is_not_gated_when_a_side_has_no_p99_and_the_table_says_why():
    base, new = row(noisy(1e-3, seed=7)), row(noisy(1e-3, seed=8))
    base["samples"] = new["samples"] = None              # threshold-only: the thresholds alone decide
    new["p99_s"] = 5e-3                                  # a p99 five times base's ...
    base["p99_s"], base["notes"] = None, {"p99_s": "p99 needs >= 100 samples; 40 were taken"}  # ... but base has none
    r = compare_case("c", base, new, {"median": 0.10, "p99": 0.15}, 0.01)
    assert r.verdict == "unchanged" and "p99" not in r.change
    assert r.notes == ("p99 not gated: base has no p99 (p99 needs >= 100 samples; 40 were taken)",)
    md = to_markdown([r], {"median": 0.10, "p99": 0.15}, 0.01, "a", "b")
    assert "p99 not gated: base has no p99 (p99 needs >= 100 samples; 40 were taken)" in md
    # the same p99 with both sides measured is gated
    base["p99_s"] = 1e-3
    assert compare_case("c", base, new, {"median": 0.10, "p99": 0.15}, 0.01).verdict == "slower"
