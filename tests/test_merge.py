"""`infermatrix merge`: shard files (constructed here, no benchmark is run) become one run per
hardware kind, complete or marked incomplete; input that cannot be one run is refused whole."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from infermatrix.commands.main import main
from infermatrix.core import history_layout
from infermatrix.core.hardware_kind import HardwareKind
from infermatrix.core.run_record import RunRecord
from tests.runs import bench

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CPU_KIND = HardwareKind(cpu_model="AMD EPYC 7763 64-Core Processor", cpu_flags=("avx2",), cpus=2, gpu_name=None,
                        gpu_count=0, driver=None, cuda=None,
                        libraries=(("onnxruntime", "1.31.1"), ("torch", "2.14.1")))
GPU_KIND = HardwareKind(cpu_model="Intel Xeon Platinum 8480+", cpu_flags=("amx_bf16", "avx512f"), cpus=16,
                        gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, driver="580.65", cuda="13.0",
                        libraries=(("onnxruntime-gpu", "1.31.1"), ("torch", "2.14.1")))
KINDS = {k.id: k for k in (CPU_KIND, GPU_KIND)}
KIND, OTHER_KIND = CPU_KIND.id, GPU_KIND.id
CASES = [f"tiny-cnn-{engine}-fp32-bs1-cpu" for engine in ("torch", "onnxruntime", "openvino")]


def latency_id(case: str) -> str:
    return f"perf_tests/test_latency.py::test_latency[{case}]"


def equivalence_id(case: str) -> str:
    return f"perf_tests/test_equivalence.py::test_equivalence[{case}]"


# the plan: each case's equivalence test (no benchmark, an outcome) and latency test (a benchmark)
PLAN = sorted([equivalence_id(c) for c in CASES] + [latency_id(c) for c in CASES])


def shard(group: int, cases: list[str], splits: int = 3, kind: str = KIND, commit: str | None = COMMIT,
          when: str = "2026-01-02T03:04:05.123456+00:00", plan: list[str] = PLAN) -> dict:
    """A shard file's JSON as the plugin writes it: the shard's cases, benchmarked and given outcomes."""
    selected = sorted([equivalence_id(c) for c in cases] + [latency_id(c) for c in cases])
    benchmarks = []
    for case in cases:
        model, engine, precision, bs, device = case.rsplit("-", 4)
        entry = bench(model=model, engine=engine, precision=precision, bs=int(bs[2:]), device=device)
        stats = entry["stats"]   # the rest of what pytest-benchmark writes (its compare reads it all)
        stats.update(outliers="0;0", ld15iqr=stats["min"], hd15iqr=stats["max"], iterations=1,
                     ops=1 / stats["mean"], total=stats["mean"] * stats["rounds"])
        benchmarks.append(entry)
    return {"machine_info": {"node": f"runner-{group}", "infermatrix": {"hardware_kind": KINDS[kind].to_json()}},
            "commit_info": {"id": commit, "dirty": False}, "benchmarks": benchmarks, "datetime": when,
            "version": "5.3.1",
            "infermatrix_equivalence": [{"id": c, "status": "pass"} for c in cases],
            "infermatrix_time": {"wall_s": 10.0 * group, "process_s": 10.0 * group, "processes": 1,
                                 "phases": [{"phase": "timed rounds", "seconds": 4.0, "count": 2, "share": 0.4}],
                                 "timed_rounds_s": 4.0, "timed_rounds_share": 0.4},
            "infermatrix_shard": {"splits": splits, "group": group, "planned": plan, "selected": selected,
                                  "outcomes": {n: {"outcome": "passed", "reason": None} for n in selected},
                                  "commit": commit, "kind": kind}}


def write(folder: Path, name: str, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(data))
    return path


def shard_set(folder: Path, **kw) -> list[Path]:
    return [write(folder, f"shard-{g}.json", shard(g, [CASES[g - 1]], **kw)) for g in (1, 2, 3)]


def merge(args: list, capsys) -> tuple[int, str, str]:
    code = main(["merge", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def stored(history: Path) -> list[Path]:
    return sorted(p for p in history.rglob("*") if p.is_file()) if history.exists() else []


def test_a_complete_run_is_one_run_of_its_kind_with_every_case(tmp_path, capsys):
    history = tmp_path / "history"
    code, out, _ = merge([*shard_set(tmp_path / "shards"), "--into", history], capsys)
    assert code == 0, out
    assert history_layout.kinds(history) == [KIND]
    assert history_layout.kind_label(history, KIND) == CPU_KIND.label
    (entry,) = history_layout.runs(history, KIND)
    assert entry.path.name == "20260102T030405Z-0123456789ab.json" and entry.complete
    assert str(entry.path) in out
    run = history_layout.load_run(entry)
    assert sorted(b["fullname"] for b in run["benchmarks"]) == sorted(latency_id(c) for c in CASES)
    record = RunRecord.from_json(run["infermatrix_run"])
    assert record.complete and record.shards_present == (1, 2, 3) and not record.shards_missing
    assert set(record.outcomes) == set(PLAN) and record.commit == COMMIT and record.kind == KIND
    assert record.sources == ("shard-1.json", "shard-2.json", "shard-3.json")
    assert [r["id"] for r in run["infermatrix_equivalence"]] == CASES
    assert run["infermatrix_time"]["wall_s"] == 30.0 and run["infermatrix_time"]["processes"] == 3
    assert "infermatrix_shard" not in run
    assert json.loads((history / KIND / "kind.json").read_text())["id"] == KIND


def test_a_missing_shard_is_stored_as_incomplete_naming_it_and_its_cases(tmp_path, capsys):
    history = tmp_path / "history"
    one, _, three = shard_set(tmp_path / "shards")
    code, _, err = merge([one, three, "--into", history], capsys)
    assert code == 1
    assert "INCOMPLETE" in err and "shards missing: 2 (of 3)" in err
    for case in (latency_id(CASES[1]), equivalence_id(CASES[1])):
        assert case in err
    assert history_layout.runs(history, KIND) == []   # never a point of the series
    (entry,) = history_layout.runs(history, KIND, include_incomplete=True)
    assert entry.path.name.endswith("-incomplete.json") and not entry.complete
    record = RunRecord.from_json(history_layout.load_run(entry)["infermatrix_run"])
    assert not record.complete and record.shards_missing == (2,)
    assert record.cases_missing == tuple(sorted([equivalence_id(CASES[1]), latency_id(CASES[1])]))


def test_accept_incomplete_exits_0_and_still_marks_the_run(tmp_path, capsys):
    history = tmp_path / "history"
    one, two, _ = shard_set(tmp_path / "shards")
    code, _, err = merge([one, two, "--into", history, "--accept-incomplete"], capsys)
    assert code == 0 and "shards missing: 3 (of 3)" in err
    (entry,) = history_layout.runs(history, KIND, include_incomplete=True)
    assert not entry.complete


def test_a_planned_case_without_benchmark_or_outcome_makes_the_run_incomplete(tmp_path, capsys):
    data = [shard(g, [CASES[g - 1]]) for g in (1, 2, 3)]
    lost = latency_id(CASES[0])
    data[0]["benchmarks"] = []
    del data[0]["infermatrix_shard"]["outcomes"][lost]   # the process died in the middle of it
    paths = [write(tmp_path, f"s{i}.json", d) for i, d in enumerate(data, 1)]
    code, _, err = merge([*paths, "--into", tmp_path / "history"], capsys)
    assert code == 1 and "cases missing (1)" in err and lost in err


def test_a_recorded_skip_or_failure_with_its_reason_accounts_for_its_case(tmp_path, capsys):
    data = [shard(g, [CASES[g - 1]]) for g in (1, 2, 3)]
    skipped = latency_id(CASES[2])
    data[2]["benchmarks"] = []
    data[2]["infermatrix_shard"]["outcomes"][skipped] = {"outcome": "skipped", "reason": "openvino not installed"}
    paths = [write(tmp_path, f"s{i}.json", d) for i, d in enumerate(data, 1)]
    code, out, _ = merge([*paths, "--into", tmp_path / "history"], capsys)
    assert code == 0, out
    (entry,) = history_layout.runs(tmp_path / "history", KIND)
    outcome = history_layout.load_run(entry)["infermatrix_run"]["outcomes"][skipped]
    assert outcome == {"outcome": "skipped", "reason": "openvino not installed"}


def refused(tmp_path: Path, capsys, paths: list[Path], *named: str) -> str:
    history = tmp_path / "history"
    code, _, err = merge([*paths, "--into", history], capsys)
    assert code == 2, err
    assert stored(history) == [], "a refused merge writes nothing"
    for text in named:
        assert text in err, f"{text!r} not named in: {err}"
    return err


def test_a_file_that_is_not_json_is_refused_naming_it(tmp_path, capsys):
    paths = shard_set(tmp_path / "shards")
    paths[1].write_text("{not json")
    refused(tmp_path, capsys, paths, str(paths[1]), "not a readable JSON file")


def test_a_benchmark_file_without_a_shard_record_is_refused(tmp_path, capsys):
    paths = shard_set(tmp_path / "shards")
    data = json.loads(paths[2].read_text())
    del data["infermatrix_shard"]
    paths[2].write_text(json.dumps(data))
    refused(tmp_path, capsys, paths, str(paths[2]), "infermatrix_shard")


def test_shards_of_two_commits_are_refused_naming_the_commits(tmp_path, capsys):
    paths = shard_set(tmp_path / "shards")
    other = "fedcba9876543210fedcba9876543210fedcba98"
    paths[2] = write(tmp_path / "shards", "shard-3.json", shard(3, [CASES[2]], commit=other))
    refused(tmp_path, capsys, paths, str(paths[2]), other, COMMIT)


def test_shards_of_two_kinds_are_refused_naming_the_kinds(tmp_path, capsys):
    paths = shard_set(tmp_path / "shards")
    paths[0] = write(tmp_path / "shards", "shard-1.json", shard(1, [CASES[0]], kind=OTHER_KIND))
    refused(tmp_path, capsys, paths, OTHER_KIND, KIND)


def test_a_case_in_two_shards_is_refused_naming_it(tmp_path, capsys):
    paths = shard_set(tmp_path / "shards")
    paths[1] = write(tmp_path / "shards", "shard-2.json", shard(2, [CASES[1], CASES[0]]))
    refused(tmp_path, capsys, paths, "twice", CASES[0])


def test_a_benchmark_twice_in_one_shard_is_refused(tmp_path, capsys):
    data = shard(1, [CASES[0]])
    data["benchmarks"].append(copy.deepcopy(data["benchmarks"][0]))
    paths = shard_set(tmp_path / "shards")
    paths[0].write_text(json.dumps(data))
    refused(tmp_path, capsys, paths, "benchmarked twice", latency_id(CASES[0]))


def test_the_same_shard_twice_is_refused(tmp_path, capsys):
    paths = shard_set(tmp_path / "shards")
    copy_of_two = write(tmp_path / "shards", "shard-2-again.json", json.loads(paths[1].read_text()))
    refused(tmp_path, capsys, [*paths, copy_of_two], "shard 2 of 3 given twice")


def test_shards_of_two_plans_are_refused(tmp_path, capsys):
    paths = shard_set(tmp_path / "shards")
    paths[2] = write(tmp_path / "shards", "shard-3.json", shard(3, [CASES[2]], plan=PLAN + ["perf_tests/x.py::extra"]))
    refused(tmp_path, capsys, paths, str(paths[2]), "plan differs", "perf_tests/x.py::extra")


def test_a_different_split_count_is_refused(tmp_path, capsys):
    paths = shard_set(tmp_path / "shards")
    paths[2] = write(tmp_path / "shards", "shard-3.json", shard(3, [CASES[2]], splits=4))
    refused(tmp_path, capsys, paths, str(paths[2]), "splits 4")


def test_a_second_merge_of_the_same_run_is_refused_naming_the_stored_file(tmp_path, capsys):
    history = tmp_path / "history"
    paths = shard_set(tmp_path / "shards")
    assert merge([*paths, "--into", history], capsys)[0] == 0
    (entry,) = history_layout.runs(history, KIND)
    before = entry.path.read_bytes()
    code, _, err = merge([*paths, "--into", history], capsys)
    assert code == 2 and str(entry.path) in err and "never overwritten" in err
    assert entry.path.read_bytes() == before
    assert [p.name for p in (history / KIND / "runs").iterdir()] == [entry.path.name]   # no temp file left


def test_a_failed_write_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    history = tmp_path / "history"
    paths = shard_set(tmp_path / "shards")

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(history_layout.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        main(["merge", *map(str, paths), "--into", str(history)])
    assert list((history / KIND / "runs").iterdir()) == []


def test_two_kinds_are_kept_in_two_folders_never_one_series(tmp_path, capsys):
    history = tmp_path / "history"
    assert merge([*shard_set(tmp_path / "cpu"), "--into", history], capsys)[0] == 0
    assert merge([*shard_set(tmp_path / "gpu", kind=OTHER_KIND, when="2026-01-02T04:00:00+00:00"),
                  "--into", history], capsys)[0] == 0
    assert history_layout.kinds(history) == sorted([KIND, OTHER_KIND])
    for kind in (KIND, OTHER_KIND):
        (entry,) = history_layout.runs(history, kind)
        assert entry.kind_id == kind and entry.path.parent == history / kind / "runs"
        assert history_layout.load_run(entry)["infermatrix_run"]["kind"] == kind


def test_a_run_without_commit_is_named_nocommit(tmp_path, capsys):
    history = tmp_path / "history"
    assert merge([*shard_set(tmp_path / "shards", commit=None), "--into", history], capsys)[0] == 0
    (entry,) = history_layout.runs(history, KIND)
    assert entry.path.name == "20260102T030405Z-nocommit.json" and entry.commit is None


def test_pytest_benchmark_compare_reads_a_merged_run(tmp_path, capsys):
    history = tmp_path / "history"
    assert merge([*shard_set(tmp_path / "shards"), "--into", history], capsys)[0] == 0
    (entry,) = history_layout.runs(history, KIND)
    cli = Path(sys.executable).parent / "py.test-benchmark"
    if not cli.exists():
        pytest.skip(f"pytest-benchmark's CLI is not installed beside {sys.executable}")
    done = subprocess.run([str(cli), "compare", str(entry.path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for case in CASES:
        assert case in done.stdout


def test_a_kind_id_that_its_fields_do_not_give_is_refused(tmp_path, capsys):
    paths = shard_set(tmp_path / "shards")
    data = json.loads(paths[0].read_text())
    data["machine_info"]["infermatrix"]["hardware_kind"]["id"] = OTHER_KIND   # edited, fields left as they were
    data["infermatrix_shard"]["kind"] = OTHER_KIND
    paths[0].write_text(json.dumps(data))
    refused(tmp_path, capsys, paths, str(paths[0]), OTHER_KIND, "does not match its fields")


def test_a_shard_without_a_hardware_kind_is_refused(tmp_path, capsys):
    paths = shard_set(tmp_path / "shards")
    data = json.loads(paths[1].read_text())
    del data["machine_info"]["infermatrix"]["hardware_kind"]
    paths[1].write_text(json.dumps(data))
    refused(tmp_path, capsys, paths, str(paths[1]), "hardware_kind")


def test_an_equivalence_check_saved_by_two_shards_is_kept_once(tmp_path, capsys):
    data = [shard(g, [CASES[g - 1]]) for g in (1, 2, 3)]
    data[1]["infermatrix_equivalence"].append({"id": CASES[0], "status": "pass"})   # checked again in shard 2
    paths = [write(tmp_path, f"s{i}.json", d) for i, d in enumerate(data, 1)]
    assert merge([*paths, "--into", tmp_path / "history"], capsys)[0] == 0
    (entry,) = history_layout.runs(tmp_path / "history", KIND)
    assert [r["id"] for r in history_layout.load_run(entry)["infermatrix_equivalence"]] == CASES
