"""``infermatrix export --pipeline NAME --out DIR``: the VL pipeline as standalone artifacts
(scenarios/export.py)."""
from infermatrix.scenarios.export import add_arguments, run

__all__ = ["add_arguments", "run"]
