"""``infermatrix``: the suite's command-line program, one argparse subcommand per job.

The saved runs' charts and summary (report), the regression gate (compare, ab), the effective run
configuration (config) and the VL pipeline's standalone artifacts (export).

Exit codes: 0 fine, 1 a regression, 2 a usage or input error (argparse's own usage errors
included). Each subcommand lives in its own module of this package, with ``add_arguments(parser)``
and ``run(args) -> int``; a module is imported only for the subcommand that runs (or whose
``--help`` is asked for), so ``infermatrix --help`` and ``infermatrix compare --help`` never import
torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2

# name -> the one-line help `infermatrix --help` lists; the module is commands/<name>.py
COMMANDS: dict[str, str] = {
    "report": "charts and summary.md from saved runs",
    "compare": "statistical regression gate between two sets of saved runs",
    "ab": "benchmark BASE and NEW in one job, alternating blocks, then gate (for CI)",
    "config": "show the run configuration a pytest run with these options would use (--print)",
    "export": "the VL pipeline as standalone artifacts (ONNX, safetensors, runnable scripts)",
    "kind": "this host's hardware kind: the id its runs are kept under in a history (--json: every field)",
    "merge": "the shards of one sharded run as one run in a history kept per hardware kind",
    "watch": "the gate learned from a history: each case's change points against its own noise band (for main)",
    "publish": "a static web page of a history (heat map, trends, change points), opened from a file",
    "bencher": "runs as Bencher Metric Format JSON, and the `bencher run` that uploads them (kind = testbed)",
}


class UsageError(Exception):
    """A usage error found after parsing: the subcommand's usage line, the message, exit code 2."""


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.{name}")


def _build(with_arguments: Iterable[str]) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="infermatrix", allow_abbrev=False,
        description="The inference benchmark suite: charts from saved runs, the regression gate, A/B runs, "
                    "the run configuration, pipeline exports. Benchmarks themselves run under pytest.",
        epilog="exit codes: 0 fine, 1 a regression, 2 a usage or input error; "
               "`infermatrix COMMAND --help` for a command's options")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    wanted = set(with_arguments)
    parsers = {}
    for name, help_line in COMMANDS.items():
        parsers[name] = sub.add_parser(name, help=help_line, description=help_line)
        if name in wanted:
            command_module(name).add_arguments(parsers[name])
    return parser, parsers


def build_parser(commands: Iterable[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The whole program; only the named subcommands get their arguments (by default all of them,
    which imports every subcommand's module, torch included)."""
    return _build(commands)[0]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # the subcommand is the first word that is not an option (the program's own options are
    # -h/--help only): build that one's arguments alone, so that nothing else is imported
    command = next((a for a in argv if not a.startswith("-")), None)
    parser, parsers = _build([command] if command in COMMANDS else [])
    args = parser.parse_args(argv)
    from infermatrix.reports.history import InputError
    try:
        return command_module(args.command).run(args)
    except UsageError as exc:
        parsers[args.command].error(str(exc))  # exits 2
    except InputError as exc:
        print(f"infermatrix: error: {exc}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
