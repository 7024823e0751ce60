"""The site on disk: index.html with the page's data embedded, this package's scripts and
style.css, and a copy of every run file the page links to.

The data rides in a ``<script type="application/json">`` element: JSON with ``<``, ``>``, ``&`` and
the two JavaScript line separators written as ``\\uXXXX`` escapes, so that no case name, reason or
label (``</script>``, quotes, markup) can end the element or become markup; app.js reads it with
JSON.parse and writes every string through textContent, never as HTML.

A site is written whole or not at all: it is built in a temporary folder beside SITE and swapped in
by renames; SITE must be absent, empty, or a site this command wrote (its marker file), so that a
mistyped ``--out`` never replaces someone's folder.
"""
from __future__ import annotations

import contextlib
import html
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

#: marks a folder as a site this command wrote, which a later publish may replace
MARKER = ".infermatrix-site"
ASSETS = ("chart.js", "tables.js", "app.js", "style.css")
DATA_ELEMENT_ID = "infermatrix-data"

_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="assets/style.css">
</head>
<body>
<header class="top">
  <h1>{title}</h1>
  <p class="sub" id="generated"></p>
  <nav id="kinds" aria-label="hardware kinds"></nav>
</header>
<main id="app"><noscript>This page draws its tables and charts with JavaScript.</noscript></main>
<script type="application/json" id="{data_id}">{data}</script>
<script src="assets/chart.js"></script>
<script src="assets/tables.js"></script>
<script src="assets/app.js"></script>
</body>
</html>
"""


class SiteError(ValueError):
    """An output folder this command may not write (the message names it and why)."""


def embedded_json(data: Any) -> str:
    """JSON that is safe inside a script element (see the module's docstring)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return "".join(_JSON_ESCAPES.get(ch, ch) for ch in text)


def page_html(data: dict[str, Any], title: str) -> str:
    return PAGE.format(title=html.escape(title), data_id=DATA_ELEMENT_ID, data=embedded_json(data))


def check_out(out: Path) -> None:
    """Refuse an output folder that holds anything but a site this command wrote."""
    if out.exists() and not out.is_dir():
        raise SiteError(f"{out} is a file; --out takes a folder (absent, empty, or a site written by publish)")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SiteError(f"{out} holds files that publish did not write (no {MARKER} in it); name a new or empty "
                        "folder, or a site written by publish")


def write_site(out: Path, data: dict[str, Any], title: str, run_files: list[tuple[Path, str]]) -> Path:
    """Write the site (index.html, assets/, the runs at their links); returns index.html's path."""
    out = Path(out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        (build / "assets").mkdir()
        here = resources.files(__package__)
        for name in ASSETS:
            (build / "assets" / name).write_bytes(here.joinpath(name).read_bytes())
        for source, link in run_files:
            target = build / link
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        (build / "index.html").write_text(page_html(data, title), encoding="utf-8")
        (build / MARKER).write_text("written by infermatrix publish; the next publish replaces this folder\n")
        _swap_in(build, out)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return out / "index.html"


def _swap_in(build: Path, out: Path) -> None:
    """Put the built folder at ``out``; the previous site is kept until the new one is in place."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        os.rmdir(old)
        os.replace(out, old)
    try:
        os.replace(build, out)
    except OSError:
        if old is not None:
            os.replace(old, out)   # the previous site back where it was
        raise
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
