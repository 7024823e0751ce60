"""``infermatrix compare BASE NEW``: the statistical regression gate between two sets of saved runs
(reports/cli.py); exit code 1 when a case got slower."""
from infermatrix.reports.cli import add_compare_arguments as add_arguments
from infermatrix.reports.cli import cmd_compare as run

__all__ = ["add_arguments", "run"]
