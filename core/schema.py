"""The results schema: the case key, its id, and one typed, versioned record per scenario.

Every writer (perf_tests/, the scenarios) and every reader (reports/, ``infermatrix ab``,
bench/gpu_check.py) imports this module, so a field or an id is defined once. A record is stored
flat in pytest-benchmark's ``extra_info`` (its own ``compare`` and every saved history keep
working) with two keys of ours: ``infermatrix_schema`` (the version) and ``record`` (the kind).

- **Case** is the key: model, engine, precision, int8 scheme, batch size, device. Its id
  (``resnet50-onnxruntime-int8-static-bs8-cpu``) is rendered by ``Case.id`` and read back by
  ``Case.parse``; a record's ``key()`` adds the scenario's own axes (prompt length, LoadGen
  scenario, pipeline mode ...).
- **Reference** is the case every speedup divides by, written by the run from the model's own
  baseline (eager fp32 for a torch model, ONNX Runtime CPU fp32 for an ``onnx:`` file): readers
  never assume one.
- **Records**: units are in field names (``_s``, ``_bytes``, ``_per_s``, ``_pct``); a field the
  run could not measure is None, with the reason in ``percentile_notes`` or a ``*_reason`` field.
  Engine facts outside the schema (``onnx_*``, ``tensorrt_*`` ...) ride along in ``details``.
- **Versions**: a run saved before the schema (no version key: version 0) is read through
  :func:`upgrade_v0`; a newer version than this code knows is refused with both numbers.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 1
SCHEMA_KEY = "infermatrix_schema"
RECORD_KEY = "record"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: int8 recipes, by how scales are found and where: calibrated static Q/DQ (per tensor or per
#: output channel), dynamic activation quantization, or int8 weights only
INT8_SCHEMES = ("static", "static_per_channel", "dynamic", "dynamic_per_channel", "weight_only")
DEVICES = ("cpu", "cuda")


class SchemaError(ValueError):
    """A record that does not fit the schema; says which field, what it held and what was expected."""


@dataclass(frozen=True, order=True)
class Case:
    """One point of the matrix: model x engine x precision (x int8 scheme) x batch size x device."""

    model: str
    engine: str
    precision: str
    batch_size: int
    device: str
    #: the int8 recipe of an int8 case; None: the model's own (runs resolve it before recording)
    scheme: str | None = None

    #: the case key as records store it (the scheme under its record name)
    FIELDS: ClassVar[tuple[str, ...]] = ("model", "engine", "precision", "int8_scheme", "batch_size", "device")

    def __post_init__(self) -> None:
        if self.scheme is not None and self.precision != "int8":
            raise ValueError(f"{self.model}-{self.engine}-{self.precision}: an int8 scheme ({self.scheme!r}) "
                             "belongs to int8 cases only")

    @property
    def precision_label(self) -> str:
        """``int8-<scheme>`` for an int8 case with its scheme named, else the precision."""
        return f"{self.precision}-{self.scheme}" if self.scheme else self.precision

    @property
    def id(self) -> str:
        return f"{self.model}-{self.engine}-{self.precision_label}-bs{self.batch_size}-{self.device}"

    @classmethod
    def parse(cls, text: str) -> Case:
        """The case of an id (the inverse of ``id``). Model names may hold dashes; engine names,
        precisions, schemes and devices never do, so the id is read from the right."""
        parts = text.split("-")
        if len(parts) < 5 or not parts[-2].startswith("bs") or not parts[-2][2:].isdigit():
            raise SchemaError(f"{text!r} is not a case id: expected MODEL-ENGINE-PRECISION[-SCHEME]-bsN-DEVICE")
        device, batch = parts[-1], int(parts[-2][2:])
        scheme = parts[-3] if parts[-3] in INT8_SCHEMES and parts[-4] == "int8" else None
        rest = parts[:-4] if scheme else parts[:-3]
        precision = "int8" if scheme else parts[-3]
        if device not in DEVICES or precision not in PRECISIONS or len(rest) < 2:
            raise SchemaError(f"{text!r} is not a case id: device {device!r} (one of {DEVICES}), precision "
                              f"{precision!r} (one of {PRECISIONS}), a model and an engine before them")
        return cls("-".join(rest[:-1]), rest[-1], precision, batch, device, scheme)

    def fields(self) -> dict[str, Any]:
        return {"model": self.model, "engine": self.engine, "precision": self.precision,
                "int8_scheme": self.scheme, "batch_size": self.batch_size, "device": self.device}

    @classmethod
    def from_fields(cls, info: Mapping[str, Any]) -> Case:
        missing = [k for k in ("model", "engine", "precision", "batch_size", "device") if info.get(k) is None]
        if missing:
            raise SchemaError(f"the case key lacks {missing} (it has {sorted(k for k in info if k in cls.FIELDS)})")
        scheme = info.get("int8_scheme") if info["precision"] == "int8" else None
        return cls(str(info["model"]), str(info["engine"]), str(info["precision"]), int(info["batch_size"]),
                   str(info["device"]), scheme)


@dataclass(frozen=True)
class Reference:
    """The case a record's speedups divide by (same model, inputs and batch; same run)."""

    engine: str
    precision: str
    device: str

    FIELDS: ClassVar[tuple[str, ...]] = ("baseline_engine", "baseline_precision", "baseline_device")

    def of(self, case: Case) -> Case:
        return Case(case.model, self.engine, self.precision, case.batch_size, self.device)


@dataclass(frozen=True)
class ChartSpec:
    """A scenario's chart as data, drawn by reports/ without importing the scenario: one bar per
    record of ``value`` (seconds are drawn in ms), labelled by ``label`` fields, one panel per ``panel``."""

    title: str
    value: str
    label: tuple[str, ...] = ("engine", "precision")
    panel: str = "model"


@dataclass(frozen=True, kw_only=True)
class Record:
    """What every record holds; a scenario's record adds its typed figures."""

    kind: ClassVar[str] = ""
    #: the scenario's own axes, part of the key beside the case
    axes: ClassVar[tuple[str, ...]] = ()
    chart: ClassVar[ChartSpec | None] = None

    case: Case
    reference: Reference | None = None
    percentile_notes: dict = field(default_factory=dict)
    #: engine facts and anything a writer adds outside the schema
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if f.name not in ("case", "reference"):
                _check(type(self).kind, f.name, getattr(self, f.name), hints[f.name])

    @classmethod
    def of(cls, case: Case, reference: Reference | None = None, **values: Any) -> Record:
        """A record from a writer's figures: the schema's fields typed and checked, anything else
        (engine facts, a scenario's extras) kept in ``details``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"case", "reference", "details"}
        outside = {k: v for k, v in values.items() if k not in names}
        clash = sorted(set(outside) & {SCHEMA_KEY, RECORD_KEY, *Case.FIELDS, *Reference.FIELDS})
        if clash:
            raise SchemaError(f"{cls.kind} record: {clash} belong to the case key or the schema; pass them as the case")
        return cls(case=case, reference=reference, details=outside, **{k: v for k, v in values.items() if k in names})

    def key(self) -> tuple:
        return (type(self).kind, self.case, *(getattr(self, a) for a in type(self).axes))

    def label(self) -> str:
        """The case id plus the scenario's axes: unique within a run."""
        return "-".join([self.case.id, *(f"{a}{getattr(self, a)}" for a in type(self).axes)])

    def figures(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("case", "reference", "details")}

    def to_extra_info(self) -> dict[str, Any]:
        ref = dict(zip(Reference.FIELDS, (self.reference.engine, self.reference.precision, self.reference.device))
                   if self.reference else {})
        return {**self.details, SCHEMA_KEY: SCHEMA_VERSION, RECORD_KEY: type(self).kind, **self.case.fields(),
                **ref, **self.figures()}


def _check(kind: str, name: str, value: Any, hint: Any) -> None:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    for t in options:
        t = typing.get_origin(t) or t
        if t is type(None) and value is None:
            return
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if t in (str, bool, dict, list) and isinstance(value, t):
            return
    raise SchemaError(f"{kind} record: field {name!r} is {value!r} ({type(value).__name__}); expected {hint}")


RECORDS: dict[str, type[Record]] = {}


def record_type(cls: type[Record]) -> type[Record]:
    """Register a record type under its kind (a decorator)."""
    if not cls.kind or cls.kind in RECORDS:
        raise ValueError(f"record kind {cls.kind!r} is empty or registered twice")
    RECORDS[cls.kind] = cls
    return cls


def read_record(info: Mapping[str, Any], test_name: str = "") -> Record:
    """The typed record of one benchmark's ``extra_info`` (``test_name``: pytest-benchmark's
    ``name``, which tells the kind of a run saved before the schema)."""
    if not isinstance(info, Mapping):
        raise SchemaError(f"extra_info is a {type(info).__name__}; expected an object")
    version = info.get(SCHEMA_KEY, 0)
    if version == 0:
        info = upgrade_v0(info, test_name)
    elif version != SCHEMA_VERSION:
        raise SchemaError(f"written with results schema {version!r}; this infermatrix reads versions 0 "
                          f"(upgraded) and {SCHEMA_VERSION}: install the infermatrix that wrote it to read it")
    kind = info.get(RECORD_KEY)
    if kind not in RECORDS:
        raise SchemaError(f"record kind {kind!r} is unknown; known: {sorted(RECORDS)}")
    cls = RECORDS[kind]
    names = {f.name for f in dataclasses.fields(cls)} - {"case", "reference", "details"}
    required = [f.name for f in dataclasses.fields(cls) if f.name in names and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in info]
    if missing:
        raise SchemaError(f"{kind} record: lacks the field(s) {missing}")
    skip = {SCHEMA_KEY, RECORD_KEY, *Case.FIELDS, *Reference.FIELDS}
    ref = (Reference(*(str(info[k]) for k in Reference.FIELDS))
           if all(info.get(k) is not None for k in Reference.FIELDS) else None)
    return cls(case=Case.from_fields(info), reference=ref, **{k: info[k] for k in names if k in info},
               details={k: v for k, v in info.items() if k not in names and k not in skip})


#: test functions of runs saved before the schema, by the kind their records are
V0_KINDS = {"test_latency": "latency", "test_single_stream": "load", "test_multi_stream": "load",
            "test_offline": "load", "test_server": "load", "test_concurrency_sweep": "concurrency",
            "test_generation": "generation", "test_pipeline": "pipeline", "test_accuracy": "accuracy",
            "test_overhead": "overhead"}


#: version 0's ``scenario`` tags (mixed case: LoadGen's names and ours), by kind
V0_SCENARIOS = {"SingleStream": "load", "MultiStream": "load", "Offline": "load", "Server": "load",
                "Concurrency": "concurrency", "Accuracy": "accuracy", "generation": "generation",
                "pipeline": "pipeline"}


def upgrade_v0(info: Mapping[str, Any], test_name: str) -> dict[str, Any]:
    """A record saved before the schema, as version 1. What changed: the kind is named
    (``record``, from the test function or version 0's ``scenario`` tag), LoadGen's scenario moved
    from ``scenario`` to ``loadgen_scenario`` (``scenario`` mixed LoadGen names with ours), and the
    reference is written: version-0 runs always divided by eager PyTorch fp32 on the case's device."""
    fn = test_name.split("[", 1)[0]
    kind = V0_KINDS.get(fn) or V0_SCENARIOS.get(str(info.get("scenario")))
    if kind is None:
        raise SchemaError(f"a record saved before the results schema (version 0) from {fn or 'an unnamed test'!r} "
                          f"with scenario {info.get('scenario')!r}; version 0 is read for the tests "
                          f"{sorted(V0_KINDS)} and the scenarios {sorted(V0_SCENARIOS)} only")
    out = {k: v for k, v in info.items() if k != "scenario"}
    if kind == "load":
        out["loadgen_scenario"] = info.get("scenario")
    out.update({SCHEMA_KEY: SCHEMA_VERSION, RECORD_KEY: kind})
    out.setdefault("batch_size", 1)
    out.setdefault("baseline_engine", "torch")
    out.setdefault("baseline_precision", "fp32")
    out.setdefault("baseline_device", info.get("device"))
    return out


# The record types live in core/records.py (kept apart for size); importing it registers them.
from . import records as _records  # noqa: E402,F401
