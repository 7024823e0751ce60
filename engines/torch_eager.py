"""PyTorch eager under ``torch.inference_mode()``: the baseline every other engine is judged by.

Its int8 is PyTorch's own dynamic quantization of Linear layers
(``torch.ao.quantization.quantize_dynamic``, seed 002's method): int8 weights, one scale per
tensor or per output channel, activations quantized per call. Upstream deprecates
``torch.ao.quantization`` in favour of torchao, which this suite does not install; the run
summary says so once.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from .base import BuildSpec
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
    int8_schemes: ClassVar[frozenset[str]] = frozenset({"dynamic", "dynamic_per_channel"})
    int8_notice: ClassVar[str] = (
        "torch int8: torch.ao.quantization.quantize_dynamic is deprecated upstream in favour of torchao "
        "(not installed here); its int8 cases measure PyTorch's dynamic Linear quantization as it ships today")

    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        # Eager runs the live module: there is nothing to export. The (empty) cache entry
        # still records the key fields, so history shows which weights were measured.
        pass

    def notice_text(self) -> str | None:
        return self.int8_notice if self.precision == "int8" else self.notice

    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        self._module = (quantized_linear(spec.module, spec.int8_scheme) if self.precision == "int8"
                        else module_for(spec, self.precision, self.device))
        self._names = spec.input_names


def quantized_linear(module: Any, scheme: str) -> Any:
    """A copy of ``module`` with every nn.Linear dynamically quantized to int8 (weights per
    tensor, or per output channel for ``dynamic_per_channel``)."""
    import copy
    import warnings

    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
    qconfig = per_channel_dynamic_qconfig if scheme == "dynamic_per_channel" else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation (Deprecation- and UserWarnings) is said once in the run summary
        return quantize_dynamic(copy.deepcopy(module), {torch.nn.Linear: qconfig}, dtype=torch.qint8).eval()
