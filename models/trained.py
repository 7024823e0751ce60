"""Train once, then load: models the suite trains itself keep their weights in the cache.

The cache root is always passed in (from the run configuration), never read from an
environment variable. An entry is keyed by everything that shapes the weights (recipe,
architecture, library versions, data); building happens in a temp dir and appears atomically
(engines/cache.py), so two processes never train the same recipe twice or read half a file.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from infermatrix.engines.cache import EngineCache

#: where the engine cache lives when nothing else is configured (the run configuration's default)
DEFAULT_CACHE_ROOT = Path("~/.cache/infermatrix")


def train_once(cache_root: Path | None, kind: str, fields: Mapping[str, Any],
               build: Callable[[Path], None]) -> Path:
    """The cache entry for ``fields`` under ``kind``, built by ``build(stage_dir)`` if absent."""
    root = Path(cache_root or DEFAULT_CACHE_ROOT).expanduser()
    return EngineCache(root).get_or_build(kind, dict(fields), build).path
