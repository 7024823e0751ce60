"""The shard record (core/shard_record.py) the plugin writes into every pytest-benchmark JSON
(fixtures/shard_plan.py): a real split run on tiny-cnn in subprocesses, its parts, its validation."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from infermatrix.core.hardware_kind import kind_of
from infermatrix.core.shard_record import SHARD_KEY, CaseOutcome, ShardRecord, ShardRecordError, read_shard
from infermatrix.fixtures import shard_plan
from infermatrix.fixtures.machine import host_kind

KIND = "amd-epyc-2cpu-avx2-ee380256"
# 8 cases: 2 tests x 2 engines x 2 devices; the CUDA ones are skips with a reason on a host without CUDA
MATRIX = ["--models", "tiny-cnn", "--engines", "torch,onnxruntime", "--precisions", "fp32", "--batch-sizes", "1",
          "--devices", "cpu,cuda", "--latency-rounds", "5", "--no-engine-memory", "-k", "latency or equivalence"]


def record(**change) -> ShardRecord:
    fields = dict(splits=2, group=1, planned=("a", "b", "c"), selected=("a", "c"),
                  outcomes={"c": CaseOutcome("skipped", "no CUDA"), "a": CaseOutcome("passed", None)},
                  commit="0" * 40, kind=KIND)
    return ShardRecord(**{**fields, **change})


def test_json_round_trip_in_node_id_order():
    data = json.loads(json.dumps(record().to_json()))
    assert list(data) == ["splits", "group", "planned", "selected", "outcomes", "commit", "kind"]
    assert list(data["outcomes"]) == ["a", "c"] and data["outcomes"]["c"] == {"outcome": "skipped", "reason": "no CUDA"}
    assert ShardRecord.from_json(data) == record()
    assert read_shard({SHARD_KEY: data}) == record() and read_shard({"benchmarks": []}) is None


def test_a_selected_case_without_an_outcome_is_one_the_shard_never_reached():
    assert record(outcomes={"a": CaseOutcome("passed", None)}).not_run == ("c",)


@pytest.mark.parametrize("change, message", [
    ({"splits": 0}, "splits 0"), ({"group": 3}, "group 3 of 2 splits"), ({"group": True}, "group True"),
    ({"planned": ("b", "a")}, "planned: expected distinct node ids, sorted"),
    ({"selected": ("a", "a")}, "(a appear twice)"), ({"selected": ("a", "z")}, "not in the plan: z"),
    ({"outcomes": {"b": CaseOutcome("passed", None)}}, "did not select: b"),
    ({"kind": "AMD EPYC"}, "kind 'AMD EPYC'"), ({"commit": ""}, "commit ''"),
])
def test_a_malformed_record_is_refused_naming_the_field(change, message):
    with pytest.raises(ShardRecordError, match=re.escape(message)):
        record(**change)


def test_reading_refuses_missing_fields_and_unknown_outcomes():
    data = record().to_json()
    with pytest.raises(ShardRecordError, match=r"missing \['kind'\]"):
        ShardRecord.from_json({k: v for k, v in data.items() if k != "kind"})
    data["outcomes"]["a"] = {"outcome": "xpassed", "reason": None}
    with pytest.raises(ShardRecordError, match="outcome 'xpassed': expected one of passed, failed, skipped, error"):
        ShardRecord.from_json(data)


def report(when: str, outcome: str, longrepr=None, **extra) -> pytest.TestReport:
    rep = pytest.TestReport("t.py::test[x]", ("t.py", 1, "test[x]"), {}, outcome, longrepr, when)
    for name, value in extra.items():
        setattr(rep, name, value)
    return rep


@pytest.mark.parametrize("phases, expected", [
    ([report("setup", "passed"), report("call", "passed"), report("teardown", "passed")], ("passed", None)),
    ([report("setup", "skipped", ("t.py", 3, "Skipped: onnxruntime: no CUDA here"))],
     ("skipped", "onnxruntime: no CUDA here")),
    ([report("setup", "passed"), report("call", "failed", "outputs differ: cosine 0.91 < 0.999")],
     ("failed", "outputs differ: cosine 0.91 < 0.999")),
    ([report("setup", "failed", "fixture broke"), report("teardown", "passed")], ("error", "fixture broke")),
    ([report("setup", "passed"), report("call", "passed"), report("teardown", "failed", "leak")], ("error", "leak")),
    # a teardown error after a failure does not hide the failure
    ([report("call", "failed", "slow"), report("teardown", "failed", "leak")], ("failed", "slow")),
    ([report("call", "skipped", ("t.py", 3, "Skipped: x"), wasxfail="known bug")], ("skipped", "xfail: known bug")),
])
def test_a_cases_outcome_is_read_from_all_its_phases(phases, expected):
    ledger = shard_plan.ShardLedger()
    for rep in phases:
        ledger.pytest_runtest_logreport(rep)
    case = ledger.outcomes["t.py::test[x]"]
    assert (case.outcome, case.reason) == expected


def test_without_pytest_split_the_record_says_one_split_of_one():
    ledger = shard_plan.ShardLedger()
    ledger.planned, ledger.selected = ("a", "b"), ("a", "b")
    ledger.outcomes = {"a": CaseOutcome("passed", None), "gone": CaseOutcome("passed", None)}
    config = SimpleNamespace(getoption=lambda name, default=None: None)
    out = ledger.record(config, {"machine_info": {"infermatrix": {"cpu_model": "AMD EPYC", "usable_cpus": 2}},
                                 "commit_info": {"id": "ab" * 20}})
    assert (out.splits, out.group, out.commit, out.selected) == (1, 1, "ab" * 20, ("a", "b"))
    assert set(out.outcomes) == {"a"} and out.kind == kind_of({"infermatrix": {"cpu_model": "AMD EPYC",
                                                                                "usable_cpus": 2}}).id


def test_the_plan_hook_refuses_to_run_after_pytest_split():
    """pluggy calls a hook's implementations from the end of its list: ours must lie after pytest-split's."""
    split = object()
    ours = sys.modules[shard_plan.__name__]

    def config(order):
        impls = [SimpleNamespace(plugin=p) for p in order]
        hook = SimpleNamespace(pytest_collection_modifyitems=SimpleNamespace(get_hookimpls=lambda: impls))
        return SimpleNamespace(pluginmanager=SimpleNamespace(
            get_plugin=lambda name: split if name == shard_plan.PYTEST_SPLIT_PLUGIN else None, hook=hook))

    shard_plan._check_runs_before_pytest_split(config([split, ours]))   # ours is called first: fine
    with pytest.raises(pytest.UsageError, match="after pytest-split took this shard's part"):
        shard_plan._check_runs_before_pytest_split(config([ours, split]))


def run_shard(repo_root, folder, splits: int, group: int, *selection: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env["HF_HUB_OFFLINE"] = "1"
    path = folder / f"shard-{group}-of-{splits}.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "perf_tests", *MATRIX, *selection, "--splits", str(splits), "--group", str(group),
         "--durations-path", str(folder / "no-durations.json"), "--benchmark-json", str(path), "-p", "no:cacheprovider",
         "-q"], cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    # 5: pytest's "no tests ran", an empty share of a small matrix
    assert done.returncode in (0, 5), f"shard {group}/{splits}:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert "PytestAssertRewriteWarning" not in done.stdout + done.stderr
    return json.loads(path.read_text())


def test_two_shards_run_every_planned_case_exactly_once(repo_root, tmp_path):
    runs = [run_shard(repo_root, tmp_path, 2, group) for group in (1, 2)]
    first, second = (ShardRecord.from_json(r[SHARD_KEY]) for r in runs)
    # the whole plan in both: read before pytest-split took each shard's part
    assert first.planned == second.planned and len(first.planned) == 8
    assert first.selected and second.selected and not set(first.selected) & set(second.selected)
    assert sorted(first.selected + second.selected) == list(first.planned)
    assert (first.splits, first.group, second.group) == (2, 1, 2)
    assert first.kind == second.kind == host_kind().id == kind_of(runs[0]["machine_info"]).id
    assert first.commit == second.commit and re.fullmatch(r"[0-9a-f]{40}", first.commit or "")
    no_cuda = shutil.which("nvidia-smi") is None
    for shard, data in zip((first, second), runs):
        assert set(shard.outcomes) == set(shard.selected)   # every selected case ended, with its outcome
        for nodeid, case in shard.outcomes.items():
            if "-cpu]" in nodeid or not no_cuda:
                assert case == CaseOutcome("passed", None), nodeid
            else:
                assert case.outcome == "skipped" and "CUDA" in (case.reason or ""), (nodeid, case)
        timed = {b["fullname"] for b in data["benchmarks"]}
        assert timed == {n for n in shard.selected if "test_latency" in n and shard.outcomes[n].outcome == "passed"}


def test_an_empty_shard_still_writes_its_record(repo_root, tmp_path):
    """A shard with nothing to time writes the JSON pytest-benchmark would skip: the merge reads
    that the shard ran and had no case, instead of taking it for missing."""
    data = run_shard(repo_root, tmp_path, 2, 2, "-k", "equivalence and torch and cpu")
    shard = ShardRecord.from_json(data[SHARD_KEY])
    assert data["benchmarks"] == [] and data["machine_info"]["infermatrix"]["hardware_kind"]["id"] == shard.kind
    assert len(shard.planned) == 1 and shard.selected == () and (shard.splits, shard.group) == (2, 2)
