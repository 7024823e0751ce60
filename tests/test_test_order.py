"""The unit tests' own order under xdist (tests/conftest.py): whole modules, longest first."""
from __future__ import annotations

from tests.conftest import UNKNOWN_TEST_S, longest_modules_first, module_seconds

NODEIDS = ["tests/test_a.py::test_1", "tests/test_a.py::test_2", "tests/test_b.py::test_1",
           "tests/test_c.py::TestK::test_1", "tests/test_c.py::TestK::test_2", "tests/test_d.py::test_new"]


def test_modules_run_longest_first_each_in_its_own_order():
    durations = {"tests/test_a.py::test_1": 0.1, "tests/test_a.py::test_2": 0.2, "tests/test_b.py::test_1": 30.0,
                 "tests/test_c.py::TestK::test_2": 3.0, "tests/test_c.py::TestK::test_1": 1.0}
    assert longest_modules_first(NODEIDS, durations) == [
        "tests/test_b.py::test_1", "tests/test_c.py::TestK::test_1", "tests/test_c.py::TestK::test_2",
        "tests/test_d.py::test_new", "tests/test_a.py::test_1", "tests/test_a.py::test_2"]


def test_a_test_the_durations_do_not_name_counts_as_a_short_one():
    assert module_seconds(NODEIDS, {})["tests/test_a.py"] == 2 * UNKNOWN_TEST_S


def test_modules_of_equal_seconds_keep_the_collections_order():
    assert longest_modules_first(NODEIDS, {}) == [NODEIDS[0], NODEIDS[1], NODEIDS[3], NODEIDS[4], NODEIDS[2], NODEIDS[5]]
