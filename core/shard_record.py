"""The shard record: what one shard of a split run planned, ran and how each case ended.

The plugin writes it into every pytest-benchmark JSON (saved or ``--benchmark-json``) under
``"infermatrix_shard"``; the merge reads it to check that the shards of one run cover the whole
planned matrix exactly once. ``planned`` is the whole collection before pytest-split took this
shard's part, so every shard of one run carries the same plan; ``selected`` is this shard's part;
``outcomes`` has an entry for every selected case that ran (a selected case without one was not
reached: the run was interrupted). Without pytest-split the record says 1 split, group 1.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: the top-level key of a pytest-benchmark JSON that holds the record
SHARD_KEY = "infermatrix_shard"
OUTCOMES = ("passed", "failed", "skipped", "error")
_KIND_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_FIELDS = ("splits", "group", "planned", "selected", "outcomes", "commit", "kind")


class ShardRecordError(ValueError):
    """A shard record that is malformed (the field and the bad value named)."""


@dataclass(frozen=True)
class CaseOutcome:
    outcome: str             # one of OUTCOMES
    reason: str | None       # why it was skipped or failed (pytest's message); None when it passed

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ShardRecordError(f"outcome {self.outcome!r}: expected one of {', '.join(OUTCOMES)}")
        if self.reason is not None and not isinstance(self.reason, str):
            raise ShardRecordError(f"reason {self.reason!r}: expected a string or null")

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "reason": self.reason}


@dataclass(frozen=True)
class ShardRecord:
    splits: int
    group: int                               # 1-based, as pytest-split's --group
    planned: tuple[str, ...]                 # sorted node ids of the whole un-split collection
    selected: tuple[str, ...]                # sorted node ids this shard ran
    outcomes: Mapping[str, CaseOutcome] = field(default_factory=dict)
    commit: str | None = None
    kind: str = ""                           # core/hardware_kind.py HardwareKind.id

    def __post_init__(self) -> None:
        for name in ("splits", "group"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ShardRecordError(f"{name} {value!r}: expected an integer >= 1")
        if self.group > self.splits:
            raise ShardRecordError(f"group {self.group} of {self.splits} splits: expected 1 <= group <= splits")
        for name in ("planned", "selected"):
            ids = getattr(self, name)
            if not isinstance(ids, tuple) or not all(isinstance(n, str) and n for n in ids):
                raise ShardRecordError(f"{name}: expected a tuple of node ids, got {ids!r:.200}")
            if list(ids) != sorted(set(ids)):
                twice = sorted({n for n in ids if ids.count(n) > 1})
                raise ShardRecordError(f"{name}: expected distinct node ids, sorted"
                                       + (f" ({', '.join(twice[:5])} appear twice)" if twice else ""))
        outside = sorted(set(self.selected) - set(self.planned))
        if outside:
            raise ShardRecordError(f"selected node ids not in the plan: {', '.join(outside[:5])}"
                                   + (f" and {len(outside) - 5} more" if len(outside) > 5 else ""))
        if not isinstance(self.outcomes, Mapping) or not all(isinstance(v, CaseOutcome) for v in self.outcomes.values()):
            raise ShardRecordError(f"outcomes: expected node id -> CaseOutcome, got {self.outcomes!r:.200}")
        unselected = sorted(set(self.outcomes) - set(self.selected))
        if unselected:
            raise ShardRecordError(f"outcomes for node ids this shard did not select: {', '.join(unselected[:5])}")
        if self.commit is not None and (not isinstance(self.commit, str) or not self.commit):
            raise ShardRecordError(f"commit {self.commit!r}: expected a non-empty string or null")
        if not isinstance(self.kind, str) or not _KIND_ID.match(self.kind):
            raise ShardRecordError(f"kind {self.kind!r}: expected a hardware kind id ([a-z0-9-])")
        # read-only and in node-id order, whatever order the outcomes were reported in
        object.__setattr__(self, "outcomes", MappingProxyType(dict(sorted(self.outcomes.items()))))

    @property
    def not_run(self) -> tuple[str, ...]:
        """Selected cases with no outcome: the shard stopped before reaching them."""
        return tuple(n for n in self.selected if n not in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {"splits": self.splits, "group": self.group, "planned": list(self.planned),
                "selected": list(self.selected), "outcomes": {n: o.to_json() for n, o in self.outcomes.items()},
                "commit": self.commit, "kind": self.kind}

    @classmethod
    def from_json(cls, data: Any) -> ShardRecord:
        if not isinstance(data, Mapping):
            raise ShardRecordError(f"{SHARD_KEY}: expected an object, got {type(data).__name__}")
        missing, extra = sorted(set(_FIELDS) - set(data)), sorted(set(data) - set(_FIELDS))
        if missing or extra:
            raise ShardRecordError(f"{SHARD_KEY} fields: missing {missing}, unexpected {extra}; "
                                   f"expected exactly {list(_FIELDS)}")
        for name in ("planned", "selected"):
            if not isinstance(data[name], list):
                raise ShardRecordError(f"{name}: expected a list of node ids, got {data[name]!r:.200}")
        raw = data["outcomes"]
        if not isinstance(raw, Mapping):
            raise ShardRecordError(f"outcomes: expected an object of node id -> outcome, got {raw!r:.200}")
        outcomes = {}
        for nodeid, entry in raw.items():
            if not isinstance(entry, Mapping) or set(entry) != {"outcome", "reason"}:
                raise ShardRecordError(f"outcomes[{nodeid!r}] {entry!r:.200}: expected {{'outcome', 'reason'}}")
            outcomes[nodeid] = CaseOutcome(entry["outcome"], entry["reason"])
        return cls(splits=data["splits"], group=data["group"], planned=tuple(data["planned"]),
                   selected=tuple(data["selected"]), outcomes=outcomes, commit=data["commit"], kind=data["kind"])


def read_shard(run_json: Mapping[str, Any]) -> ShardRecord | None:
    """The shard record of a pytest-benchmark JSON, or None for a run saved without one."""
    return None if SHARD_KEY not in run_json else ShardRecord.from_json(run_json[SHARD_KEY])
