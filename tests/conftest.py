from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

#: seconds each test took (setup, call and teardown), in pytest-split's format; refreshed with
#: ``pytest tests -n 2 --dist loadscope --no-loadscope-reorder --store-durations --durations-path tests/durations.json``
DURATIONS = Path(__file__).with_name("durations.json")
#: a test the file does not name yet (a new one): most tests take well under a second
UNKNOWN_TEST_S = 0.5


def module_of(nodeid: str) -> str:
    return nodeid.split("::")[0]


def module_seconds(nodeids: list[str], durations: dict[str, float]) -> dict[str, float]:
    """Each module's stored seconds, summed over its tests."""
    seconds: dict[str, float] = {}
    for nodeid in nodeids:
        seconds[module_of(nodeid)] = seconds.get(module_of(nodeid), 0.0) + durations.get(nodeid, UNKNOWN_TEST_S)
    return seconds


def longest_modules_first(nodeids: list[str], durations: dict[str, float]) -> list[str]:
    """``nodeids`` with whole modules ordered by their stored seconds, longest first (the order of
    tests within a module kept).

    Under ``--dist loadscope`` each worker takes a module at a time in this order (with
    ``--no-loadscope-reorder``; xdist's own reorder puts the modules with the most tests first, which
    left the few-test modules that each run whole pytest sessions, the longest ones, for the end):
    the longest first is the classic longest-processing-time schedule, whose last module is short,
    so no worker idles long while the other finishes. Measured, one run after the other on a 2-core
    Xeon (Sapphire Rapids), 2026-12-07: xdist's order 394.7 s with one worker idle for the last 17 s,
    longest first 379.6 s with both busy to the end."""
    seconds = module_seconds(nodeids, durations)
    position = {m: i for i, m in enumerate(dict.fromkeys(map(module_of, nodeids)))}
    order = {m: (-s, position[m]) for m, s in seconds.items()}
    return sorted(nodeids, key=lambda n: order[module_of(n)])  # stable: a module's own order kept


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    if not all(here in item.path.parents for item in items):
        return  # a run with perf_tests too: their order is the plugin's (builds before the cases that load them)
    try:
        durations = json.loads(DURATIONS.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    ranked = {n: i for i, n in enumerate(longest_modules_first([item.nodeid for item in items], durations))}
    items.sort(key=lambda item: ranked[item.nodeid])


def process_registries() -> list[dict]:
    """The registries a process fills (models, the sources behind them, pipelines, scenarios,
    engines), each with its built-ins registered already."""
    from infermatrix.engines import ENGINES
    from infermatrix.models import sources
    from infermatrix.models.builtin import register_builtin_models
    from infermatrix.models.registry import MODELS
    from infermatrix.models.vlm import PIPELINES
    from infermatrix.scenarios.builtin import register_builtin_scenarios
    from infermatrix.scenarios.registry import SCENARIOS
    register_builtin_models()  # once per process: a module that registered them first would take them out
    register_builtin_scenarios()
    return [MODELS, sources._PATHS, sources._SETTINGS, PIPELINES, SCENARIOS, ENGINES]


@pytest.fixture(autouse=True, scope="module")
def what_a_module_registers_stays_in_it():
    """The registries are process-wide: the sources a module's tests resolve (onnx: files, hf:
    directories), the models they re-register (tolerances, inputs), the pipelines, scenarios and
    engines they add are taken out when the module ends, so no module depends on which others its
    worker ran before it. Found when the modules' order changed: tests/test_config.py's default
    model list took in another module's onnx: files, whose dims then refused its --dim, and
    tests/test_matrix.py's list of valid --pipelines another module's user checkpoint."""
    kept = [(registry, dict(registry)) for registry in process_registries()]
    yield
    for registry, before in kept:
        registry.clear()
        registry.update(before)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
