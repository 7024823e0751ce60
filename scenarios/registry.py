"""Scenarios as plugins: each declares, in one registration, what it runs and how it is set.

A scenario is its module(s) plus one ``register(Scenario(...))`` (scenarios/builtin.py holds the
built-in ones). It declares:

- ``argnames``: the parameters its test function takes (``cold_start_case`` ...);
- ``points``: the parametrization, computed from the run's matrix and its own settings through a
  :class:`Plan` the front end hands it (so a scenario never imports the pytest plugin);
- ``records``: its typed records (core/records.py); reports draw a record's ``ChartSpec`` without
  importing the scenario;
- ``settings``: its own options, each a command-line flag (``--cold-start-runs``) and a config-file
  key (``cold_start_runs``) with a default, listed by ``infermatrix config --print``.

The pytest plugin iterates over ``SCENARIOS``: it adds the settings as options, parametrizes any
test that asks for a scenario's first argname, and hands each test its settings.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from infermatrix.core.records import Record
from infermatrix.core.schema import Case


@dataclass(frozen=True)
class Setting:
    """One setting of a scenario: flag ``--key-with-dashes``, config-file key ``key``."""

    key: str
    help: str
    default: Any
    kind: type = int            # int, float or str: how a command-line or file value is read
    minimum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in (int, float, str):
            raise ValueError(f"Setting {self.key!r}: kind {self.kind!r}; expected int, float or str")

    def read(self, raw: Any) -> Any:
        """The typed value of a raw one (a flag's string or a TOML value); ValueError saying why not."""
        if self.kind is str:
            if not isinstance(raw, str):
                raise ValueError(f"{raw!r} is not text")
            return raw
        number = not isinstance(raw, bool) and isinstance(raw, (int, float, str))
        if self.kind is int:
            if not number or isinstance(raw, float) or not str(raw).strip().lstrip("-").isdigit():
                raise ValueError(f"{raw!r} is not an integer")
            value: float = int(raw)
        else:
            try:
                value = float(raw) if number else math.nan
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(f"{raw!r} is not a finite number")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{value} is below the smallest allowed, {self.minimum:g}")
        return value


@dataclass(frozen=True)
class Point:
    """One parametrization of a scenario's test: its argument values, its id, and the case it
    measures (for the device and engine markers); ``skip`` says why it cannot run here."""

    values: tuple[Any, ...]
    id: str
    case: Case
    skip: str | None = None


class Plan(Protocol):
    """What the front end gives ``points``: the run's matrix and this scenario's settings, and the
    matrix's own rules for planning cases (capability, source, scheme, installed, CUDA)."""

    matrix: Any
    settings: Mapping[str, Any]

    def cases(self, models: Sequence[str] | None = None, precisions: Sequence[str] | None = None,
              batch_sizes: Sequence[int] | None = None) -> list[tuple[Case, str | None]]: ...


@dataclass(frozen=True)
class Scenario:
    name: str
    help: str
    argnames: tuple[str, ...]
    points: Callable[[Plan], list[Point]]
    #: the record types its tests write (core/records.py)
    records: tuple[type[Record], ...]
    settings: tuple[Setting, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.argnames or not self.records:
            raise ValueError(f"scenario {self.name!r} must declare its argnames and its record types")


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    if scenario.name in SCENARIOS:
        raise ValueError(f"scenario {scenario.name!r} is already registered")
    taken = {s.key: n for n, other in SCENARIOS.items() for s in other.settings}
    clash = [s.key for s in scenario.settings if s.key in taken]
    if clash:
        raise ValueError(f"scenario {scenario.name!r}: settings {clash} are already {taken[clash[0]]!r}'s")
    SCENARIOS[scenario.name] = scenario
    return scenario
