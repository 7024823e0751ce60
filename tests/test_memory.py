"""Per-engine memory in a process of its own (runner/memory.py), through the real child: by default a
child of the preloaded fork server (tests/test_memory_server.py compares it with a fresh interpreter)."""
from __future__ import annotations

import pytest
import torch

from infermatrix.engines.cache import EngineCache
from infermatrix.core.schema import Case
from infermatrix.runner.memory import FIELDS, engine_memory
from infermatrix.models.registry import MODELS, ModelSpec, register_model
from infermatrix.runner.session import RunSession

MIB = 2 ** 20


def mlp() -> torch.nn.Module:
    """10.5 M parameters (40 MiB in fp32) in Linear layers: big enough that int8 shows."""
    nn = torch.nn
    return nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                         nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))


def mlp_inputs(batch: int, seed: int) -> dict:
    return {"x": torch.randn(batch, 1024, generator=torch.Generator().manual_seed(seed))}


# registered when this module is imported: the child imports it too (the model's factory module)
if "memory-mlp" not in MODELS:
    register_model(ModelSpec("memory-mlp", mlp, mlp_inputs, ("x",), int8_scheme="dynamic", onnx_exporter="torchscript"))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = RunSession(EngineCache(tmp_path_factory.mktemp("memory") / "cache"))
    yield s
    s.close()


def measured(session: RunSession, case: Case) -> dict:
    info = engine_memory(case, session.engine(case).entry.path, session.threads)
    assert "memory_error" not in info, info["memory_error"]
    assert info["memory_method"].startswith("forked child of a preloaded server: imports baseline, load, ")
    assert info["gpu_peak_bytes"] is None and info["idle_rss_bytes"] > 100 * MIB  # torch's import alone
    return info


def test_eager_load_rss_counts_the_module_weights(session):
    tiny = measured(session, Case("tiny-cnn", "torch", "fp32", 1, "cpu"))
    assert tiny["load_rss_bytes"] > 0 and tiny["run_peak_rss_bytes"] >= 0
    big = measured(session, Case("memory-mlp", "torch", "fp32", 1, "cpu"))
    weights = sum(p.numel() * 4 for p in mlp().parameters())
    assert weights * 0.9 < big["load_rss_bytes"] < weights * 1.5, (big["load_rss_bytes"] / MIB, weights / MIB)


def test_onnxruntime_int8_loads_in_less_memory_than_fp32(session):
    fp32 = measured(session, Case("memory-mlp", "onnxruntime", "fp32", 1, "cpu"))
    int8 = measured(session, Case("memory-mlp", "onnxruntime", "int8", 1, "cpu"))
    assert fp32["load_rss_bytes"] > 35 * MIB  # the fp32 weights, resident
    assert int8["load_rss_bytes"] < 0.5 * fp32["load_rss_bytes"], (int8["load_rss_bytes"] / MIB, fp32["load_rss_bytes"] / MIB)


def test_off_records_null_figures_and_says_so(tmp_path):
    info = engine_memory(Case("tiny-cnn", "torch", "fp32", 1, "cpu"), tmp_path, enabled=False)
    assert all(info[k] is None for k in FIELDS)
    assert info["memory_method"] == "not measured (--no-engine-memory)" and "memory_error" not in info


def test_a_failing_child_gives_null_figures_and_the_error(tmp_path):
    # no artifact in the entry: ONNX Runtime fails to load it in the child
    info = engine_memory(Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu"), tmp_path / "empty")
    assert all(info[k] is None for k in FIELDS)
    assert "model.onnx" in info["memory_error"], info["memory_error"]
    timed_out = engine_memory(Case("tiny-cnn", "torch", "fp32", 1, "cpu"), tmp_path, timeout_s=0.05)
    assert timed_out["load_rss_bytes"] is None and "timed out after 0.05 s" in timed_out["memory_error"]


def test_a_model_registered_at_run_time_is_null_with_the_reason(tmp_path):
    def factory() -> torch.nn.Module:  # defined here: importing this module does not register it
        return torch.nn.Linear(4, 2)
    name = f"runtime-only-{tmp_path.name}"
    register_model(ModelSpec(name, factory, lambda b, s: {"x": torch.randn(b, 4)}, ("x",)))
    info = engine_memory(Case(name, "onnxruntime", "fp32", 1, "cpu"), tmp_path)
    assert all(info[k] is None for k in FIELDS)
    assert "is not registered in a fresh interpreter" in info["memory_error"]


def test_the_child_runs_until_the_peak_has_held_for_three_runs(monkeypatch):
    """A peak set on the 5th run is waited for; a peak set on the first ends the runs after four;
    on CUDA (holds=None) every run is made."""
    from infermatrix.runner import memory

    def fake_hwm(values):
        it = iter(values)
        monkeypatch.setattr(memory, "status_bytes", lambda field="VmHWM": next(it))

    calls = []
    fake_hwm([100, 150, 150, 150, 150])                       # start, then runs 1..4
    assert memory.run_until_peak_holds(calls.append, "x", 13, holds=3) == 4 and len(calls) == 4
    fake_hwm([100, 150, 150, 150, 170, 170, 170, 170])       # a new peak on run 4: three more after it
    assert memory.run_until_peak_holds(lambda _: None, "x", 13, holds=3) == 7
    fake_hwm([100] + [100 + i for i in range(1, 14)])         # growing every run: all 13, never fewer
    assert memory.run_until_peak_holds(lambda _: None, "x", 13, holds=3) == 13
    calls.clear()
    fake_hwm([100])                                           # CUDA: read once, then every run
    assert memory.run_until_peak_holds(calls.append, "x", 13, holds=None) == 13 and len(calls) == 13
