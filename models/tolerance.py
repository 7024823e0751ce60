"""An equivalence tolerance: the numbers a case must reach against its reference, and why.

Models carry their own overrides (a trained model's int8 row); the default policy lives in
fixtures/equivalence.py."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    atol: float | None        # None: no elementwise test (int8)
    rtol: float | None
    min_cosine: float
    min_sqnr_db: float | None = None
    min_top1: float | None = None
    reason: str = "DESIGN.md section 4 default"
    #: atol is a fraction of the reference's largest magnitude (the fp16/bf16 rows): a fixed atol
    #: judged resnet50 bf16 at SQNR 45.6 dB stricter than int8 at 20 dB (DESIGN.md section 4)
    atol_of_max: bool = False
    #: the largest magnitude this precision's arithmetic cannot tell from zero at unit-scale
    #: activations (its absolute rounding noise): a reference output no larger carries no
    #: direction for cosine or SQNR to judge (DESIGN.md section 4, "degenerate references")
    zero_floor: float | None = None

    def __post_init__(self) -> None:
        if (self.atol is None) != (self.rtol is None):
            raise ValueError(f"atol={self.atol} and rtol={self.rtol}: give both or neither")
        if not 0.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine={self.min_cosine}; expected a value in [0, 1]")
