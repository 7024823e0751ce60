"""Child processes that must run one checkout's code, whatever infermatrix is installed.

The repository keeps engines/, models/, ... at its top level and installs them as the
``infermatrix`` namespace. A child that must import one particular checkout (a BASE git
worktree under ``infermatrix ab``, the per-engine memory subprocess) gets a one-file
``infermatrix`` package first on its PYTHONPATH whose ``__path__`` is that checkout, so
``infermatrix.engines`` is ``<checkout>/engines`` and not the editable install's copy.
"""
from __future__ import annotations

import os
from pathlib import Path

SHIM = "__path__[:] = [{root!r}]  # written by infermatrix: this checkout's folders are the package\n"


def write_shim(checkout: Path, into: Path) -> Path:
    """Write ``into/infermatrix/__init__.py`` pointing at ``checkout``; return ``into``."""
    pkg = Path(into) / "infermatrix"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(SHIM.format(root=str(Path(checkout).resolve())))
    return Path(into)


def pythonpath(*first: Path | str) -> str:
    """``first`` ahead of the inherited PYTHONPATH."""
    return os.pathsep.join(filter(None, [*map(str, first), os.environ.get("PYTHONPATH")]))
