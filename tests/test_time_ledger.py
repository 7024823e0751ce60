"""Where the run's time goes (runner/time_ledger.py): phases on a fake clock, the account merged
across xdist workers, and the summary block and saved account of a real tiny-cnn run."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from infermatrix.fixtures.progress import WORKER_KEY, TimeAccount
from infermatrix.runner.time_ledger import HARNESS, TimeLedger, build_label, render, run_time


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


def test_nested_phases_charge_each_second_to_the_innermost_phase(clock):
    ledger = TimeLedger(clock)
    ledger.start()
    clock.tick(1)                                  # harness
    with ledger.phase("equivalence"):
        clock.tick(2)                              # the check's own inference
        with ledger.phase("build", "tiny-cnn (torch fp32 on cpu)") as build:
            clock.tick(5)
        clock.tick(3)
    clock.tick(4)                                  # harness
    assert ledger.seconds == {"equivalence": 5.0, "build": 5.0}
    assert ledger.counts == {"equivalence": 1, "build": 1}
    assert build.span == 5.0 and build.detail == "tiny-cnn (torch fp32 on cpu)"
    assert ledger.as_dict() == {"wall_s": 15.0, "phases": {"equivalence": 5.0, "build": 5.0},
                                "counts": {"equivalence": 1, "build": 1}}
    account = run_time(ledger.wall_seconds(), [ledger.as_dict()])
    rows = {r["phase"]: r for r in account["phases"]}
    assert rows[HARNESS]["seconds"] == 5.0
    assert sum(r["seconds"] for r in account["phases"]) == 15.0
    assert sum(r["share"] for r in account["phases"]) == pytest.approx(1.0)


def test_a_phase_left_open_is_closed_with_its_enclosing_phase_or_by_unwind(clock):
    ledger = TimeLedger(clock)
    outer = ledger.begin("memory")
    ledger.begin("load")                           # an exception skipped its end
    clock.tick(2)
    assert ledger.end(outer) == 0.0                # closes "load" too, charged up to now
    assert ledger.seconds == {"memory": 0.0, "load": 2.0}
    assert ledger.end(outer) == 0.0 and ledger.counts == {"memory": 1, "load": 1}  # twice: nothing changes
    ledger.begin("timed rounds")
    clock.tick(3)
    ledger.unwind()
    clock.tick(10)
    assert ledger.seconds["timed rounds"] == 3.0


def test_move_recharges_at_most_what_the_source_holds(clock):
    ledger = TimeLedger(clock)
    with ledger.phase("timed rounds") as timed:
        clock.tick(2.0)
    ledger.move("timed rounds", "warm-up", timed.seconds - 1.5)   # the kept samples summed to 1.5 s
    assert ledger.seconds == {"timed rounds": 1.5, "warm-up": 0.5}
    ledger.move("timed rounds", "warm-up", 9.0)
    assert ledger.seconds == {"timed rounds": 0.0, "warm-up": 2.0}
    ledger.move("warm-up", "timed rounds", -1.0)                  # negative: nothing moves
    assert ledger.seconds == {"timed rounds": 0.0, "warm-up": 2.0}


def test_listeners_hear_begin_and_end_in_order(clock):
    ledger = TimeLedger(clock)
    heard = []
    ledger.listeners.append(lambda event, phase: heard.append((event, phase.name)))
    with ledger.phase("cache lookup"):
        with ledger.phase("build"):
            clock.tick(1)
    assert heard == [("begin", "cache lookup"), ("begin", "build"), ("end", "build"), ("end", "cache lookup")]


def test_workers_ledgers_add_up_and_the_shares_are_of_their_summed_wall_time():
    gw0 = {"wall_s": 50.0, "phases": {"build": 10.0, "timed rounds": 20.0}, "counts": {"build": 2}}
    gw1 = {"wall_s": 40.0, "phases": {"timed rounds": 25.0, "memory": 5.0}, "counts": {"memory": 3}}
    account = run_time(60.0, [gw0, gw1])
    rows = {r["phase"]: r for r in account["phases"]}
    assert account["wall_s"] == 60.0 and account["process_s"] == 90.0 and account["processes"] == 2
    assert rows["timed rounds"]["seconds"] == 45.0 and rows["build"]["count"] == 2
    assert rows[HARNESS]["seconds"] == pytest.approx(30.0)
    assert account["timed_rounds_share"] == pytest.approx(0.5)
    assert [r["phase"] for r in account["phases"]] == ["build", "timed rounds", "memory", HARNESS]
    lines = render(account)
    assert "2 workers ran 90.0 s in all" in lines[0]
    assert lines[-1] == "timed rounds: 45.0 s (50.0 % of the run; 50.0 % outside them)"
    assert any(re.search(r"memory\s+5\.0 s\s+5\.6 %\s+\(3×\)", line) for line in lines)


def test_the_controller_merges_what_each_xdist_worker_sent():
    ledger = TimeLedger()
    config = SimpleNamespace()               # the controller: no workerinput, no workeroutput
    account = TimeAccount(config, ledger)
    for gw, seconds in (("gw0", 3.0), ("gw1", 4.0)):
        raw = json.dumps({"wall_s": 10.0, "phases": {"equivalence": seconds}, "counts": {"equivalence": 1}})
        account.pytest_testnodedown(SimpleNamespace(workeroutput={WORKER_KEY: raw}, gateway=SimpleNamespace(id=gw)),
                                    None)
    merged = account.account()
    rows = {r["phase"]: r for r in merged["phases"]}
    assert merged["processes"] == 2 and merged["process_s"] == 20.0
    assert rows["equivalence"]["seconds"] == 7.0 and rows["equivalence"]["count"] == 2
    assert account.measured_anything()
    # a worker sends its own ledger in its workeroutput
    worker = SimpleNamespace(workerinput={}, workeroutput={})
    with ledger.phase("build"):
        pass
    TimeAccount(worker, ledger).pytest_sessionfinish(None)
    assert set(json.loads(worker.workeroutput[WORKER_KEY])["phases"]) == {"build"}


def test_a_run_that_only_collected_prints_no_account():
    ledger = TimeLedger()
    with ledger.phase("collection"):
        pass
    assert not TimeAccount(SimpleNamespace(), ledger).measured_anything()


def test_build_label_names_the_model_engine_precision_scheme_device_and_a_static_batch():
    fields = {"model": "resnet18", "engine": "onnxruntime", "precision": "int8", "int8_scheme": "static_per_channel",
              "device": "cpu", "batch_profile": "dynamic"}
    assert build_label(fields) == "resnet18 (onnxruntime int8 static_per_channel on cpu)"
    assert build_label({**fields, "precision": "fp32", "int8_scheme": None, "batch_profile": 8}) == \
        "resnet18 (onnxruntime fp32 on cpu, batch 8)"


PHASE_LINE = re.compile(r"^\s{2}(\S.*?)\s+(\d+\.\d) s\s+(\d+\.\d) %")


def test_the_summary_says_where_a_real_runs_time_went_and_saves_it(pytester, repo_root, tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)   # a plain run even inside an xdist worker
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    result = pytester.runpytest_subprocess(
        str(repo_root / "perf_tests" / "test_latency.py"), "--models", "tiny-cnn", "--engines", "torch",
        "--precisions", "fp32", "--batch-sizes", "2", "--latency-rounds", "5", "--engine-cache", str(tmp_path / "c"),
        "--benchmark-json", str(tmp_path / "run.json"), "-p", "no:cacheprovider")
    out = result.stdout.str()
    assert result.ret == 0, out
    block = out[out.index("time: "):]
    phases = {m.group(1): (float(m.group(2)), float(m.group(3)))
              for m in map(PHASE_LINE.match, block.splitlines()) if m}
    assert {"build", "equivalence", "timed rounds", "memory", HARNESS} <= set(phases), block
    # each share is rounded to 0.1 %: their sum is 100 % within that rounding
    assert sum(share for _, share in phases.values()) == pytest.approx(100.0, abs=0.05 * len(phases)), block
    result.stdout.re_match_lines([r"timed rounds: \d+\.\d s \(\d+\.\d % of the run; \d+\.\d % outside them\)"])
    saved = json.loads((tmp_path / "run.json").read_text())["infermatrix_time"]
    rows = {r["phase"]: r for r in saved["phases"]}
    assert rows["timed rounds"]["seconds"] > 0 and rows["memory"]["seconds"] > 0
    assert rows["build"]["count"] == 1  # torch fp32 is its own baseline: one build
    assert sum(r["share"] for r in saved["phases"]) == pytest.approx(1.0)
    assert saved["processes"] == 1 and saved["process_s"] >= saved["timed_rounds_s"] > 0


def test_under_xdist_the_controller_accounts_for_every_workers_time(pytester, repo_root, tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    result = pytester.runpytest_subprocess(
        str(repo_root / "perf_tests" / "test_equivalence.py"), "-n", "2", "--models", "tiny-cnn",
        "--engines", "torch,onnxruntime", "--precisions", "fp32", "--batch-sizes", "1,2",
        "--engine-cache", str(tmp_path / "c"), "-p", "no:cacheprovider")
    out = result.stdout.str()
    assert result.ret == 0, out
    result.stdout.re_match_lines([r"time: \d+\.\d s wall from the session's start; 2 workers ran \d+\.\d s in all.*",
                                  r"timed rounds: 0\.0 s \(0\.0 % of the run; 100\.0 % outside them\)"])
    block = out[out.index("time: "):]
    phases = {m.group(1): float(m.group(3)) for m in map(PHASE_LINE.match, block.splitlines()) if m}
    # each worker's equivalence checks and builds reached the controller, which ran none itself
    assert {"build", "equivalence", "collection", HARNESS} <= set(phases), block
    assert sum(phases.values()) == pytest.approx(100.0, abs=0.05 * len(phases)), block


def test_report_summary_shows_the_newest_saved_account_per_machine(tmp_path):
    from infermatrix.commands.main import main
    from tests.runs import bench, write_run

    def saved(name, when, wall, timed_share):
        path = write_run(tmp_path / "runs" / name, [bench()], when=when)
        data = json.loads(path.read_text())
        gw = {"wall_s": wall, "phases": {"build": wall * 0.2, "timed rounds": wall * timed_share}, "counts": {}}
        data["infermatrix_time"] = run_time(wall, [gw])
        path.write_text(json.dumps(data))

    saved("0001_old.json", "2026-11-25T00:00:00", 100.0, 0.1)
    saved("0002_new.json", "2026-11-26T00:00:00", 200.0, 0.5)
    write_run(tmp_path / "runs" / "0000_before_the_account.json", [bench()], when="2026-11-24T00:00:00")
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "summary.md").read_text()
    section = text[text.index("## Where the run's time went"):]
    assert "`0002_new.json` (200.0 s wall; timed rounds 50.0 % of the run)" in section
    assert "0001_old.json" not in section
    assert "| timed rounds | 100.0 s | 50.0 % |" in section and "| harness | 60.0 s | 30.0 % |" in section
