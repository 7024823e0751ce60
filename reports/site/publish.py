"""Publish a history as a static site: every kind's data (page_data.py), written by render.py."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from infermatrix.core import history_layout as layout

from ..history import InputError
from ..history_gate import history_kinds
from .page_data import kind_data, run_link
from .render import SiteError, write_site

#: the page data's own version: app.js reads this shape
DATA_VERSION = 1


@dataclass(frozen=True)
class Published:
    """What a publish wrote: the page, its kinds and how many runs it links to."""

    index: Path
    kinds: tuple[str, ...]
    runs: int
    incomplete: int


def publish_site(history: Path, out: Path, kind_ids: list[str] | None = None,
                 title: str = "infermatrix benchmark history") -> Published:
    """Write SITE for HISTORY (every kind, or the ones named); InputError for a history without
    kinds, an unknown kind, or an output folder that may not be replaced."""
    history = Path(history)
    # the history gate's own check of the folder and of each kind asked for (one message for both commands)
    chosen = list(dict.fromkeys(k for kind_id in (kind_ids or [None]) for k in history_kinds(history, kind_id)))
    try:
        parts = [kind_data(history, kind_id) for kind_id in chosen]
    except layout.HistoryLayoutError as exc:
        raise InputError(str(exc)) from None
    run_files = [(e.path, run_link(kind_id, e.path.name)) for kind_id in chosen
                 for e in layout.runs(history, kind_id, include_incomplete=True)]
    data = {"version": DATA_VERSION, "title": title,
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "kinds": parts}
    try:
        index = write_site(Path(out), data, title, run_files)
    except SiteError as exc:
        raise InputError(str(exc)) from None
    runs = [r for part in parts for r in part["runs"]]
    return Published(index, tuple(chosen), len(runs), sum(not r["complete"] for r in runs))
