"""A simulated CI fleet: a small matrix run as 3 shards in 3 separate pytest processes (pytest-split),
fanned in by `infermatrix merge`, published as a page; a dropped shard and a second hardware kind.

The shard files are made once for the module (three real benchmark processes on tiny-cnn, warm
engine cache) and each test merges copies of them into its own history.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infermatrix.commands.main import main
from infermatrix.core import history_layout
from infermatrix.core.hardware_kind import kind_of
from infermatrix.core.run_record import RunRecord
from infermatrix.core.shard_record import ShardRecord

SPLITS = 3
MATRIX = ["--models", "tiny-cnn", "--engines", "torch,onnxruntime", "--precisions", "fp32", "--batch-sizes", "1",
          "--latency-rounds", "5", "--no-engine-memory", "-k", "latency or equivalence",
          # 4 cases of equal (unknown) duration: least_duration deals them 2/1/1, so every shard runs
          # cases (duration_based_chunks, the default, leaves the third shard empty)
          "--splitting-algorithm", "least_duration"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory, repo_root) -> list[Path]:
    """shard-1.json .. shard-3.json: each from its own pytest process, as a fleet's jobs make them."""
    folder = tmp_path_factory.mktemp("fleet-shards")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}   # a plain pytest run
    env["HF_HUB_OFFLINE"] = "1"
    paths = []
    for group in range(1, SPLITS + 1):
        path = folder / f"shard-{group}.json"
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "perf_tests", *MATRIX, "--splits", str(SPLITS), "--group", str(group),
             "--durations-path", str(folder / "no-durations-yet.json"), "--benchmark-json", str(path),
             "-p", "no:cacheprovider", "-q"],
            cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"shard {group}:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
        paths.append(path)
    return paths


def records(paths: list[Path]) -> list[ShardRecord]:
    return [ShardRecord.from_json(json.loads(p.read_text())["infermatrix_shard"]) for p in paths]


def merge(capsys, *args) -> tuple[int, str]:
    code = main(["merge", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_three_shard_processes_merge_into_one_run_with_every_planned_case_once(shards, tmp_path, capsys):
    shard_records = records(shards)
    plan = shard_records[0].planned
    assert len(plan) >= SPLITS and all(r.planned == plan for r in shard_records)
    assert all(r.selected for r in shard_records), "every shard ran cases"
    selected = [n for r in shard_records for n in r.selected]
    assert sorted(selected) == sorted(plan), "the shards together ran the plan, each case once"

    history = tmp_path / "history"
    code, out = merge(capsys, *shards, "--into", history)
    assert code == 0, out
    (kind,) = history_layout.kinds(history)
    (entry,) = history_layout.runs(history, kind)
    run = history_layout.load_run(entry)
    record = RunRecord.from_json(run["infermatrix_run"])
    assert record.complete and record.shards_present == (1, 2, 3) and record.cases_missing == ()
    benchmarked = [b["fullname"] for b in run["benchmarks"]]
    assert len(benchmarked) == len(set(benchmarked))
    assert sorted(benchmarked) == sorted(n for n in plan if "test_latency" in n)
    assert sorted(record.outcomes) == sorted(plan)
    assert all(o.outcome == "passed" for o in record.outcomes.values()), record.outcomes
    assert kind_of(run["machine_info"]).id == kind == record.kind

    # pytest-benchmark's own compare reads the merged run
    cli = Path(sys.executable).parent / "py.test-benchmark"
    done = subprocess.run([str(cli), "compare", str(entry.path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in benchmarked:
        assert name.split("::")[-1] in done.stdout


def test_the_merged_history_publishes_as_a_page_linking_its_run(shards, tmp_path, capsys):
    history, site = tmp_path / "history", tmp_path / "site"
    assert merge(capsys, *shards, "--into", history)[0] == 0
    (kind,) = history_layout.kinds(history)
    (entry,) = history_layout.runs(history, kind)
    assert main(["publish", str(history), "--out", str(site)]) == 0
    page = (site / "index.html").read_text()
    assert kind in page
    for bench in history_layout.load_run(entry)["benchmarks"]:
        assert bench["param"] in page, f"{bench['param']} is not on the page"
    assert list(site.rglob(entry.path.name)), "the page links its run file, copied into the site"


def test_a_dropped_shard_leaves_the_run_incomplete_naming_its_cases(shards, tmp_path, capsys):
    dropped = records(shards)[1]
    history = tmp_path / "history"
    code, out = merge(capsys, shards[0], shards[2], "--into", history)
    assert code == 1, out
    assert "shards missing: 2 (of 3)" in out
    for nodeid in dropped.selected:
        assert nodeid in out
    (kind,) = history_layout.kinds(history)
    assert history_layout.runs(history, kind) == [], "an incomplete run is never a point of the series"
    (entry,) = history_layout.runs(history, kind, include_incomplete=True)
    record = RunRecord.from_json(history_layout.load_run(entry)["infermatrix_run"])
    assert not record.complete and record.shards_missing == (2,)
    assert record.cases_missing == dropped.selected


def as_other_kind(paths: list[Path], folder: Path) -> list[Path]:
    """The same shard files as if run on another kind of runner (one more CPU)."""
    folder.mkdir()
    out = []
    for path in paths:
        data = json.loads(path.read_text())
        kind = kind_of(data["machine_info"])
        other = dataclasses.replace(kind, cpus=kind.cpus + 1)
        data["machine_info"]["infermatrix"]["hardware_kind"] = other.to_json()
        data["infermatrix_shard"]["kind"] = other.id
        out.append(folder / path.name)
        out[-1].write_text(json.dumps(data))
    return out


def test_runs_of_two_kinds_go_to_two_folders_never_one_series(shards, tmp_path, capsys):
    history = tmp_path / "history"
    other = as_other_kind(shards, tmp_path / "other-kind")
    assert merge(capsys, *shards, "--into", history)[0] == 0
    assert merge(capsys, *other, "--into", history)[0] == 0
    kinds = history_layout.kinds(history)
    assert len(kinds) == 2
    for kind in kinds:
        (entry,) = history_layout.runs(history, kind)   # one run per kind's series, not two in one
        assert entry.path.parent == history / kind / "runs"
        assert kind_of(history_layout.load_run(entry)["machine_info"]).id == kind
    # a set that mixes the two kinds is not one run
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in (shards[0], shards[1]):
        shutil.copy(path, mixed / path.name)
    code, out = merge(capsys, *mixed.iterdir(), other[2], "--into", tmp_path / "history-mixed")
    assert code == 2 and "hardware kind" in out
    assert not (tmp_path / "history-mixed").exists()
