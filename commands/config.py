"""``infermatrix config --print [pytest's run options]``: the effective run configuration as TOML
(fixtures/config_print.py)."""
from __future__ import annotations

import argparse

from infermatrix.fixtures import config_print

from .main import UsageError

add_arguments = config_print.add_arguments


def run(args: argparse.Namespace) -> int:
    if not args.print_config:
        raise UsageError("nothing to do: pass --print")
    return config_print.run(args)
