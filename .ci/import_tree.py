"""Lay the checkout out as the installed ``infermatrix`` package, for import-linter.

The repository keeps engines/, models/, ... at its top level and installs them under one
``infermatrix`` namespace through setuptools' package-dir mapping (pyproject.toml). import-linter
(grimp) reads packages from a folder, so this copies each mapped folder's Python files to
``OUT/infermatrix/<name>/`` using the same mapping, never a second list of it.

    python .ci/import_tree.py OUT && PYTHONPATH=OUT lint-imports
"""
from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(out: Path) -> int:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    pkg = out / "infermatrix"
    shutil.rmtree(pkg, ignore_errors=True)
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""The installed layout of this checkout, for import-linter."""\n')
    for name, folder in mapping.items():
        shutil.copytree(ROOT / folder, out / name.replace(".", "/"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "data"))
    print(f"import tree: {len(mapping)} packages under {pkg}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
