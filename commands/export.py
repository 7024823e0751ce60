"""``infermatrix export --pipeline NAME --out DIR``: the VL pipeline as standalone artifacts
(scenarios/export.py)."""
from __future__ import annotations

import argparse

from infermatrix.models.builtin import register_builtin_models
from infermatrix.scenarios import export


def add_arguments(parser: argparse.ArgumentParser) -> None:
    register_builtin_models()  # the help names the registered pipelines
    export.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    register_builtin_models()
    return export.run(args)
