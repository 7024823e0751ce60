"""TorchScript: trace + freeze, saved with torch.jit.save, optimized for inference at load.

TorchScript is deprecated upstream (torch 2.14 warns on every call to trace/script); it
stays because the seed measurements use it. The warning is shown once in the run summary
(``notice``) instead of once per test.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from .base import BuildSpec
from .torch_common import TorchModuleEngine, module_for, prepare_tensors

ARTIFACT = "model.ts"


class TorchScriptEngine(TorchModuleEngine):
    name: ClassVar[str] = "torchscript"
    capabilities: ClassVar[Mapping[str, frozenset[str]]] = {
        "cpu": frozenset({"fp32"}),
        "cuda": frozenset({"fp32", "fp16"}),
    }
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    # optimize_for_inference may specialise kernels to the traced shapes.
    dynamic_batch: ClassVar[bool] = False
    # no dynamic_shapes: tracing bakes Python-int shape arithmetic (a KV cache's length,
    # position offsets) into the graph, so a traced decoder step is only right at one length
    notice: ClassVar[str | None] = ("torchscript: TorchScript is deprecated upstream (FutureWarning "
                                    "in torch 2.14); kept as a reference format")

    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        import torch
        module = module_for(spec, self.precision, self.device)
        args = prepare_tensors(spec.example_inputs, spec.input_names, self.precision, self.device)
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, torch.jit.TracerWarning))
            traced = torch.jit.trace(module, args, check_trace=False, strict=False)
            frozen = torch.jit.freeze(traced.eval())
            torch.jit.save(frozen, str(workdir / ARTIFACT))

    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        import torch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
            frozen = torch.jit.load(str(workdir / ARTIFACT), map_location=self.device)
            self._module = torch.jit.optimize_for_inference(frozen)
        self._names = spec.input_names
