"""One point of the matrix: model x engine x precision (x int8 scheme) x batch size x device."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Case:
    model: str
    engine: str
    precision: str
    batch_size: int
    device: str
    #: the int8 recipe (engines/spec.py INT8_SCHEMES) of an int8 case; None: the model's own
    scheme: str | None = None

    def __post_init__(self) -> None:
        if self.scheme is not None and self.precision != "int8":
            raise ValueError(f"{self.model}-{self.engine}-{self.precision}: an int8 scheme ({self.scheme!r}) "
                             "belongs to int8 cases only")

    @property
    def precision_label(self) -> str:
        """``int8-<scheme>`` for an int8 case with its scheme named, else the precision."""
        return f"{self.precision}-{self.scheme}" if self.scheme else self.precision

    @property
    def id(self) -> str:
        return f"{self.model}-{self.engine}-{self.precision_label}-bs{self.batch_size}-{self.device}"
