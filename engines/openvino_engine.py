"""OpenVINO (optional extra ``openvino``): converted from the PyTorch module, IR cached.

fp32 rows pin ``INFERENCE_PRECISION_HINT=f32``: without it OpenVINO's CPU plugin silently
runs in bf16/fp16 where the hardware has it, and the row would not be fp32 at all.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import TORCH_LIBRARIES, BuildSpec, Engine, Outputs

ARTIFACT = "model.xml"
HINTS = {"fp32": "f32", "fp16": "f16"}
OV_DEVICES = {"cpu": "CPU", "cuda": "GPU"}


class OpenVinoEngine(Engine):
    name: ClassVar[str] = "openvino"
    capabilities: ClassVar[Mapping[str, frozenset[str]]] = {"cpu": frozenset({"fp32"})}
    requires: ClassVar[tuple[str, ...]] = ("torch", "openvino")
    gpu_memory: ClassVar[str] = "process"  # its own device allocator
    artifact_libraries: ClassVar[tuple[str, ...]] = (*TORCH_LIBRARIES, "openvino")
    # no dynamic_shapes: the IR is converted with fixed feature dims and run through one
    # preallocated infer request; a decoder's growing KV cache is not wired here

    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        import openvino as ov
        import torch
        args = spec.positional(spec.example_inputs)
        shapes = [[-1, *t.shape[1:]] for t in args]  # dynamic batch, fixed feature dims
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            model = ov.convert_model(spec.module, example_input=args, input=shapes)
        # compress_to_fp16=False: the default would store fp16 weights in an "fp32" artifact
        ov.save_model(model, str(workdir / ARTIFACT), compress_to_fp16=False)

    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        import openvino as ov
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": HINTS[self.precision], "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        self._compiled = core.compile_model(str(workdir / ARTIFACT), OV_DEVICES[self.device], config)
        self._names = spec.input_names

    def _prepare_impl(self, inputs: Mapping[str, Any]) -> Any:
        import openvino as ov
        request = self._compiled.create_infer_request()
        keep = []
        for i, n in enumerate(self._names):
            value = inputs[n].numpy() if hasattr(inputs[n], "numpy") else np.asarray(inputs[n])
            arr = np.ascontiguousarray(value)
            keep.append(arr)
            request.set_input_tensor(i, ov.Tensor(arr, shared_memory=True))
        return {"request": request, "inputs": keep}

    def _run_impl(self, prepared: Any) -> Outputs:
        request = prepared["request"]
        request.infer()
        return {n: request.get_output_tensor(i) for i, n in enumerate(self._output_names)}

    def _to_host_impl(self, value: Any) -> np.ndarray:
        return value.data

    def _close_impl(self) -> None:
        self._compiled = None
