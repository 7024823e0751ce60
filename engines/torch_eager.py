"""PyTorch eager under ``torch.inference_mode()``: the baseline every other engine is judged by."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from .base import BuildSpec
from .torch_common import TorchModuleEngine, module_for


class TorchEagerEngine(TorchModuleEngine):
    name: ClassVar[str] = "torch"
    capabilities: ClassVar[Mapping[str, frozenset[str]]] = {
        "cpu": frozenset({"fp32", "bf16"}),
        "cuda": frozenset({"fp32", "fp16", "bf16"}),
    }
    # bf16 on a CPU without AVX512-BF16/AMX is emulated: 6-50x slower than fp32.
    slow: ClassVar[frozenset[tuple[str, str]]] = frozenset({("cpu", "bf16")})
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    dynamic_shapes: ClassVar[bool] = True
    live_module: ClassVar[bool] = True  # runs the registry's module: its weights are the engine's

    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        # Eager runs the live module: there is nothing to export. The (empty) cache entry
        # still records the key fields, so history shows which weights were measured.
        pass

    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        self._module = module_for(spec, self.precision, self.device)
        self._names = spec.input_names
