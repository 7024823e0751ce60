"""TensorRT (optional extra ``tensorrt``): the ONNX stage's graph built into a plan, run on its own stream.

NEVER RUN HERE: no machine this was written on has a GPU or can import ``tensorrt`` (its
libraries were not available on the development machine). The code follows the TensorRT 10.16 / 11.1
Python bindings and samples (NVIDIA/TensorRT python/src/infer/pyCore.cpp,
samples/python/introductory_parser_samples/onnx_resnet50.py), Polygraphy's TensorRT loader and
runner, and the "Migrating from TensorRT 10.x to 11.x" guide; what the tests check without a
GPU is in tests/test_tensorrt.py (version dispatch, profile, settings, int8 graph, the skip).

Build: the graph comes from engines/onnx_stage.py (the export or the user's file; the fp16
graph with fp32 I/O on TensorRT 11; a symmetric Q/DQ graph for int8, engines/tensorrt_build.py),
which engines/tensorrt_plan.py ``build_plan_for`` picks from the installed major version with
the network and builder flags. One optimization profile covers batch 1..MAX_BATCH. The plan and
its timing cache live in this engine's cache entry, keyed (``settings()``) by TensorRT version,
GPU name, compute capability and driver.

Run: each prepared input set owns its I/O (torch CUDA tensors: inputs copied once, outputs sized
from the shapes) and its own ``IExecutionContext``, whose shapes and tensor addresses are set once in
``prepare``: a run never rebinds, so LoadGen cycling through its samples times ``execute_async_v3``
alone. TensorRT's contexts are not safe to use from two threads at once, and threads must not share
one stream either (one thread's synchronize would wait for the other's work), so each thread that
runs the engine gets its own non-default stream (``cuda_stream()`` answers for the calling thread),
and a context enqueued from two threads at the same time is refused (prepare one input set per
thread; the load scenarios do). ``run`` synchronizes the calling thread's stream.
"""
from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from . import onnx_stage
from .base import BuildSpec, Engine, EngineError, EngineUnavailable, Outputs
from .tensorrt_build import PLAN, SYMMETRIC_RECIPES, TIMING_CACHE, build_serialized_plan, gpu_facts, stage_step, \
    trt_logger
from .tensorrt_plan import TORCH_DTYPES, TensorRTSettings, batch_limits, build_plan_for, tensorrt_settings, \
    version_problem

RECORD = "build.json"  # what the ONNX stage and the builder did, reported by details()
INSTALL = "pip install 'infermatrix[tensorrt]'; on a CUDA 13 runner: pip install tensorrt-cu13"


@dataclass(eq=False)
class Bound:
    """One prepared input set: device inputs, preallocated outputs and the execution context they
    are bound to (shapes and addresses set once, in ``prepare``)."""

    inputs: dict[str, Any]
    outputs: dict[str, Any]
    context: Any
    #: held while the context is being enqueued: a second thread finding it held is refused
    busy: threading.Lock = field(default_factory=threading.Lock)


class StreamPerThread:
    """One CUDA stream for each thread that runs the engine, made on the thread's first call."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._local = threading.local()

    def here(self) -> Any:
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = self._make()
        return stream


def enqueue_bound(bound: Bound, stream_handle: int) -> bool:
    """``execute_async_v3`` of ``bound``'s own context on ``stream_handle``; refuses a context that
    another thread is enqueueing right now (TensorRT contexts are not thread-safe)."""
    if bound.context is None:
        raise EngineError("tensorrt: this prepared input set belongs to a closed engine; prepare it again")
    if not bound.busy.acquire(blocking=False):
        raise EngineError("tensorrt: two threads ran one prepared input set at once; its execution context is "
                          "not thread-safe: prepare one input set per thread")
    try:
        return bool(bound.context.execute_async_v3(stream_handle))
    finally:
        bound.busy.release()


class TensorRTEngine(Engine):
    name: ClassVar[str] = "tensorrt"
    capabilities: ClassVar[Mapping[str, frozenset[str]]] = {"cuda": frozenset({"fp32", "fp16", "int8"})}
    # onnxruntime: the stage's fp16 rewrite and int8 quantizer are ONNX Runtime's tools
    # (onnxruntime-gpu provides the same module on a GPU runner)
    requires: ClassVar[tuple[str, ...]] = ("torch", "onnx", "onnxruntime", "tensorrt")
    runtime_modules: ClassVar[tuple[str, ...]] = ("tensorrt", "torch")  # torch: its I/O tensors and streams
    # pip installs TensorRT as the metapackage or as the CUDA-specific package directly; the
    # runtime's own tensorrt.__version__ is in settings() as well
    artifact_libraries: ClassVar[tuple[str, ...]] = (*onnx_stage.STAGE_LIBRARIES, "tensorrt", "tensorrt-cu12",
                                                     "tensorrt-cu13")
    consumes: ClassVar[frozenset[str]] = frozenset({"torch", "onnx"})
    int8_schemes: ClassVar[frozenset[str]] = frozenset(SYMMETRIC_RECIPES)
    # TensorRT allocates its weights and activation memory with cudaMalloc, outside PyTorch's
    # caching allocator: only NVML's per-process figure sees all of it
    gpu_memory: ClassVar[str] = "process"
    install_hint: ClassVar[str | None] = INSTALL
    # dynamic_batch: the engine's cache entry is shared by every batch size of a run, and the
    # spec does not carry the run's batch list, so the one profile spans 1..MAX_BATCH (a larger
    # batch is refused in prepare) and kernels are tuned at OPT_BATCH, the default matrix's largest
    MAX_BATCH: ClassVar[int] = 64
    OPT_BATCH: ClassVar[int] = 8
    notice: ClassVar[str | None] = (f"tensorrt: one optimization profile per plan, batch 1-{MAX_BATCH} tuned at "
                                    f"batch {OPT_BATCH}; larger batches are refused")

    @classmethod
    def build_recipe(cls) -> dict[str, Any]:
        return {"onnx_stage": onnx_stage.recipe(), "int8": SYMMETRIC_RECIPES, "fuse": False,
                "builder": "TensorRT defaults (optimization level, workspace = device memory)",
                "timing_cache": "empty per build, kept in the entry"}

    def _availability_problem_impl(self) -> str | None:
        problem = super()._availability_problem_impl()  # CUDA present?
        if problem:
            return problem
        try:
            import tensorrt as trt
        except (ImportError, OSError) as exc:  # the wheel is there but its libnvinfer is not
            return f"tensorrt is installed but cannot be imported ({exc}); {INSTALL}"
        return version_problem(trt.__version__)

    # ---- settings: what the plan is specific to (cache key, extra_info) ----
    @cached_property
    def _trt_settings(self) -> TensorRTSettings:
        problem = self.availability_problem()
        if problem:
            raise EngineUnavailable(problem)
        import tensorrt as trt
        gpu, capability, driver = gpu_facts()
        return tensorrt_settings(trt.__version__, self.precision, self.tf32, gpu, capability, driver,
                                 self.OPT_BATCH, self.MAX_BATCH)

    def _settings_impl(self) -> Mapping[str, Any]:
        return asdict(self._trt_settings)

    def _upstream_key_impl(self, spec: BuildSpec) -> str | None:
        import tensorrt as trt
        return stage_step(spec, build_plan_for(trt.__version__, self.precision, self.tf32)).key

    # ---- build ----
    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        import tensorrt as trt
        import torch
        torch.cuda.init()  # TensorRT runs in the CUDA context torch makes current
        choice = build_plan_for(trt.__version__, self.precision, self.tf32)
        examples = {n: tuple(spec.example_inputs[n].shape) for n in spec.input_names}
        with onnx_stage.open_stage(stage_step(spec, choice), spec.store, workdir) as built:
            facts = build_serialized_plan(built.model, choice, examples, self.OPT_BATCH, self.MAX_BATCH, workdir)
        record = {"stage": dict(built.record), "tensorrt": {**facts, "version": trt.__version__, **asdict(choice),
                                                            "plan_bytes": (workdir / PLAN).stat().st_size,
                                                            "timing_cache_bytes": (workdir / TIMING_CACHE).stat().st_size}}
        (workdir / RECORD).write_text(json.dumps(record, indent=1))

    # ---- load ----
    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        import tensorrt as trt
        import torch
        torch.cuda.init()
        logger = trt_logger()
        logger.take()
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine((workdir / PLAN).read_bytes())
        if self._engine is None:
            raise EngineError(f"tensorrt could not load {workdir / PLAN}: " + "; ".join(logger.take() or ["no message"]))
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: getattr(torch, TORCH_DTYPES[self._engine.get_tensor_dtype(n).name]) for n in names}
        self._device = torch.device("cuda", torch.cuda.current_device())
        # non-default streams: execute_async_v3 on the legacy default stream makes TensorRT add
        # synchronizations; one per thread (module docstring), and CUDA events record on the caller's
        self._streams = StreamPerThread(lambda: torch.cuda.Stream(self._device))
        self._bounds: weakref.WeakSet[Bound] = weakref.WeakSet()
        self._record = json.loads((workdir / RECORD).read_text())
        self._batches = batch_limits(self._record["tensorrt"]["profile"])

    def _cuda_stream_impl(self) -> Any:
        return self._streams.here()

    # ---- prepare / run ----
    def _prepare_impl(self, inputs: Mapping[str, Any]) -> Any:
        import torch
        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise EngineError(f"tensorrt: the plan's inputs {missing} were not given")
        batch = int(next(iter(inputs.values())).shape[0])
        lo, hi = self._batches
        if not lo <= batch <= hi:
            raise EngineError(f"tensorrt: batch {batch} is outside the plan's optimization profile {lo}..{hi} "
                              f"(TensorRTEngine.MAX_BATCH)")
        stream = self._streams.here()
        context = self._engine.create_execution_context()
        if context is None:
            raise EngineError("tensorrt: create_execution_context failed: " + "; ".join(trt_logger().take() or ["no message"]))
        with torch.cuda.stream(stream):
            # host -> device once, here, outside any timed region; the dtype is the plan's own
            # (TensorRT >= 10 takes int64 token ids as they are)
            device_inputs = {n: torch.as_tensor(inputs[n]).to(self._device, self._dtypes[n]).contiguous()
                             for n in self._inputs}
            self._set_shapes(context, device_inputs)
            shapes = {n: tuple(context.get_tensor_shape(n)) for n in self._outputs}
            unknown = {n: s for n, s in shapes.items() if any(d < 0 for d in s)}
            if unknown:  # data-dependent shapes need an IOutputAllocator, which this engine does not wire
                raise EngineError(f"tensorrt: output shapes depend on the data: {unknown}")
            outputs = {n: torch.empty(s, dtype=self._dtypes[n], device=self._device) for n, s in shapes.items()}
        for n, t in (*device_inputs.items(), *outputs.items()):  # bound once: a run never rebinds
            if not context.set_tensor_address(n, t.data_ptr()):
                raise EngineError(f"tensorrt: could not bind tensor {n!r}: " + "; ".join(trt_logger().take() or ["no message"]))
        stream.synchronize()
        bound = Bound(device_inputs, outputs, context)
        self._bounds.add(bound)
        return bound

    @staticmethod
    def _set_shapes(context: Any, device_inputs: Mapping[str, Any]) -> None:
        for n, t in device_inputs.items():
            if not context.set_input_shape(n, tuple(t.shape)):
                raise EngineError(f"tensorrt: the plan refused shape {tuple(t.shape)} for input {n!r}: "
                                  + "; ".join(trt_logger().take() or ["no message"]))
        unset = context.infer_shapes()  # names of inputs whose shapes are still unknown
        if unset:
            raise EngineError(f"tensorrt: input shapes not specified: {list(unset)}")

    def _run_impl(self, prepared: Any) -> Outputs:
        if not enqueue_bound(prepared, self._streams.here().cuda_stream):
            raise EngineError("tensorrt: execute_async_v3 failed: " + "; ".join(trt_logger().take() or ["no message"]))
        return prepared.outputs

    def _synchronize_impl(self) -> None:
        self._streams.here().synchronize()

    # ---- facts and teardown ----
    def _details_impl(self) -> Mapping[str, Any]:
        stage, built = self._record["stage"], self._record["tensorrt"]
        return {**{f"onnx_{k}": v for k, v in stage.items()}, **{f"tensorrt_{k}": v for k, v in built.items()}}

    def _close_impl(self) -> None:
        # contexts before their engine, the engine before its runtime
        for bound in list(self._bounds):
            bound.context = None
        self._engine = None
        self._runtime = None

