"""`infermatrix bencher`: runs as Bencher Metric Format JSON (shards built with the schema's own
records, merged by `infermatrix merge`; no benchmark is run) with the hardware kind as the testbed."""
from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pytest

from infermatrix.commands.main import main
from infermatrix.core.hardware_kind import HardwareKind
from infermatrix.core.records import GenerationRecord, LatencyRecord, LoadRecord
from infermatrix.core.schema import Case, Reference

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
KIND = HardwareKind(cpu_model="AMD EPYC 7763 64-Core Processor", cpu_flags=("avx2", "avx512f"), cpus=4,
                    gpu_name=None, gpu_count=0, driver=None, cuda=None,
                    libraries=(("onnxruntime", "1.31.1"), ("torch", "2.14.1")))
OTHER_KIND = HardwareKind(cpu_model="Intel Xeon Platinum 8480+", cpu_flags=("amx_bf16", "avx512f"), cpus=4,
                          gpu_name=None, gpu_count=0, driver=None, cuda=None,
                          libraries=(("onnxruntime", "1.31.1"), ("torch", "2.14.1")))
REFERENCE = Reference("torch", "fp32", "cpu")
MIB = 2 ** 20
# p99 is null below 100 samples (test_latency records the reason): it must stay out, not become 0
CASES = {"tiny-cnn-torch-fp32-bs1-cpu": (1.0e-3, 1.4e-3), "tiny-cnn-onnxruntime-fp32-bs8-cpu": (2.0e-3, None),
         "tiny-cnn-onnxruntime-int8-static-bs1-cpu": (0.5e-3, 0.9e-3)}


def node(case: str) -> str:
    return f"perf_tests/test_latency.py::test_latency[{case}]"


def latency_bench(case_id: str, p50: float, p99: float | None) -> dict:
    """One benchmark entry as pytest-benchmark writes it, extra_info from the record the run writes."""
    case = Case.parse(case_id)
    record = LatencyRecord.of(case, REFERENCE, p50_s=p50, p90_s=p50 * 1.2, p99_s=p99, mean_s=p50 * 1.05,
                              min_s=p50 * 0.9, sample_count=200 if p99 else 60,
                              throughput_items_per_s=case.batch_size / p50, median_ci_rel=0.02,
                              load_rss_bytes=120 * MIB, run_peak_rss_bytes=14 * MIB, gpu_peak_bytes=None,
                              equivalence="pass", percentile_notes={} if p99 else {"p99_s": "60 samples < 100"})
    stats = {"min": p50 * 0.9, "max": p50 * 2, "mean": p50 * 1.05, "stddev": p50 * 0.1, "rounds": 200,
             "median": p50, "iqr": p50 * 0.1, "q1": p50 * 0.95, "q3": p50 * 1.05, "iqr_outliers": 1,
             "stddev_outliers": 2, "outliers": "2;1", "ld15iqr": p50 * 0.9, "hd15iqr": p50 * 1.3,
             "ops": 1 / (p50 * 1.05), "total": p50 * 210, "iterations": 1}
    return {"group": f"{case.model}-bs{case.batch_size}-cpu", "name": f"test_latency[{case_id}]",
            "fullname": node(case_id), "params": {"case": case_id}, "param": case_id,
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5, "max_time": 1.0,
                        "min_time": 5e-06, "warmup": False},
            "stats": stats, "extra_info": record.to_extra_info()}


def run_json(benchmarks: list[dict], kind: HardwareKind = KIND, group: int = 1, splits: int = 1,
             planned: list[str] | None = None) -> dict:
    selected = sorted(b["fullname"] for b in benchmarks)
    return {"machine_info": {"node": f"runner-{group}", "machine": "x86_64",
                             "infermatrix": {"hardware_kind": kind.to_json()}},
            "commit_info": {"id": COMMIT, "time": "2026-12-06T10:00:00+00:00", "dirty": False, "project": "infermatrix",
                            "branch": "main"},
            "benchmarks": benchmarks, "datetime": "2026-12-06T10:05:00.000000+00:00", "version": "5.3.1",
            "infermatrix_shard": {"splits": splits, "group": group, "planned": sorted(planned or selected),
                                  "selected": selected,
                                  "outcomes": {n: {"outcome": "passed", "reason": None} for n in selected},
                                  "commit": COMMIT, "kind": kind.id}}


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def merged_run(tmp_path: Path, drop_shard: bool = False) -> Path:
    """Two shards of the three cases merged by `infermatrix merge` into a history; the run's path."""
    ids = list(CASES)
    plan = [node(c) for c in ids]
    parts = {1: ids[:2], 2: ids[2:]}
    shards = [write(tmp_path / f"shard-{g}.json",
                    run_json([latency_bench(c, *CASES[c]) for c in cases], group=g, splits=2, planned=plan))
              for g, cases in parts.items() if not (drop_shard and g == 2)]
    code = main(["merge", *map(str, shards), "--into", str(tmp_path / "history"), "--accept-incomplete"])
    assert code == 0
    (path,) = (tmp_path / "history" / KIND.id / "runs").iterdir()
    return path


def bencher(capsys, *args) -> tuple[int, str, str]:
    code = main(["bencher", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def check_bmf_schema(bmf) -> None:
    """Bencher's BMF JSON schema (https://bencher.dev/bmf.json): benchmark -> measure -> an object
    with a numeric "value" and optional numeric lower_value/upper_value."""
    assert isinstance(bmf, dict) and bmf
    for name, measures in bmf.items():
        assert isinstance(name, str) and 0 < len(name) <= 1024
        assert isinstance(measures, dict) and measures
        for slug, metric in measures.items():
            assert isinstance(slug, str) and 0 < len(slug) <= 64
            assert "value" in metric and set(metric) <= {"value", "lower_value", "upper_value"}
            assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in metric.values())


def test_a_merged_run_exports_latency_in_ns_throughput_and_memory_per_case(tmp_path, capsys):
    run = merged_run(tmp_path)
    out = tmp_path / "bmf.json"
    code, stdout, _ = bencher(capsys, run, "--out", out, "--project", "my-models")
    assert code == 0
    bmf = json.loads(out.read_text())
    check_bmf_schema(bmf)
    # one benchmark per case, named by the record kind and the case id
    assert sorted(bmf) == sorted(f"latency/{c}" for c in CASES)
    torch = bmf["latency/tiny-cnn-torch-fp32-bs1-cpu"]
    assert torch["latency"]["value"] == pytest.approx(1.0e-3 * 1e9)          # Bencher's Latency: ns
    assert torch["latency"]["lower_value"] == pytest.approx(0.98e6)           # the median's 95 % CI
    assert torch["latency"]["upper_value"] == pytest.approx(1.02e6)
    assert torch["latency-p99"]["value"] == pytest.approx(1.4e-3 * 1e9)
    assert torch["throughput"]["value"] == pytest.approx(1000.0)
    assert torch["load-rss"]["value"] == 120 * MIB and torch["run-peak-rss"]["value"] == 14 * MIB
    # a null stays out rather than 0: no p99 below 100 samples, no GPU memory on a CPU case
    batched = bmf["latency/tiny-cnn-onnxruntime-fp32-bs8-cpu"]
    assert "latency-p99" not in batched and "gpu-peak-memory" not in batched
    assert batched["throughput"]["value"] == pytest.approx(8 / 2.0e-3)        # items, not batches
    # the printed command: the kind as testbed, the run's commit, the json adapter on the file
    (command,) = [line for line in stdout.splitlines() if line.startswith("bencher run")]
    words = shlex.split(command)
    flag = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}
    assert flag["--testbed"] == KIND.id
    assert flag["--adapter"] == "json" and flag["--file"] == str(out)
    assert flag["--hash"] == COMMIT and flag["--branch"] == "main" and flag["--project"] == "my-models"
    assert "--err" in words


def test_an_incomplete_run_is_refused_unless_allowed(tmp_path, capsys):
    run = merged_run(tmp_path, drop_shard=True)
    assert run.name.endswith("-incomplete.json")
    out = tmp_path / "bmf.json"
    code, _, err = bencher(capsys, run, "--out", out)
    assert code == 2 and "incomplete run" in err and "shards missing [2]" in err
    assert not out.exists()
    code, _, _ = bencher(capsys, run, "--out", out, "--allow-incomplete")
    assert code == 0
    assert sorted(json.loads(out.read_text())) == sorted(f"latency/{c}" for c in list(CASES)[:2])


def test_one_shard_of_a_split_run_is_refused(tmp_path, capsys):
    ids = list(CASES)
    shard = write(tmp_path / "shard-1.json", run_json([latency_bench(ids[0], *CASES[ids[0]])], group=1, splits=2,
                                                      planned=[node(c) for c in ids]))
    code, _, err = bencher(capsys, shard, "--out", tmp_path / "bmf.json")
    assert code == 2 and "shard 1 of 2" in err and "infermatrix merge" in err


def test_two_kinds_are_never_one_testbed(tmp_path, capsys):
    ids = list(CASES)
    a = write(tmp_path / "a.json", run_json([latency_bench(ids[0], *CASES[ids[0]])]))
    b = write(tmp_path / "b.json", run_json([latency_bench(ids[1], *CASES[ids[1]])], kind=OTHER_KIND))
    code, _, err = bencher(capsys, a, b, "--out", tmp_path / "bmf.json")
    assert code == 2 and KIND.id in err and OTHER_KIND.id in err
    assert not (tmp_path / "bmf.json").exists()


def test_a_case_twice_is_refused_so_names_stay_unique(tmp_path, capsys):
    case = list(CASES)[0]
    a = write(tmp_path / "a.json", run_json([latency_bench(case, *CASES[case])]))
    b = write(tmp_path / "b.json", run_json([latency_bench(case, *CASES[case])]))
    code, _, err = bencher(capsys, a, b, "--out", tmp_path / "bmf.json")
    assert code == 2 and f"latency/{case}" in err


def test_load_records_export_samples_per_s_and_other_kinds_are_named_as_left_out(tmp_path, capsys):
    case = Case.parse("tiny-bert-onnxruntime-fp32-bs1-cpu")
    load = LoadRecord.of(case, REFERENCE, loadgen_scenario="Server", p50_s=3e-3, p99_s=9e-3, samples_per_s=250.0)
    generation = GenerationRecord.of(Case.parse("tiny-gpt2-torch-fp32-bs1-cpu"), REFERENCE, prompt_length=16,
                                     new_tokens=8, ttft_p50_s=0.01)
    benchmarks = [{"name": "test_server[x]", "fullname": "perf_tests/test_load.py::test_server[x]",
                   "stats": {"median": 3e-3}, "extra_info": load.to_extra_info()},
                  {"name": "test_generation[y]", "fullname": "perf_tests/test_generation.py::test_generation[y]",
                   "stats": {"median": 0.01}, "extra_info": generation.to_extra_info()}]
    run = write(tmp_path / "run.json", run_json(benchmarks))
    out = tmp_path / "bmf.json"
    code, _, err = bencher(capsys, run, "--out", out)
    assert code == 0
    bmf = json.loads(out.read_text())
    check_bmf_schema(bmf)
    assert list(bmf) == [f"load/{load.label()}"]
    assert bmf[f"load/{load.label()}"] == {"latency": {"value": pytest.approx(3e6)},
                                            "latency-p99": {"value": pytest.approx(9e6)},
                                            "throughput": {"value": 250.0}}
    assert "1 generation" in err


def test_a_run_without_a_recorded_kind_gets_its_derived_kind_as_testbed(tmp_path, capsys):
    case = list(CASES)[0]
    data = run_json([latency_bench(case, *CASES[case])])
    del data["infermatrix_shard"]
    data["machine_info"] = {"cpu": {"brand_raw": "AMD EPYC", "count": 2, "flags": ["avx2"]}}
    code, stdout, _ = bencher(capsys, write(tmp_path / "old.json", data), "--out", tmp_path / "bmf.json")
    assert code == 0
    testbed = shlex.split(next(line for line in stdout.splitlines() if line.startswith("bencher run")))
    assert testbed[testbed.index("--testbed") + 1].startswith("amd-epyc-2cpu")
