"""One point of the matrix: model x engine x precision x batch size x device."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Case:
    model: str
    engine: str
    precision: str
    batch_size: int
    device: str

    @property
    def id(self) -> str:
        return f"{self.model}-{self.engine}-{self.precision}-bs{self.batch_size}-{self.device}"
