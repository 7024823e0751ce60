"""PyTorch eager under ``torch.inference_mode()``: the baseline every other engine is judged by.

Its int8 is torchao's (engines/torch_int8.py), the quantizer PyTorch maintains:
``quantize_`` with ``Int8DynamicActivationInt8WeightConfig`` on the Linear layers, int8
weights with one scale per tensor or per output channel, activations quantized per call. It
replaced ``torch.ao.quantization.quantize_dynamic``, which upstream deprecates (and which was
faster on CPU in eager mode: the numbers are in engines/torch_int8.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from . import torch_int8
from .base import TORCH_LIBRARIES, BuildSpec
from .torch_common import TorchModuleEngine, module_for


class TorchEagerEngine(TorchModuleEngine):
    name: ClassVar[str] = "torch"
    capabilities: ClassVar[Mapping[str, frozenset[str]]] = {
        "cpu": frozenset({"fp32", "bf16", "int8"}),
        "cuda": frozenset({"fp32", "fp16", "bf16"}),
    }
    # bf16 on a CPU without AVX512-BF16/AMX is emulated: 6-50x slower than fp32.
    slow: ClassVar[frozenset[tuple[str, str]]] = frozenset({("cpu", "bf16")})
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    dynamic_shapes: ClassVar[bool] = True
    live_module: ClassVar[bool] = True  # runs the registry's module: its weights are the engine's
    reference_for: ClassVar[frozenset[str]] = frozenset({"torch"})
    int8_schemes: ClassVar[frozenset[str]] = torch_int8.SCHEMES
    artifact_libraries: ClassVar[tuple[str, ...]] = (*TORCH_LIBRARIES, "torchao")
    int8_notice: ClassVar[str] = (
        "torch int8: torchao's Int8DynamicActivationInt8Weight in eager mode (no torch.compile), what PyTorch "
        "maintains in place of the deprecated torch.ao quantize_dynamic; on CPU its eager path is slower than "
        "quantize_dynamic was (engines/torch_int8.py)")

    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        # Eager runs the live module: there is nothing to export. The (empty) cache entry
        # still records the key fields, so history shows which weights were measured.
        pass

    def _availability_problem_impl(self) -> str | None:
        return (torch_int8.missing() if self.precision == "int8" else None) or super()._availability_problem_impl()

    def notice_text(self) -> str | None:
        return self.int8_notice if self.precision == "int8" else self.notice

    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        self._int8_layers = None
        self._scheme = spec.int8_scheme
        if self.precision == "int8":
            self._module, self._int8_layers = torch_int8.quantize(spec.module, spec.int8_scheme)
        else:
            self._module = module_for(spec, self.precision, self.device)
        self._names = spec.input_names

    def _details_impl(self) -> Mapping[str, Any]:
        if not self._int8_layers:
            return {}
        return {"int8_layers": self._int8_layers, "int8_recipe": torch_int8.label(self._scheme)}

