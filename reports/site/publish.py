"""Publish a history as a static site: every kind's data (page_data.py), written by render.py."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from infermatrix.core import history_layout as layout

from ..history import InputError
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
    if not history.is_dir():
        raise InputError(f"{history}: no such history folder")
    known = layout.kinds(history)
    if not known:
        raise InputError(f"{history}: no hardware kind folders (HISTORY/<kind id>/runs/*.json); "
                         "`infermatrix merge SHARD.json --into HISTORY` writes them")
    unknown = [k for k in kind_ids or [] if k not in known]
    if unknown:
        raise InputError(f"kind(s) {unknown} not in {history}; its kinds: {known}")
    chosen = list(dict.fromkeys(kind_ids)) if kind_ids else known
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
