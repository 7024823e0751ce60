"""The ``infermatrix_run`` block of a merged run (core/history_layout.py stores it): whether the run
is complete, which shards and cases it lacks, its kind, commit and time, the shard files it came
from and every planned case's outcome. An incomplete run says what it lacks, so that it is never
read as "no regression"."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .history_layout import HistoryLayoutError, check_kind_id, parse_utc
from .shard_record import CaseOutcome

@dataclass(frozen=True)
class RunRecord:
    """One merged run: complete only when every shard 1..splits is present and every planned case
    is either benchmarked or has a recorded outcome."""

    complete: bool
    splits: int
    shards_present: tuple[int, ...]
    shards_missing: tuple[int, ...]
    cases_missing: tuple[str, ...]
    kind: str
    commit: str | None
    datetime: str                      # ISO 8601 UTC: the run's start (its earliest shard's)
    sources: tuple[str, ...]           # the shard files' names, in shard order
    outcomes: dict[str, CaseOutcome] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.splits, int) or isinstance(self.splits, bool) or self.splits < 1:
            raise HistoryLayoutError(f"splits {self.splits!r} is not a positive integer")
        every = set(range(1, self.splits + 1))
        present, missing = set(self.shards_present), set(self.shards_missing)
        if present & missing or present | missing != every or len(present) != len(self.shards_present):
            raise HistoryLayoutError(
                f"shards present {list(self.shards_present)} and missing {list(self.shards_missing)} "
                f"are not a partition of 1..{self.splits}")
        if self.complete != (not missing and not self.cases_missing):
            raise HistoryLayoutError(
                f"complete={self.complete} contradicts shards missing {list(self.shards_missing)} "
                f"and {len(self.cases_missing)} cases missing")
        check_kind_id(self.kind)
        if self.commit is not None and not re.fullmatch(r"[0-9a-f]{12,64}", str(self.commit)):
            raise HistoryLayoutError(f"commit {self.commit!r} is not a git commit id or null")
        parse_utc(self.datetime)
        for nodeid, outcome in self.outcomes.items():
            if not isinstance(outcome, CaseOutcome):
                raise HistoryLayoutError(f"outcome of {nodeid!r} is {outcome!r}, not a CaseOutcome")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("shards_present", "shards_missing", "cases_missing", "sources"):
            data[key] = list(data[key])
        data["outcomes"] = {k: v.to_json() for k, v in sorted(self.outcomes.items())}
        return data

    @classmethod
    def from_json(cls, data: Any) -> RunRecord:
        if not isinstance(data, dict):
            raise HistoryLayoutError(f"infermatrix_run is {type(data).__name__}, not a JSON object")
        try:
            return cls(
                complete=bool(data["complete"]), splits=data["splits"],
                shards_present=tuple(data["shards_present"]), shards_missing=tuple(data["shards_missing"]),
                cases_missing=tuple(data["cases_missing"]), kind=data["kind"], commit=data.get("commit"),
                datetime=data["datetime"], sources=tuple(data.get("sources") or ()),
                outcomes={k: _outcome(k, v) for k, v in (data.get("outcomes") or {}).items()})
        except KeyError as exc:
            raise HistoryLayoutError(f"infermatrix_run has no {exc.args[0]!r}") from None


def _outcome(nodeid: str, data: Any) -> CaseOutcome:
    if not isinstance(data, dict) or "outcome" not in data:
        raise HistoryLayoutError(f"outcome of {nodeid!r} is {data!r}, not {{'outcome': ..., 'reason': ...}}")
    return CaseOutcome(data["outcome"], data.get("reason"))
