"""Scenarios as plugins (scenarios/registry.py): a scenario is its module plus one registration, and
the plugin, the option table, the config file and ``infermatrix config --print`` pick it up."""
from __future__ import annotations

import pytest

from infermatrix.core.records import ColdStartRecord
from infermatrix.fixtures.option_table import BY_KEY
from infermatrix.scenarios.builtin import register_builtin_scenarios
from infermatrix.scenarios.registry import SCENARIOS, Scenario, Setting, register


def test_the_built_in_scenarios_are_registered_once_with_their_records_and_settings():
    register_builtin_scenarios()
    register_builtin_scenarios()  # explicit and idempotent
    assert set(SCENARIOS) >= {"accuracy", "generation", "pipeline", "load", "overhead", "cold_start"}
    cold = SCENARIOS["cold_start"]
    assert cold.records == (ColdStartRecord,) and cold.argnames == ("cold_start_case",)
    # its setting is a flag and a config-file key like every other option
    assert BY_KEY["cold_start_runs"].cli == "--cold-start-runs" and BY_KEY["cold_start_runs"].default == 3
    with pytest.raises(ValueError, match="already registered"):
        register(cold)


@pytest.mark.parametrize("raw, problem", [("0", "below the smallest allowed, 1"), ("two", "is not an integer"),
                                          (True, "is not an integer"), (2.5, "is not an integer")])
def test_a_setting_refuses_a_bad_value_saying_why(raw, problem):
    with pytest.raises(ValueError, match=problem):
        Setting("runs", "h", 3, int, 1).read(raw)
    assert Setting("runs", "h", 3, int, 1).read("4") == 4 and Setting("t", "h", 1.0, float, 0).read("0.25") == 0.25


def test_a_setting_key_two_scenarios_share_is_refused():
    register_builtin_scenarios()
    twin = Scenario("twin", "h", ("twin_case",), lambda plan: [], (ColdStartRecord,),
                    settings=(Setting("cold_start_runs", "h", 1),))
    with pytest.raises(ValueError, match=r"settings \['cold_start_runs'\] are already 'cold_start'"):
        register(twin)
    assert "twin" not in SCENARIOS


SCENARIO_MODULE = '''
import pytest
from infermatrix.core.records import ColdStartRecord
from infermatrix.core.schema import Case
from infermatrix.scenarios.registry import Point, Scenario, Setting, register

def points(plan):
    n = plan.settings["echo_times"]
    return [Point((c, k), f"{c.id}-echo{k}", c, skip) for c, skip in plan.cases(precisions=("fp32",), batch_sizes=(1,))
            for k in range(n)]

register(Scenario("echo", "a scenario written for this test", ("echo_case", "echo_k"), points, (ColdStartRecord,),
                  settings=(Setting("echo_times", "how many echoes per case", 2, int, 1),)))
'''

TEST = '''
def test_echo(echo_case, echo_k, scenario_settings):
    assert echo_k < scenario_settings["echo"]["echo_times"]
'''


def test_a_scenario_written_outside_the_package_runs_through_one_registration(pytester):
    # a plugin module that registers before infermatrix's plugin builds its option table
    pytester.makepyfile(echo_scenario=SCENARIO_MODULE, test_echo=TEST)
    args = ("-p", "echo_scenario", "-p", "infermatrix.fixtures.plugin", "--models", "tiny-cnn",
            "--engines", "torch,onnxruntime", "-p", "no:cacheprovider")
    listed = pytester.runpytest_subprocess("--collect-only", "-q", *args, "--echo-times", "3")
    listed.stdout.fnmatch_lines(["*test_echo[[]tiny-cnn-torch-fp32-bs1-cpu-echo0[]]*",
                                 "*test_echo[[]tiny-cnn-onnxruntime-fp32-bs1-cpu-echo2[]]*"])
    assert listed.ret == 0 and "6 tests collected" in listed.stdout.str()
    ran = pytester.runpytest_subprocess(*args)  # the default from the registration: 2 each
    ran.assert_outcomes(passed=4)
    bad = pytester.runpytest_subprocess(*args, "--echo-times", "0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--echo-times = '0': 0 is below the smallest allowed, 1*"])


def test_a_record_that_declares_a_chart_gets_it_in_the_report_without_a_change_to_reports(tmp_path):
    from infermatrix.commands.main import main
    from infermatrix.core.schema import Case, Reference
    from tests.runs import write_run
    benches = []
    for engine, p50 in (("torch", 1.4), ("onnxruntime", 0.17)):
        rec = ColdStartRecord.of(Case("tiny-cnn", engine, "fp32", 1, "cpu"), Reference("torch", "fp32", "cpu"),
                                 cold_start_p50_s=p50, cold_start_max_s=p50 * 1.2, starts=3)
        benches.append({"name": f"test_cold_start[{rec.case.id}]", "fullname": f"t::{engine}", "group": "cold",
                        "stats": {"median": p50, "mean": p50, "rounds": 1, "min": p50, "max": p50},
                        "extra_info": rec.to_extra_info()})
    run = write_run(tmp_path / "cold.json", benches)
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "cold_start.png").stat().st_size > 5_000
