"""Engines and models that misbehave on purpose (pytest plugin: ``-p tests.fault_engines``),
for tests/test_faults.py. Each is eager PyTorch with one fault injected."""
from __future__ import annotations

import itertools
from typing import Any, ClassVar

from infermatrix.engines import register_engine
from infermatrix.engines.base import Outputs
from infermatrix.engines.torch_eager import TorchEagerEngine
from infermatrix.models.registry import MODELS, ModelSpec, register_model
from infermatrix.models.zoo import IMAGE, image_inputs
from tests.unexportable import Unexportable


class NanEngine(TorchEagerEngine):
    """Returns NaN and inf where eager returns numbers (a broken kernel, an fp16 overflow)."""
    name: ClassVar[str] = "fault_nan"

    def _run_impl(self, prepared: Any) -> Outputs:
        out = super()._run_impl(prepared)
        bad = out["logits"].clone()
        bad[..., 0] = float("nan")
        bad[..., 1] = float("inf")
        return {"logits": bad}


class OutOfMemoryEngine(TorchEagerEngine):
    """Runs out of memory above batch 4, as a real allocator does."""
    name: ClassVar[str] = "fault_oom"

    def _run_impl(self, prepared: Any) -> Outputs:
        if prepared[0].shape[0] > 4:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 68719476736 bytes.")
        return super()._run_impl(prepared)


class MissingDependencyEngine(TorchEagerEngine):
    """Needs a package that is not installed."""
    name: ClassVar[str] = "fault_missing"
    requires: ClassVar[tuple[str, ...]] = ("torch", "infermatrix_no_such_runtime")


class DiesUnderLoadEngine(TorchEagerEngine):
    """Serves the equivalence check and a few queries, then fails (a lost device)."""
    name: ClassVar[str] = "fault_dies"

    def _load_impl(self, workdir, spec) -> None:
        super()._load_impl(workdir, spec)
        self._calls = itertools.count()   # per engine: what one engine served decides when it dies

    def _run_impl(self, prepared: Any) -> Outputs:
        if next(self._calls) >= 40:
            raise RuntimeError("device lost")
        return super()._run_impl(prepared)


for _cls in (NanEngine, OutOfMemoryEngine, MissingDependencyEngine, DiesUnderLoadEngine):
    register_engine(_cls)
if "fault-unexportable" not in MODELS:
    register_model(ModelSpec("fault-unexportable", Unexportable, image_inputs(8), IMAGE))
