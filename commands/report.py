"""``infermatrix report RUNS... --out DIR``: charts and summary.md from saved runs (reports/cli.py)."""
from infermatrix.reports.cli import add_report_arguments as add_arguments
from infermatrix.reports.cli import cmd_report as run

__all__ = ["add_arguments", "run"]
