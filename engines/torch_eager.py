"""PyTorch eager under ``torch.inference_mode()``: the baseline every other engine is judged by.

Its int8 is PyTorch's own dynamic quantization of Linear layers
(``torch.ao.quantization.quantize_dynamic``): int8 weights, one scale per tensor or per output
channel, activations quantized per call. Upstream deprecates
``torch.ao.quantization`` in favour of torchao, which this suite does not install; the run
summary says so once.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from .base import BuildSpec, EngineError, EngineUnavailable
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
        self._int8_layers = None
        if self.precision == "int8":
            self._module, self._int8_layers = quantized_linear(spec.module, spec.int8_scheme)
        else:
            self._module = module_for(spec, self.precision, self.device)
        self._names = spec.input_names

    def _details_impl(self) -> Mapping[str, Any]:
        return {"int8_layers": self._int8_layers} if self._int8_layers else {}


#: below this share of compute layers quantized, an "int8" case would be an fp32 model
MIN_INT8_SHARE = 0.5


def quantized_linear(module: Any, scheme: str) -> tuple[Any, str]:
    """A copy of ``module`` with every nn.Linear dynamically quantized to int8 (weights per
    tensor, or per output channel for ``dynamic_per_channel``), and "quantized/compute layers".

    quantize_dynamic swaps nn.Linear only: convolutions (and GPT-2's Conv1D projections) stay
    fp32, so a model that is mostly those is refused rather than measured as "int8"."""
    import copy
    import warnings

    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
    if scheme not in TorchEagerEngine.int8_schemes:
        raise EngineError(f"torch int8 builds {sorted(TorchEagerEngine.int8_schemes)}; got scheme {scheme!r}")
    compute = [m for m in module.modules() if isinstance(m, torch.nn.Linear | torch.nn.modules.conv._ConvNd)
               or type(m).__name__ == "Conv1D"]  # transformers' GPT-2 projections
    linear = sum(isinstance(m, torch.nn.Linear) for m in compute)
    if not compute or linear / len(compute) < MIN_INT8_SHARE:
        raise EngineUnavailable(f"torch int8 (quantize_dynamic) quantizes nn.Linear only: {linear} of {len(compute)} "
                                "compute layers here; the rest (convolutions, Conv1D) would stay fp32")
    qconfig = per_channel_dynamic_qconfig if scheme == "dynamic_per_channel" else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation (Deprecation- and UserWarnings) is said once in the run summary
        quantized = quantize_dynamic(copy.deepcopy(module), {torch.nn.Linear: qconfig}, dtype=torch.qint8).eval()
    return quantized, f"{linear}/{len(compute)}"
