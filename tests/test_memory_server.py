"""The memory fork server (runner/memory_server.py, runner/memory_client.py): a forked child
measures what a fresh interpreter measures, the server outlives children that fail, crash or
hang, stops with the run, and each pytest process (each xdist worker) has its own."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from infermatrix.core.schema import Case
from infermatrix.engines.cache import EngineCache
from infermatrix.models.registry import MODELS, ModelSpec, register_model
from infermatrix.runner import memory_client
from infermatrix.runner.memory import FIELDS, METHODS, chosen_method, engine_memory
from infermatrix.runner.session import RunSession

MIB = 2 ** 20
FORK = METHODS["fork"].split(":")[0]


def linear() -> torch.nn.Module:
    return torch.nn.Linear(4, 2)


# Called only in the memory child: the parent never asks for these models' inputs.
def segfault_inputs(batch: int, seed: int) -> dict:
    os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError("SIGSEGV did not end the process")


def hanging_inputs(batch: int, seed: int) -> dict:
    time.sleep(120)
    raise AssertionError("slept past every timeout of the test")


# registered when this module is imported: the child imports it too (the models' factory module)
for _name, _inputs in (("memory-segfault", segfault_inputs), ("memory-hang", hanging_inputs)):
    if _name not in MODELS:
        register_model(ModelSpec(_name, linear, _inputs, ("x",)))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = RunSession(EngineCache(tmp_path_factory.mktemp("memory-server") / "cache"))
    yield s
    s.close()


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def test_a_forked_child_measures_what_the_fresh_interpreter_measures(session):
    case = Case("tiny-cnn", "torch", "fp32", 1, "cpu")
    entry = session.engine(case).entry.path
    fork = engine_memory(case, entry, session.threads, method="fork")
    fresh = engine_memory(case, entry, session.threads, method="subprocess")
    for info in (fork, fresh):
        assert "memory_error" not in info, info["memory_error"]
        assert set(FIELDS) <= set(info) and info["load_rss_bytes"] > 0 and info["run_peak_rss_bytes"] >= 0
    assert fork["memory_method"].startswith(FORK) and fresh["memory_method"].startswith("isolated subprocess")
    assert fork["idle_rss_bytes"] > fresh["idle_rss_bytes"]  # the server preloads more than tiny-cnn needs
    # the figures are differences from idle: equal within noise (bench/memory_methods.py: 0.3 MiB);
    # without the child mapping the server's library pages again first, fork's load was 2.7 MiB more
    assert abs(fork["load_rss_bytes"] - fresh["load_rss_bytes"]) < 1.5 * MIB, (fork, fresh)


def test_the_server_survives_a_child_that_fails_crashes_or_hangs(session, tmp_path):
    ok = Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu")
    entry = session.engine(ok).entry.path
    first = engine_memory(ok, entry, method="fork")
    assert "memory_error" not in first, first["memory_error"]
    server = memory_client.server_pid()
    assert server is not None and alive(server)

    raised = engine_memory(ok, tmp_path / "empty", method="fork")  # no artifact: the engine's load raises
    assert "model.onnx" in raised["memory_error"] and raised["load_rss_bytes"] is None
    crashed = engine_memory(Case("memory-segfault", "onnxruntime", "fp32", 1, "cpu"), tmp_path, method="fork")
    assert "was killed by signal SIGSEGV before it reported" in crashed["memory_error"], crashed["memory_error"]
    hung = engine_memory(Case("memory-hang", "onnxruntime", "fp32", 1, "cpu"), tmp_path, method="fork", timeout_s=5)
    assert hung["memory_error"].startswith("the memory child timed out after 5 s"), hung["memory_error"]
    for info in (raised, crashed, hung):
        assert all(info[k] is None for k in FIELDS) and info["memory_method"].startswith(FORK)

    assert memory_client.server_pid() == server  # the same server measures the next case
    last = engine_memory(ok, entry, method="fork")
    assert "memory_error" not in last, last["memory_error"]
    assert abs(last["load_rss_bytes"] - first["load_rss_bytes"]) < 1 * MIB


def test_the_server_stops_with_the_session(session):
    case = Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu")
    entry = session.engine(case).entry.path
    other = RunSession(EngineCache(session.cache.root))
    assert "memory_error" not in engine_memory(case, entry, method="fork")
    server = memory_client.server_pid()
    assert server is not None and alive(server)
    other.close()  # what the plugin's pytest_sessionfinish calls
    assert memory_client.server_pid() is None and not alive(server)


def test_a_server_that_does_not_start_falls_back_to_the_fresh_interpreter(session, monkeypatch):
    case = Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu")
    entry = session.engine(case).entry.path
    memory_client.shutdown()
    monkeypatch.setattr(memory_client, "START_TIMEOUT_S", 0.01)  # no server imports torch that fast
    monkeypatch.setattr(memory_client, "_start_failed", {})  # restored after: later tests start one
    info = engine_memory(case, entry, method="fork")
    assert "memory_error" not in info, info["memory_error"]
    assert info["memory_method"].startswith("isolated subprocess") and info["load_rss_bytes"] > 0
    assert "(the fork server failed: the memory server did not start" in info["memory_method"]
    assert memory_client.server_pid() is None  # the one that did not answer was stopped


def test_the_method_is_chosen_by_argument_or_environment(monkeypatch):
    monkeypatch.setenv("INFERMATRIX_MEMORY_METHOD", "subprocess")
    assert chosen_method(None) == ("subprocess", "") and chosen_method("fork") == ("fork", "")
    monkeypatch.setenv("INFERMATRIX_MEMORY_METHOD", "spawn")
    with pytest.raises(ValueError, match=r"memory method 'spawn'.*expected one of \['fork', 'subprocess'\]"):
        chosen_method(None)


def test_the_server_imports_without_starting_python_threads(session):
    ready = memory_client.start()
    # a thread running at the fork would leave its locks held in every child (OpenVINO's import
    # starts a telemetry thread: not preloaded)
    assert ready["python_threads"] == 1, ready
    assert ready["resident_bytes"] > 50 * MIB  # torch's libraries, listed to be mapped again in each child
    # its OpenMP threads (and its children's) sleep while they wait: two children share the cores
    server = next(s for s in memory_client._servers.values() if s.alive())
    environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
    assert b"OMP_WAIT_POLICY=PASSIVE" in environ


def test_a_forked_child_maps_the_servers_library_pages_again():
    """Fork leaves a file mapping's page-table entries behind; the child's RssFile is the server's
    again after ``prefault``, and only the pages the server had (not the whole libraries)."""
    code = textwrap.dedent("""
        import json, os, sys, numpy
        from infermatrix.runner.memory_server import prefault, resident_runs
        from infermatrix.scenarios.measure import status_bytes
        runs = resident_runs()
        r, w = os.pipe()
        if os.fork() == 0:
            before = status_bytes("RssFile")
            prefault(runs)
            os.write(w, json.dumps([before, status_bytes("RssFile"), status_bytes("VmRSS")]).encode())
            os._exit(0)
        os.wait()
        child = json.loads(os.read(r, 1000))
        print(json.dumps({"server": [status_bytes("RssFile"), status_bytes("VmRSS")], "child": child}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    (server_file, server_rss), (before, after, child_rss) = got["server"], got["child"]
    assert before < 0.5 * server_file, got  # what the fix is for: a fork child starts without them
    assert 0.95 * server_file < after < 1.05 * server_file + 2 * MIB, got
    assert child_rss < 1.05 * server_rss + 4 * MIB, got


def test_each_xdist_worker_has_its_own_server_and_none_is_left(pytester, session, repo_root):
    case = Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu")
    session.engine(case)  # built here: the workers take it from the cache
    out = pytester.path / "out"
    out.mkdir()
    pytester.makepyfile(test_inner=textwrap.dedent(f"""
        import json, os
        import pytest
        from infermatrix.core.schema import Case
        from infermatrix.runner import memory_client
        from infermatrix.runner.memory import engine_memory

        @pytest.mark.parametrize("n", [0, 1])
        def test_measures(n, run_session):
            case = Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu")
            info = engine_memory(case, run_session.engine(case).entry.path, method="fork")
            assert "memory_error" not in info, info["memory_error"]
            name = f"{{os.environ['PYTEST_XDIST_WORKER']}}-{{n}}.json"
            with open(os.path.join({str(out)!r}, name), "w") as f:
                json.dump({{"worker": os.getpid(), "server": memory_client.server_pid(),
                           "method": info["memory_method"]}}, f)
    """))
    result = pytester.runpytest_subprocess("-p", "infermatrix.fixtures.plugin", "-p", "no:cacheprovider",
                                           "--engine-cache", str(session.cache.root), "-n", "2", "--dist", "each",
                                           "test_inner.py", timeout=600)
    result.assert_outcomes(passed=4)
    runs = [json.loads(p.read_text()) for p in sorted(out.iterdir())]
    workers = {r["worker"] for r in runs}
    servers = {r["worker"]: {r2["server"] for r2 in runs if r2["worker"] == r["worker"]} for r in runs}
    assert len(runs) == 4 and len(workers) == 2 and all(r["method"].startswith(FORK) for r in runs)
    assert all(len(s) == 1 for s in servers.values()), servers  # one server per worker, for both cases
    pids = {next(iter(s)) for s in servers.values()}
    assert len(pids) == 2  # not shared between workers
    assert not any(alive(pid) for pid in pids | workers), "a server outlived its pytest worker"


def test_a_case_that_imports_the_compile_stack_at_load_counts_it_at_load_as_before(session):
    """torch.compile imports torch._dynamo/_inductor at load; the full server's torchvision would
    have imported them already (measured: 68 MiB instead of 219 MiB for tiny-cnn). The lean server
    leaves that import to the child's load, as the fresh interpreter did."""
    case = Case("tiny-cnn", "torch_compile", "fp32", 1, "cpu")
    entry = session.engine(case).entry.path
    fork = engine_memory(case, entry, session.threads, cache_root=session.cache.root, method="fork")
    fresh = engine_memory(case, entry, session.threads, cache_root=session.cache.root, method="subprocess")
    assert "memory_error" not in fork, fork["memory_error"]
    assert "memory_error" not in fresh, fresh["memory_error"]
    assert memory_client.server_pid("lean") is not None
    assert abs(fork["load_rss_bytes"] - fresh["load_rss_bytes"]) < 0.1 * fresh["load_rss_bytes"], (fork, fresh)


def test_the_lean_server_has_not_imported_the_compile_stack():
    assert memory_client.start("lean")["compile_stack"] == []  # else a preload moved it out of torch.compile's load
    assert "torch._dynamo" in memory_client.start("full")["compile_stack"]  # what "full" saves its children


def test_a_model_whose_architecture_imports_the_compile_stack_moves_to_the_full_server(session):
    """tiny-bert's transformers architecture imports torchvision and transformers.modeling_utils
    (and so the compile stack) before idle: after one lean child says so, its torchao int8 cases
    fork from "full", with the same load figure; tiny-cnn's stay lean."""
    from infermatrix.engines import get_engine
    from infermatrix.runner.memory import server_profile
    case = Case("tiny-bert", "torch", "int8", 1, "cpu")
    entry = session.engine(case).entry.path
    torch_cls = get_engine("torch")
    assert server_profile(torch_cls, "int8", "tiny-bert") == "lean"
    lean = engine_memory(case, entry, session.threads, cache_root=session.cache.root, method="fork")
    assert server_profile(torch_cls, "int8", "tiny-bert") == "full"
    assert server_profile(torch_cls, "int8", "tiny-cnn") == "lean" and server_profile(torch_cls, "fp32", "tiny-cnn") == "full"
    full = engine_memory(case, entry, session.threads, cache_root=session.cache.root, method="fork")
    for info in (lean, full):
        assert "memory_error" not in info, info["memory_error"]
    assert full["idle_rss_bytes"] >= lean["idle_rss_bytes"] - 2 * MIB  # "full" had it all preloaded
    assert abs(full["load_rss_bytes"] - lean["load_rss_bytes"]) < 0.1 * lean["load_rss_bytes"] + 0.5 * MIB, (lean, full)
