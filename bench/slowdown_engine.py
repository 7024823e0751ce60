"""A test-only engine with an injected, proportional slowdown (pytest plugin: -p bench.slowdown_engine).

``torch_slowdown`` is eager PyTorch that, after each inference, busy-waits for
``INFERMATRIX_INJECTED_SLOWDOWN`` (a fraction, e.g. 0.10) of the time that inference took,
so its latency is (1 + fraction) x eager's under whatever noise the machine has. Used to
measure the regression gate's power (bench/gate_power.py) and to test --benchmark-compare-fail.
"""
from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from infermatrix.engines import register_engine
from infermatrix.engines.base import Outputs
from infermatrix.engines.torch_eager import TorchEagerEngine

ENV = "INFERMATRIX_INJECTED_SLOWDOWN"


class InjectedSlowdownEngine(TorchEagerEngine):
    name: ClassVar[str] = "torch_slowdown"

    def _load_impl(self, workdir, spec) -> None:
        super()._load_impl(workdir, spec)
        raw = os.environ.get(ENV, "0")
        try:
            self._fraction = float(raw)
        except ValueError:
            raise ValueError(f"{ENV}={raw!r}; expected a fraction such as 0.10") from None
        if not 0.0 <= self._fraction < 10.0:
            raise ValueError(f"{ENV}={raw!r}; expected a fraction in [0, 10)")

    def _run_impl(self, prepared: Any) -> Outputs:
        start = time.perf_counter()
        out = super()._run_impl(prepared)
        if self._fraction:
            until = time.perf_counter() + self._fraction * (time.perf_counter() - start)
            while time.perf_counter() < until:
                pass
        return out


register_engine(InjectedSlowdownEngine)
