"""Faults, counted: each fault class injected, and what the user sees checked.

The outcome asked of every fault: a clear message or a skip with the reason, the session goes
on (one bad case never crashes the run), no saved run is lost, no half-written artifact is
left. README "Faults and what you see" lists the same classes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from infermatrix.engines.cache import STAGE_PREFIX, CorruptEntryWarning, EngineCache
from infermatrix.core.schema import Case
from infermatrix.runner.session import RunSession
from infermatrix.core.folders import new_out_dir
from infermatrix.commands.main import main as infermatrix
from tests.runs import bench, write_run

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    return dict(env, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    """One pytest session over every engine-level fault at once (a subprocess)."""
    work = tmp_path_factory.mktemp("faults")
    cmd = [sys.executable, "-m", "pytest", "perf_tests/test_latency.py", "perf_tests/test_load.py",
           "-p", "tests.fault_engines", "-p", "no:cacheprovider", "-k", "latency or single_stream",
           "--models", "tiny-cnn,fault-unexportable", "--engines", "torch,fault_nan,fault_oom,fault_missing,onnxruntime",
           "--precisions", "fp32", "--batch-sizes", "1,8", "--latency-rounds", "3", "--no-engine-memory",
           "--load-variants", "fault_dies:fp32", "--load-seconds", "0.2", "--loadgen-logs", str(work / "logs"),
           "--engine-cache", str(work / "cache"), "--junitxml", str(work / "junit.xml"),
           "--benchmark-json", str(work / "run.json")]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    cases = {}
    for tc in ET.parse(work / "junit.xml").getroot().iter("testcase"):
        kind = next((c.tag for c in tc if c.tag in ("failure", "error", "skipped")), "passed")
        detail = next((c.get("message", "") + (c.text or "") for c in tc if c.tag in ("failure", "error", "skipped")), "")
        cases[tc.get("name")] = (kind, detail)
    return res, cases, work


def test_the_session_survives_every_engine_fault(fault_run):
    res, cases, work = fault_run
    assert res.returncode == 1, res.stdout[-3000:]          # tests failed; nothing crashed (2, 3, 4 would say so)
    assert cases["test_latency[tiny-cnn-torch-fp32-bs1-cpu]"][0] == "passed"
    saved = {b["name"] for b in json.loads((work / "run.json").read_text())["benchmarks"]}
    assert "test_latency[tiny-cnn-onnxruntime-fp32-bs8-cpu]" in saved   # the good cases were still timed and saved


def test_nan_and_inf_outputs_fail_the_equivalence_check_before_timing(fault_run):
    kind, detail = fault_run[1]["test_latency[tiny-cnn-fault_nan-fp32-bs1-cpu]"]
    assert kind == "failure" and "not timed: outputs differ" in detail
    assert "finite" in detail.lower() or "nan" in detail.lower()


def test_a_batch_too_large_for_memory_is_a_clear_failure_and_smaller_ones_run(fault_run):
    cases = fault_run[1]
    kind, detail = cases["test_latency[tiny-cnn-fault_oom-fp32-bs8-cpu]"]
    assert kind == "failure" and "batch 8 does not fit in cpu memory" in detail and "--batch-sizes" in detail
    assert "Traceback" not in detail
    assert cases["test_latency[tiny-cnn-fault_oom-fp32-bs1-cpu]"][0] == "passed"


def test_a_missing_optional_dependency_is_a_skip_naming_it(fault_run):
    kind, detail = fault_run[1]["test_latency[tiny-cnn-fault_missing-fp32-bs1-cpu]"]
    assert kind == "skipped" and "infermatrix_no_such_runtime" in detail


def test_a_model_that_cannot_export_fails_its_onnx_cases_only_and_leaves_no_artifact(fault_run):
    _, cases, work = fault_run
    kind, detail = cases["test_latency[fault-unexportable-onnxruntime-fp32-bs1-cpu]"]
    assert kind == "failure" and "building fault-unexportable-onnxruntime-fp32-bs1-cpu failed" in detail
    assert cases["test_latency[fault-unexportable-torch-fp32-bs1-cpu]"][0] == "passed"
    metas = [json.loads(m.read_text()) for m in (work / "cache" / "onnxruntime").glob("*/meta.json")]
    assert metas and all(m["fields"]["model"] == "tiny-cnn" for m in metas)
    assert not [p for p in (work / "cache" / "onnxruntime").iterdir() if p.name.startswith(STAGE_PREFIX)]


def test_loadgen_given_an_engine_that_raises_fails_with_partial_figures(fault_run):
    _, cases, work = fault_run
    kind, detail = cases["test_single_stream[tiny-cnn-fault_dies-fp32-cpu]"]
    assert kind == "failure" and "failed under load" in detail and "device lost" in detail
    (saved,) = [b for b in json.loads((work / "run.json").read_text())["benchmarks"]
                if b["name"] == "test_single_stream[tiny-cnn-fault_dies-fp32-cpu]"]
    info = saved["extra_info"]
    assert info["loadgen_result"] == "ERROR" and info["served_before_failure"] > 0 and info["p50_s"] is None


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupted_or_truncated_artifact_is_rebuilt_with_a_warning(tmp_path, damage):
    case = Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu")
    first = RunSession(EngineCache(tmp_path))
    assert first.equivalence(case).passed                     # builds the baseline and the engine
    onnx = next(first.engine(case).entry.path.glob("*.onnx"))
    first.close()
    data = onnx.read_bytes()
    onnx.write_bytes(data[: len(data) // 3] if damage == "truncate" else data[:-64] + bytes(64))
    second = RunSession(EngineCache(tmp_path))
    with pytest.warns(CorruptEntryWarning, match="corrupt"):
        assert second.equivalence(case).passed
    assert second.stats.built == 1 and second.stats.cached == 1  # only the damaged entry was rebuilt
    second.close()


BUILDER = """
import sys, time
from pathlib import Path
from infermatrix.engines.cache import EngineCache
def build(stage):
    with open(stage / "model.bin", "wb") as f:
        f.write(b"x" * 4096)
        f.flush()
        print("writing", flush=True)
        time.sleep(60)               # killed here, mid-write
EngineCache(Path(sys.argv[1])).get_or_build("eng", {"k": 1}, build)
"""


def test_a_build_killed_mid_write_leaves_no_entry_and_the_next_build_succeeds(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    cache = EngineCache(tmp_path)
    left = [p.name for p in (tmp_path / "eng").iterdir() if p.is_dir()]
    assert left and all(n.startswith(STAGE_PREFIX) for n in left)   # only the dead build's stage
    entry = cache.get_or_build("eng", {"k": 1}, lambda stage: (stage / "model.bin").write_bytes(b"ok"))
    assert entry.built and cache.verify(entry.path)[1] is None
    assert [p.name for p in (tmp_path / "eng").iterdir() if p.is_dir()] == [entry.path.name]


RACER = """
import json, sys
from pathlib import Path
from infermatrix.engines.cache import EngineCache
from infermatrix.core.schema import Case
from infermatrix.runner.session import RunSession
from infermatrix.models.builtin import register_builtin_models
register_builtin_models()
s = RunSession(EngineCache(Path(sys.argv[1])))
s.engine(Case("tiny-cnn", "onnxruntime", "int8", 1, "cpu"))
print(json.dumps(s.stats.as_dict()))
"""


def test_two_workers_building_one_engine_build_it_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path)], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    stats = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        stats.append(json.loads(out.strip().splitlines()[-1]))
    # each process needs the baseline (checked first) and the int8 engine: each is built once in all
    assert sum(s["built"] for s in stats) == 2 and sum(s["cached"] for s in stats) == 2
    assert len(list((tmp_path / "onnxruntime").glob("*/meta.json"))) == 1
    assert len(list((tmp_path / "torch").glob("*/meta.json"))) == 1


@pytest.mark.parametrize("args, message", [
    (["--engines", "no_such_engine"], "valid values"),
    (["--load-seconds", "0"], "--load-seconds"),
])
def test_unknown_or_bad_option_values_are_usage_errors(pytester, args, message):
    # in this process: a usage error stops the run at configure, before anything is set process-wide
    res = pytester.runpytest_inprocess(str(ROOT / "perf_tests" / "test_latency.py"), "--collect-only", "-q",
                                       "-p", "no:cacheprovider", *args)
    assert res.ret == pytest.ExitCode.USAGE_ERROR and message in res.stderr.str(), res.stderr.str()[-2000:]


def test_a_malformed_history_json_is_named_and_left_untouched(tmp_path, capsys):
    good = write_run(tmp_path / "hist" / "0001_good.json", [bench()])
    bad = tmp_path / "hist" / "0002_bad.json"
    bad.write_text(good.read_text()[:200])                    # truncated mid-write
    before = bad.read_bytes()
    assert infermatrix(["report", str(tmp_path / "hist"), "--out", str(tmp_path / "out")]) == 2
    assert "0002_bad.json" in capsys.readouterr().err
    assert infermatrix(["compare", str(good), str(bad)]) == 2
    assert bad.read_bytes() == before and good.exists()


def test_comparing_runs_from_different_hardware_is_refused_unless_allowed(tmp_path, capsys):
    a = write_run(tmp_path / "a.json", [bench(seed=1)], cpu="AMD EPYC 9654")
    b = write_run(tmp_path / "b.json", [bench(seed=2)], cpu="Intel Xeon 8480")
    assert infermatrix(["compare", str(a), str(b)]) == 2
    assert "different hardware" in capsys.readouterr().err
    assert infermatrix(["compare", str(a), str(b), "--allow-hardware-mismatch"]) in (0, 1)


def test_saved_runs_are_never_overwritten(tmp_path):
    """`infermatrix ab` (and the LoadGen log folder, fixtures/plugin.py) always make a new folder."""
    first, second = new_out_dir(tmp_path), new_out_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
