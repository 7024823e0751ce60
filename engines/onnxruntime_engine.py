"""ONNX Runtime: the shared ONNX stage's graph, ORT_ENABLE_ALL, optimized graph cached, IO binding.

The graph comes from engines/onnx_stage.py (export or the user's file, transformer fusion for
int8, the model's int8 scheme, fp16 with fp32 I/O), cached once and shared with the other ONNX
engines; this engine's own artifact is ONNX Runtime's optimized graph of it. What the stage
did is kept in ``build.json`` and reported by ``details()`` as ``onnx_*``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import onnx_stage
from .base import BuildSpec, Engine, EngineError, Outputs

ARTIFACT = "model.onnx"
RECORD = "build.json"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
             "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


class OnnxRuntimeEngine(Engine):
    name: ClassVar[str] = "onnxruntime"
    capabilities: ClassVar[Mapping[str, frozenset[str]]] = {
        "cpu": frozenset({"fp32", "int8"}),
        "cuda": frozenset({"fp32", "fp16"}),
    }
    requires: ClassVar[tuple[str, ...]] = ("torch", "onnx", "onnxruntime")
    # the stage's exporter, graph format and quantizer, and the runtime that optimizes the graph
    artifact_libraries: ClassVar[tuple[str, ...]] = onnx_stage.STAGE_LIBRARIES
    consumes: ClassVar[frozenset[str]] = frozenset({"torch", "onnx"})
    dynamic_shapes: ClassVar[bool] = True
    reference_for: ClassVar[frozenset[str]] = frozenset({"onnx"})  # at fp32 on the CPU
    int8_schemes: ClassVar[frozenset[str]] = frozenset(
        {"static", "static_per_channel", "dynamic", "dynamic_per_channel", "weight_only"})
    gpu_memory: ClassVar[str] = "process"  # its own CUDA arena, not PyTorch's allocator
    #: precisions for which onnxruntime.transformers.optimizer fuses models with transformer
    #: hints. Measured on distilbert bs1 (2 AVX2 cores): int8 40 ms fused vs 50 ms unfused;
    #: fp32 73-80 ms fused vs 68-69 ms unfused, so fp32 keeps ORT's own graph optimizations.
    fuse_transformers_for: ClassVar[frozenset[str]] = frozenset({"int8"})

    @classmethod
    def build_recipe(cls) -> dict[str, Any]:
        return {"fuse_transformers_for": sorted(cls.fuse_transformers_for), "onnx_stage": onnx_stage.recipe()}

    def _availability_problem_impl(self) -> str | None:
        import onnxruntime as ort
        provider = PROVIDERS[self.device]
        if provider not in ort.get_available_providers():
            return (f"onnxruntime {ort.__version__} has no {provider} "
                    f"(available: {ort.get_available_providers()})")
        return None

    # ---- build ----
    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        step = onnx_stage.plan(spec, self.precision, fuse=self.precision in self.fuse_transformers_for,
                               use_gpu=self.device == "cuda")
        with onnx_stage.open_stage(step, spec.store, workdir) as built:
            # Let ORT apply every graph optimization once and keep the optimized graph.
            self._session(built.model, optimized_to=workdir / ARTIFACT)
        (workdir / RECORD).write_text(json.dumps(built.record, indent=1))

    def _session(self, model: Path, optimized_to: Path | None = None) -> Any:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        opts.intra_op_num_threads = self.threads or 0  # 0: ONNX Runtime's default
        if not self.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if optimized_to is not None:
            opts.optimized_model_filepath = str(optimized_to)
        return ort.InferenceSession(str(model), sess_options=opts, providers=[PROVIDERS[self.device]])

    # ---- run ----
    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        self._sess = self._session(workdir / ARTIFACT)
        self._record = json.loads((workdir / RECORD).read_text())
        unknown = {i.name: i.type for i in self._sess.get_inputs() if i.type not in ORT_TYPES}
        if unknown:
            raise EngineError(f"{self.name}: inputs of unsupported types {unknown}; supported: {sorted(ORT_TYPES)}")
        self._input_types = {i.name: ORT_TYPES[i.type] for i in self._sess.get_inputs()}
        self._ort_device = "cuda" if self.device == "cuda" else "cpu"

    def _prepare_impl(self, inputs: Mapping[str, Any]) -> Any:
        """Bind inputs once and preallocate outputs, so run() only executes the graph."""
        import onnxruntime as ort
        binding = self._sess.io_binding()
        keep = []
        for n, dtype in self._input_types.items():
            value = inputs[n].numpy() if hasattr(inputs[n], "numpy") else np.asarray(inputs[n])
            ov = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value, dtype=dtype), self._ort_device, 0)
            binding.bind_ortvalue_input(n, ov)
            keep.append(ov)
        for n in self._output_names:
            binding.bind_output(n, self._ort_device)
        self._sess.run_with_iobinding(binding)  # learn output shapes, then pin those buffers
        outputs = dict(zip(self._output_names, binding.get_outputs()))
        for n, ov in outputs.items():
            binding.bind_ortvalue_output(n, ov)
        return {"binding": binding, "outputs": outputs, "inputs": keep}

    def _run_impl(self, prepared: Any) -> Outputs:
        self._sess.run_with_iobinding(prepared["binding"])
        return prepared["outputs"]

    def _step_impl(self, inputs: Mapping[str, Any]) -> Outputs:
        """Bind host arrays or this session's own OrtValues (a KV cache fed back without a
        copy); ONNX Runtime allocates the outputs, whose shapes change every step."""
        import onnxruntime as ort
        binding = self._sess.io_binding()
        keep = []
        for n, dtype in self._input_types.items():
            value = inputs[n]
            if not isinstance(value, ort.OrtValue):
                host = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
                value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(host, dtype=dtype), self._ort_device, 0)
                keep.append(value)
            binding.bind_ortvalue_input(n, value)
        for n in self._output_names:
            binding.bind_output(n, self._ort_device)
        self._sess.run_with_iobinding(binding)
        return dict(zip(self._output_names, binding.get_outputs()))

    def _synchronize_impl(self) -> None:
        # CPU execution is synchronous; a CUDA session's outputs are synchronized by
        # run_with_iobinding before it returns (ORT synchronizes bound outputs).
        return None

    def _to_host_impl(self, value: Any) -> np.ndarray:
        return value.numpy()

    def _close_impl(self) -> None:
        self._sess = None

    def _details_impl(self) -> Mapping[str, Any]:
        return {f"onnx_{k}": v for k, v in self._record.items()}
