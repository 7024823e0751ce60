"""ONNX Runtime: the shared ONNX stage's graph, ORT_ENABLE_ALL, optimized graph cached, IO binding.

The graph comes from engines/onnx_stage.py (export or the user's file, transformer fusion for
int8, the model's int8 scheme, fp16 with fp32 I/O), cached once and shared with the other ONNX
engines; this engine's own artifact is ONNX Runtime's optimized graph of it. What the stage
did is kept in ``build.json`` and reported by ``details()`` as ``onnx_*``.

On CUDA (the ``gpu`` extra: onnxruntime-gpu) the CUDA EP runs the stage's fp32 graph, or its
fp16 graph with fp32 I/O, with the options of ``CudaProviderSettings`` (TF32 explicit, since the
EP's own default is on). Inputs are copied to the GPU once in ``prepare`` and the outputs are
preallocated there and bound with IO binding, so ``run`` only executes the graph. The session
runs on a torch.cuda.Stream this engine owns (``user_compute_stream``), which ``cuda_stream()``
returns for CUDA-event timing. A provider that did not load is a skip with the reason
(engines/onnxruntime_providers.py ``provider_fallback``), never a CPU number filed under cuda.

NEVER RUN HERE: the CUDA path was written from ONNX Runtime's sources and docs (provider option
names in cuda_execution_provider_info.cc, ``user_compute_stream`` from onnxruntime PR 19229, the
run-end synchronization in onnxruntime_run_options_config_keys.h) on a machine with the CPU wheel
and no GPU; tests/test_ort_providers.py checks what runs without one.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import onnx_stage
from .base import BuildSpec, Engine, EngineError, EngineUnavailable, Outputs
from .onnx_steps import Step
from .onnxruntime_placement import RECORD_KEY, assignments, cpu_placement, output_types
from .onnxruntime_providers import CPU, CUDA, CudaProviderSettings, native_stderr, options_not_applied, provider_fallback

ARTIFACT = "model.onnx"
RECORD = "build.json"
ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
             "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
#: "0" (ONNX Runtime's default) ends Run() with a cudaStreamSynchronize of the CUDA EP's compute
#: stream (include/onnxruntime/core/session/onnxruntime_run_options_config_keys.h,
#: kOrtRunOptionsConfigDisableSynchronizeExecutionProviders); on CUDA it is set to "1" so Run()
#: returns with the work queued and run() waits on the engine's stream itself
SYNC_RUN_OPTION = ("disable_synchronize_execution_providers", "0")
GPU_INSTALL = ("the CUDA build is pip install 'infermatrix[gpu]' (onnxruntime-gpu; uninstall the CPU onnxruntime "
               "first: both wheels install the same onnxruntime package)")


class OnnxRuntimeEngine(Engine):
    name: ClassVar[str] = "onnxruntime"
    capabilities: ClassVar[Mapping[str, frozenset[str]]] = {
        "cpu": frozenset({"fp32", "int8"}),
        "cuda": frozenset({"fp32", "fp16"}),
    }
    requires: ClassVar[tuple[str, ...]] = ("torch", "onnx", "onnxruntime")
    runtime_modules: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    install_hint: ClassVar[str | None] = ("pip install 'infermatrix[cpu]'; on a CUDA machine 'infermatrix[gpu]' "
                                          "instead (onnxruntime and onnxruntime-gpu cannot be installed together)")
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
    #: execution providers by device, in priority order (the first is the one measured)
    execution_providers: ClassVar[Mapping[str, tuple[str, ...]]] = {"cpu": (CPU,), "cuda": (CUDA,)}

    def __init__(self, precision: str, device: str, threads: int | None = None, spin: bool = True,
                 tf32: bool = False) -> None:
        super().__init__(precision, device, threads=threads, spin=spin, tf32=tf32)
        #: typed options of the GPU providers in priority order (none on the CPU, whose
        #: session options are the engine's threads and spin)
        self.provider_settings: tuple[Any, ...] = self._provider_settings()
        self._stream: Any = None  # the torch.cuda.Stream the session runs on (CUDA only)
        self._sess: Any = None

    @classmethod
    def build_recipe(cls) -> dict[str, Any]:
        return {"fuse_transformers_for": sorted(cls.fuse_transformers_for), "onnx_stage": onnx_stage.recipe()}

    def _provider_settings(self) -> tuple[Any, ...]:
        return (CudaProviderSettings(use_tf32=self.tf32),) if self.device == "cuda" else ()

    def _settings_impl(self) -> Mapping[str, Any]:
        return {s.name: asdict(s) for s in self.provider_settings}

    def _availability_problem_impl(self) -> str | None:
        import onnxruntime as ort
        problems = [super()._availability_problem_impl()]  # CUDA on this machine at all
        available = ort.get_available_providers()
        missing = [p for p in self.execution_providers[self.device] if p not in available]
        if missing:
            problems.append(f"onnxruntime {ort.__version__} has no {', '.join(missing)} (it has "
                            f"{', '.join(available)}); {GPU_INSTALL}")
        return "; ".join(p for p in problems if p) or None

    # ---- sessions ----
    def _providers(self, entry: Path) -> list[tuple[str, dict[str, str]]]:
        """(provider, options) in priority order for a session whose cache entry is ``entry``."""
        if self.device == "cpu":
            return [(CPU, {})]
        return [(s.name, {**s.provider_options(entry), **self._stream_option()}) for s in self.provider_settings]

    def _stream_option(self) -> dict[str, str]:
        """ONNX Runtime runs on a stream this engine owns (``user_compute_stream``: CUDA EP
        onnxruntime PR 19229, TensorRT EP PR 20168), so CUDA events recorded on it time exactly
        this engine's kernels. Not the default stream: ORT reads stream 0 as "none given"
        (PR 19619). The address is not a setting: it is in no cache key."""
        import torch
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=torch.device("cuda", self.provider_settings[0].device_id))
        return {"user_compute_stream": str(self._stream.cuda_stream)}

    def _session(self, model: Path, entry: Path, optimized_to: Path | None = None) -> Any:
        if self.device == "cuda":
            # onnxruntime-gpu's own docstring: importing torch first loads the CUDA and cuDNN
            # libraries it links (the same CUDA 13 builds); otherwise onnxruntime.preload_dlls()
            import torch  # noqa: F401
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        opts.intra_op_num_threads = self.threads or 0  # 0: ONNX Runtime's default
        if not self.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if optimized_to is not None:
            opts.optimized_model_filepath = str(optimized_to)
        if self.device == "cuda":  # which nodes each EP took (engines/onnxruntime_placement.py)
            opts.add_session_config_entry(RECORD_KEY, "1")
        providers = self._providers(entry)
        with warnings.catch_warnings(record=True) as said, native_stderr() as logged:
            warnings.simplefilter("always")
            # enable_fallback=0: a provider that fails while starting raises instead of ONNX
            # Runtime quietly retrying on the CPU (onnxruntime_inference_collection.py)
            sess = ort.InferenceSession(str(model), sess_options=opts, providers=providers, enable_fallback=0)
        reason = provider_fallback([name for name, _ in providers], sess.get_providers(),
                                   [*(str(w.message) for w in said), *logged])
        if reason:
            raise EngineUnavailable(f"{self.name} on {self.device}: {reason}")
        for w in said:  # nothing went wrong: pass ONNX Runtime's other warnings on
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        applied = sess.get_provider_options()
        for settings, (name, asked) in zip(self.provider_settings, providers):
            wrong = options_not_applied(asked, applied.get(name, {}), settings.checked)
            if wrong:
                raise EngineError(f"{self.name}: ONNX Runtime reports {name} options other than asked "
                                  f"(option: (asked, applied)): {wrong}")
        return sess

    # ---- build ----
    def _upstream_key_impl(self, spec: BuildSpec) -> str | None:
        return self._graph_step(spec).key

    def _graph_step(self, spec: BuildSpec) -> Step:
        """The ONNX stage chain this engine runs for its precision."""
        return onnx_stage.plan(spec, self.precision, fuse=self.precision in self.fuse_transformers_for,
                               use_gpu=self.device == "cuda")

    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        with onnx_stage.open_stage(self._graph_step(spec), spec.store, workdir) as built:
            self._build_artifact(spec, built.model, workdir)
        (workdir / RECORD).write_text(json.dumps(built.record, indent=1))

    def _build_artifact(self, spec: BuildSpec, model: Path, workdir: Path) -> None:
        """This engine's own artifact from the stage's graph: ONNX Runtime applies every graph
        optimization once (for the provider it runs on) and the optimized graph is kept."""
        self._session(model, workdir, optimized_to=workdir / ARTIFACT)

    # ---- run ----
    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        import onnxruntime as ort
        self._sess = self._session(workdir / ARTIFACT, workdir)
        self._placement: dict[str, Any] = {}
        if self.device == "cuda":  # nodes that left the GPU: recorded always, warned when they compute
            self._placement = cpu_placement(assignments(self._sess), output_types(workdir / ARTIFACT))
            if "ort_cpu_fallback" in self._placement:
                warnings.warn(f"{self.name} {self.precision} on cuda: {self._placement['ort_cpu_fallback']}", stacklevel=2)
        self._record = json.loads((workdir / RECORD).read_text())
        unknown = {i.name: i.type for i in self._sess.get_inputs() if i.type not in ORT_TYPES}
        if unknown:
            raise EngineError(f"{self.name}: inputs of unsupported types {unknown}; supported: {sorted(ORT_TYPES)}")
        self._input_types = {i.name: ORT_TYPES[i.type] for i in self._sess.get_inputs()}
        self._ort_device = "cuda" if self.device == "cuda" else "cpu"
        self._device_id = self.provider_settings[0].device_id if self.provider_settings else 0
        self._run_options = ort.RunOptions()
        # On CUDA, Run() must return once the work is queued (not after ORT's own wait), so that a
        # CUDA event recorded after it measures GPU time; run() then waits on the engine's stream.
        self._run_options.add_run_config_entry(SYNC_RUN_OPTION[0], "1" if self.device == "cuda" else "0")

    def _device_value(self, value: Any, dtype: Any) -> Any:
        """A host array as an OrtValue where the session runs (a copy on the GPU, none on the CPU)."""
        import onnxruntime as ort
        host = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(host, dtype=dtype), self._ort_device,
                                                self._device_id)

    def _prepare_impl(self, inputs: Mapping[str, Any]) -> Any:
        """Copy inputs to the device once and preallocate the outputs there, so run() only
        executes the graph: no host copy, no allocation inside the timed call."""
        binding = self._sess.io_binding()
        keep = []
        for n, dtype in self._input_types.items():
            ov = self._device_value(inputs[n], dtype)
            binding.bind_ortvalue_input(n, ov)
            keep.append(ov)
        for n in self._output_names:
            binding.bind_output(n, self._ort_device, self._device_id)
        self._sess.run_with_iobinding(binding, self._run_options)  # learn output shapes, then pin those buffers
        outputs = dict(zip(self._output_names, binding.get_outputs()))
        for n, ov in outputs.items():
            binding.bind_ortvalue_output(n, ov)
        return {"binding": binding, "outputs": outputs, "inputs": keep}

    def _run_impl(self, prepared: Any) -> Outputs:
        self._sess.run_with_iobinding(prepared["binding"], self._run_options)
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
                value = self._device_value(value, dtype)
                keep.append(value)
            binding.bind_ortvalue_input(n, value)
        for n in self._output_names:
            binding.bind_output(n, self._ort_device, self._device_id)
        self._sess.run_with_iobinding(binding, self._run_options)
        return dict(zip(self._output_names, binding.get_outputs()))

    def _synchronize_impl(self) -> None:
        # The CPU EP is synchronous. On CUDA, Run() returns with the work queued on the engine's
        # own compute stream (SYNC_RUN_OPTION disabled there): this wait is what makes run() return
        # only when the device is done.
        if self._stream is not None:
            self._stream.synchronize()

    def _cuda_stream_impl(self) -> Any:
        return self._stream

    def _to_host_impl(self, value: Any) -> np.ndarray:
        return value.numpy()

    def _close_impl(self) -> None:
        self._sess = None  # the session before the stream it runs on
        self._stream = None

    def _details_impl(self) -> Mapping[str, Any]:
        return {**{f"onnx_{k}": v for k, v in self._record.items()}, "ort_providers": self._sess.get_providers(),
                **self._placement}
