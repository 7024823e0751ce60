"""OpenVINO (optional extra ``openvino``): the shared ONNX stage's graph converted to IR, IR cached.

It builds from engines/onnx_stage.py like ONNX Runtime does: the exported fp32 graph (or the
user's ONNX file) for fp32, and the stage's static Q/DQ graph for int8, which OpenVINO's
low-precision transformations run as int8 kernels (``details()`` counts the layers that ran
in u8/i8). Measured on a Xeon with AMX (OpenVINO 2026.4, batch 1 and 8, vs PyTorch eager
fp32): tiny-cnn static 45.7-46.2 dB SQNR / cosine 0.99999, static_per_channel 44.8-46.6 dB;
resnet18 static 33.7-33.8 dB / 0.9998, static_per_channel 35.2-35.3 dB / 0.99985; every
convolution and fully connected layer ran in u8/i8 (3 of 3, 21 of 21), and the figures match
ONNX Runtime's on the same graph within 0.1 dB.

The other schemes stay ONNX Runtime's. Dynamic graphs (DynamicQuantizeLinear with
MatMulInteger / ConvInteger) convert and pass, but OpenVINO runs their matmuls and
convolutions in f32 (measured: 0 of 3 layers on tiny-cnn, 0 of 14 on tiny-bert), so an "int8"
row would not be int8. weight_only (MatMulNBits) did run as u8-compressed FullyConnected
(14 of 14 on tiny-bert, 36.9 dB), but it is the decoders' scheme and this engine runs no
decoder (no dynamic_shapes).

Every row pins ``INFERENCE_PRECISION_HINT=f32``: without it OpenVINO's CPU plugin silently
runs in bf16/fp16 where the hardware has it, and an fp32 row would not be fp32 at all (nor
the non-quantized layers of an int8 row what the graph says).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import onnx_stage
from .base import BuildSpec, Engine, Outputs

ARTIFACT = "model.xml"
RECORD = "build.json"  # what the ONNX stage did, reported as onnx_* like ONNX Runtime does
HINTS = {"fp32": "f32", "int8": "f32"}
#: our device -> OpenVINO's device name. Never "cuda": OpenVINO's "GPU" plugin is an Intel GPU, so a
#: CUDA runner has no OpenVINO device; an Intel GPU would be a device of its own
OV_DEVICES = {"cpu": "CPU"}
#: layers whose runtime precision says whether an int8 graph really ran as int8
COMPUTE_LAYERS = frozenset({"Convolution", "FullyConnected", "MatMul", "Deconvolution"})


class OpenVinoEngine(Engine):
    name: ClassVar[str] = "openvino"
    capabilities: ClassVar[Mapping[str, frozenset[str]]] = {"cpu": frozenset({"fp32", "int8"})}
    requires: ClassVar[tuple[str, ...]] = ("torch", "onnx", "onnxruntime", "openvino")
    runtime_modules: ClassVar[tuple[str, ...]] = ("openvino",)
    gpu_memory: ClassVar[str] = "process"  # its own device allocator
    artifact_libraries: ClassVar[tuple[str, ...]] = (*onnx_stage.STAGE_LIBRARIES, "openvino")
    consumes: ClassVar[frozenset[str]] = frozenset({"torch", "onnx"})
    int8_schemes: ClassVar[frozenset[str]] = frozenset({"static", "static_per_channel"})
    # measured on the AMX Xeon, 2026-11-25: resnet18/50 pass (15-16x over eager at bs1), but the
    # random-weight mobilenet_v2 (cosine 0.80) and the pretrained all-MiniLM-L6-v2 (0.46) fail on
    # graphs ONNX Runtime runs within the int8 row: measured on request, not in every default run
    int8_only_when_asked: ClassVar[str | None] = (
        "its static int8 failed the policy on mobilenet_v2 (cosine 0.80) and all-MiniLM-L6-v2 (0.46) here, "
        "where ONNX Runtime passes on the same graph")
    # no dynamic_shapes: the IR is converted with fixed feature dims and run through one
    # preallocated infer request; a decoder's growing KV cache is not wired here

    @classmethod
    def build_recipe(cls) -> dict[str, Any]:
        return {"onnx_stage": onnx_stage.recipe(), "feature_dims": "fixed from the example inputs"}

    def _upstream_key_impl(self, spec: BuildSpec) -> str | None:
        return onnx_stage.plan(spec, self.precision).key

    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        import openvino as ov
        with onnx_stage.open_stage(onnx_stage.plan(spec, self.precision), spec.store, workdir) as built:
            model = ov.convert_model(str(built.model))
            # keep the graph's batch axis (dynamic, or a file's fixed 1); pin the feature dims
            # to the spec's, so the CPU plugin compiles for one shape rather than any
            model.reshape({n: ov.PartialShape([model.input(n).get_partial_shape()[0],
                                               *spec.example_inputs[n].shape[1:]])
                           for n in spec.input_names})
            # compress_to_fp16=False: the default would store fp16 weights in an "fp32" artifact
            ov.save_model(model, str(workdir / ARTIFACT), compress_to_fp16=False)
        (workdir / RECORD).write_text(json.dumps(built.record, indent=1))

    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        import openvino as ov
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": HINTS[self.precision], "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        self._compiled = core.compile_model(str(workdir / ARTIFACT), OV_DEVICES[self.device], config)
        # by name: an ONNX file's graph order need not be the spec's
        self._inputs = [(n, self._compiled.input(n)) for n in spec.input_names]
        self._outputs = [(n, self._compiled.output(n)) for n in spec.output_names]
        record = json.loads((workdir / RECORD).read_text())
        self._facts = {**{f"onnx_{k}": v for k, v in record.items()},
                       **(self._runtime_facts() if self.precision == "int8" else {})}

    def _runtime_facts(self) -> dict[str, Any]:
        """How many compute layers OpenVINO runs in int8 (u8/i8) out of how many."""
        compute = int8 = 0
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) in COMPUTE_LAYERS:
                compute += 1
                int8 += info["runtimePrecision"].astype(str) in ("u8", "i8")
        return {"openvino_int8_layers": int8, "openvino_compute_layers": compute}

    def _prepare_impl(self, inputs: Mapping[str, Any]) -> Any:
        import openvino as ov
        request = self._compiled.create_infer_request()
        keep = []
        for n, port in self._inputs:
            value = inputs[n].numpy() if hasattr(inputs[n], "numpy") else np.asarray(inputs[n])
            arr = np.ascontiguousarray(value)
            keep.append(arr)
            request.set_tensor(port, ov.Tensor(arr, shared_memory=True))
        return {"request": request, "inputs": keep}

    def _run_impl(self, prepared: Any) -> Outputs:
        request = prepared["request"]
        request.infer()
        return {n: request.get_tensor(port) for n, port in self._outputs}

    def _to_host_impl(self, value: Any) -> np.ndarray:
        return value.data

    def _details_impl(self) -> Mapping[str, Any]:
        return self._facts

    def _close_impl(self) -> None:
        self._compiled = None
