"""The engine protocol: the base class owns lifecycle, input checks and device sync.

A backend subclasses :class:`Engine`, declares its capabilities as class data and writes
only the ``*_impl`` methods (the pattern of Polygraphy's ``BaseRunner``). Framework
imports happen inside the ``_impl`` methods so a missing package never breaks import of
this module or collection of the test suite.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .capabilities import EngineCapabilities
from .spec import DEVICES, INT8_SCHEMES, PRECISIONS, SOURCES, BuildSpec, TransformerHints  # noqa: F401  (re-exported)

#: engine outputs, in the runtime's own types (tensors, OrtValues ...), by output name
Outputs = dict[str, Any]
#: distributions that shape what a torch module becomes: the model code and the tensors
TORCH_LIBRARIES = ("torch", "torchvision", "transformers", "numpy")


class EngineError(RuntimeError):
    """An engine was used out of order or given inputs that do not match its model."""


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (missing package, missing execution provider, no GPU)."""


class Engine(EngineCapabilities, ABC):
    """One backend at one precision on one device.

    Lifecycle: ``build`` (once, into a cache directory) -> ``load`` -> ``prepare`` /
    ``run`` / ``to_host`` any number of times -> ``close``. ``run`` returns only when the
    device has finished, so wall-clock timing around it is honest.
    """

    name: ClassVar[str]
    #: device -> precisions this engine can run there
    capabilities: ClassVar[Mapping[str, frozenset[str]]]
    #: (device, precision) pairs that work but are too slow for the default matrix
    slow: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    #: importable modules this engine needs, checked lazily
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    #: what a deployment of the built artifact imports (no build tools): the cold start times these
    runtime_modules: ClassVar[tuple[str, ...]] = ("torch",)
    #: distributions whose version shapes the artifact (the model code as well as the
    #: runtime); all of them are in the cache key. Covers ``requires``.
    artifact_libraries: ClassVar[tuple[str, ...]] = TORCH_LIBRARIES
    #: False when the artifact is specialised to one batch size
    dynamic_batch: ClassVar[bool] = True
    #: True when the engine takes inputs whose non-batch dims vary between calls
    #: (``BuildSpec.dynamic_axes``) and chains its own outputs back in (``step``): what
    #: token generation with a growing KV cache needs
    dynamic_shapes: ClassVar[bool] = False
    #: model sources this engine can build from (BuildSpec.source): "torch" needs the module,
    #: "onnx" takes a user's ONNX file as given
    consumes: ClassVar[frozenset[str]] = frozenset({"torch"})
    #: sources for which this engine at fp32 is the reference every other case is compared with
    reference_for: ClassVar[frozenset[str]] = frozenset()
    #: int8 recipes it builds (engines/spec.py INT8_SCHEMES); empty when it has no int8
    int8_schemes: ClassVar[frozenset[str]] = frozenset()
    #: how to install what ``requires`` lists (shown in the skip reason when something is missing)
    install_hint: ClassVar[str | None] = None
    #: why this engine's int8 stays out of a run that did not name --int8-schemes (None: it is in)
    int8_only_when_asked: ClassVar[str | None] = None
    #: printed once in the run summary when the engine was used
    notice: ClassVar[str | None] = None
    #: True when ``load`` runs ``spec.module`` itself (eager, torch.compile): the module's
    #: weights are then this engine's memory; False when the artifact stands alone
    live_module: ClassVar[bool] = False
    #: how its device memory is measured (runner/memory.py): "torch" for engines that allocate
    #: through PyTorch's caching allocator, "process" for runtimes with their own (NVML)
    gpu_memory: ClassVar[str] = "torch"

    def __init__(self, precision: str, device: str, threads: int | None = None, spin: bool = True,
                 tf32: bool = False) -> None:
        why = self.unsupported_reason(device, precision)
        if why:
            raise EngineError(why)
        if threads is not None and threads < 1:
            raise EngineError(f"threads={threads}; expected a positive count or None (the runtime's default)")
        self.precision = precision
        self.device = device
        #: intra-op threads for runtimes configured per session (ONNX Runtime, OpenVINO);
        #: PyTorch's pool is process-wide and set by the caller (torch.set_num_threads)
        self.threads = threads
        #: whether idle worker threads may spin-wait for the next call (runtimes that have
        #: the knob). Off when the engine shares the cores with another runtime in one
        #: process, e.g. a vision stage followed by a PyTorch LM: spinning steals their CPU.
        self.spin = spin
        #: the run's TF32 policy for fp32 math on CUDA (off by default): an engine that can use
        #: TF32 (cuBLAS/cuDNN, ORT's use_tf32, TensorRT's TF32 flag) follows it; it is recorded
        #: in settings(), and the fp32-tf32 equivalence row applies only when it was on
        self.tf32 = bool(tf32) and device == "cuda"
        self._spec: dict[str, tuple[tuple[int, ...], str]] | None = None
        self._output_names: tuple[str, ...] = ()
        self._loaded = False
        self._closed = False

    def settings(self) -> dict[str, Any]:
        """This engine's typed settings (provider options, compile mode, TF32 ...) as plain
        data: part of the cache key and of each case's extra_info (``engine_settings``)."""
        base = {"tf32": self.tf32} if self.device == "cuda" else {}
        return {**base, **self._settings_impl()}

    def upstream_key(self, spec: BuildSpec) -> str | None:
        """The key of the shared artifact this engine builds from (the ONNX stage's graph), so
        the engine's own cache key changes whenever that graph would (calibration data, an
        onnx: file's external data ...); None when it builds from the module alone."""
        return self._upstream_key_impl(spec)

    def cuda_stream(self) -> Any:
        """The torch.cuda.Stream this engine's work runs on, for CUDA-event timing (None:
        torch's current stream, where the torch engines run)."""
        return self._cuda_stream_impl() if self.device == "cuda" else None

    def notice_text(self) -> str | None:
        """Printed once in the run summary and recorded in the case's extra_info (class
        ``notice`` unless this engine instance says more, e.g. only at one precision)."""
        return self.notice

    def availability_problem(self) -> str | None:
        """Why this engine cannot run here right now (None when it can)."""
        missing = self.missing_requirements()
        if missing:
            hint = self.install_hint or "pip install " + " ".join(missing)
            return f"{self.name} needs {missing}, which are not installed ({hint})"
        return self._availability_problem_impl()

    # ---- lifecycle owned by the base class ----
    def build(self, spec: BuildSpec, workdir: Path) -> None:
        """Export / compile / quantize ``spec.module`` into ``workdir`` (an empty dir)."""
        self._check_available()
        workdir = Path(workdir)
        if not workdir.is_dir():
            raise EngineError(f"build workdir {workdir} does not exist or is not a directory")
        self._build_impl(spec, workdir)

    def load(self, workdir: Path, spec: BuildSpec) -> None:
        """Load the artifact from ``workdir``. ``spec`` gives the input/output contract;
        engines whose artifact is not standalone (eager, torch.compile) also use its module."""
        self._check_available()
        if self._closed:
            raise EngineError(f"{self.name}: load() after close(); create a new engine")
        if spec.dynamic_axes and not self.dynamic_shapes:
            raise EngineError(f"{self.name} takes fixed non-batch shapes only (dynamic_shapes=False); "
                              f"{spec.name} varies {dict(spec.dynamic_axes)}")
        # a dynamic axis is recorded as None: any length is accepted there
        self._spec = {n: (tuple(None if axis + 1 in spec.dynamic_axes.get(n, {}) else d
                                for axis, d in enumerate(spec.example_inputs[n].shape[1:])),
                          str(spec.example_inputs[n].dtype).replace("torch.", ""))
                      for n in spec.input_names}
        self._output_names = spec.output_names
        self._load_impl(Path(workdir), spec)
        self._loaded = True

    def prepare(self, inputs: Mapping[str, Any]) -> Any:
        """Move and convert host inputs once, outside any timed region."""
        self._check_loaded("prepare")
        self._check_inputs(inputs)
        return self._prepare_impl(inputs)

    def run(self, prepared: Any) -> Outputs:
        """One inference on prepared inputs; returns after the device is done."""
        self._check_loaded("run")
        out = self._run_impl(prepared)
        self._synchronize_impl()
        return out

    def enqueue(self, prepared: Any) -> Outputs:
        """``run`` without its final synchronization: the device work is queued (on CUDA), so a
        timer can record an event after it (scenarios/gpu_timing.py); call ``synchronize`` next."""
        self._check_loaded("enqueue")
        return self._run_impl(prepared)

    def synchronize(self) -> None:
        """Wait for this engine's queued device work."""
        self._check_loaded("synchronize")
        self._synchronize_impl()

    def step(self, inputs: Mapping[str, Any]) -> Outputs:
        """One call on inputs that may be this engine's own previous outputs (a KV cache fed
        back), which stay where the runtime keeps them; returns after the device is done.

        Unlike ``prepare``/``run`` nothing is preallocated: shapes change from call to call.
        """
        self._check_loaded("step")
        if not self.dynamic_shapes:
            raise EngineError(f"{self.name}: step() needs an engine with dynamic_shapes; this one is fixed-shape")
        self._check_inputs(inputs, dtypes=False)
        out = self._step_impl(inputs)
        self._synchronize_impl()
        return out

    def runtime_call(self, prepared: Any) -> Callable[[], Any]:
        """The bare runtime call behind ``run`` (no checks), to measure harness overhead."""
        self._check_loaded("runtime_call")
        impl, sync = self._run_impl, self._synchronize_impl

        def call() -> None:
            impl(prepared)
            sync()
        return call

    def to_host(self, outputs: Outputs, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Outputs (all, or ``names``) as float32 numpy arrays on the host, for comparison."""
        wanted = tuple(names) if names is not None else self._output_names
        missing = [n for n in wanted if n not in outputs or n not in self._output_names]
        if missing:
            raise EngineError(f"{self.name}: outputs {missing} requested; it returned {sorted(outputs)} "
                              f"of the model's {list(self._output_names)}")
        # copy: runtimes reuse output buffers (IO binding, infer requests) on the next run
        return {n: np.array(self._to_host_impl(outputs[n]), dtype=np.float32, copy=True) for n in wanted}

    def details(self) -> dict[str, Any]:
        """Engine-specific facts for a benchmark's extra_info (exporter, compile times ...)."""
        self._check_loaded("details")
        facts = dict(self._details_impl())
        if self.precision == "int8" and "onnx_int8_scheme" in facts:
            # an engine that runs the shared ONNX stage's int8 graph (ONNX Runtime, TensorRT); NNCF
            # (OpenVINO) and torchao (torch) name their own recipe in _details_impl
            facts.setdefault("int8_recipe", f"ONNX Runtime quantizer, shared ONNX graph ({facts['onnx_int8_scheme']})")
        return facts

    def close(self) -> None:
        if not self._closed:
            self._close_impl()
        self._closed = True
        self._loaded = False

    # ---- checks ----
    def _check_available(self) -> None:
        problem = self.availability_problem()
        if problem:
            raise EngineUnavailable(problem)

    def _check_loaded(self, what: str) -> None:
        if self._closed:
            raise EngineError(f"{self.name}: {what}() after close()")
        if not self._loaded:
            raise EngineError(f"{self.name}: {what}() before load(); call build() and load() first")

    def _check_inputs(self, inputs: Mapping[str, Any], dtypes: bool = True) -> None:
        assert self._spec is not None
        if set(inputs) != set(self._spec):
            raise EngineError(f"{self.name}: got inputs {sorted(inputs)}; expected {sorted(self._spec)}")
        shapes = {n: _shape(inputs[n]) for n in self._spec}
        batch = {s[0] for s in shapes.values()}
        if len(batch) != 1:
            raise EngineError(f"{self.name}: inputs disagree on batch size: {sorted(batch)}")
        for n, (shape, dtype) in self._spec.items():
            got_shape = shapes[n][1:]
            fits = len(got_shape) == len(shape) and all(e is None or e == g for e, g in zip(shape, got_shape))
            got_dtype = str(inputs[n].dtype).replace("torch.", "") if dtypes else dtype
            if not fits or got_dtype != dtype:
                want = ",".join("*" if d is None else str(d) for d in shape)
                raise EngineError(f"{self.name}: input {n!r} is {got_dtype}[B,{','.join(map(str, got_shape))}]; "
                                  f"expected {dtype}[B,{want}] (* = any length)")

    # ---- what a backend writes ----
    def _availability_problem_impl(self) -> str | None:
        if self.device == "cuda":
            import torch
            if not torch.cuda.is_available():
                return "CUDA is not available on this machine (torch.cuda.is_available() is False)"
        return None

    @abstractmethod
    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None: ...

    @abstractmethod
    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None: ...

    @abstractmethod
    def _prepare_impl(self, inputs: Mapping[str, Any]) -> Any: ...

    @abstractmethod
    def _run_impl(self, prepared: Any) -> Outputs: ...

    def _step_impl(self, inputs: Mapping[str, Any]) -> Outputs:
        return self._run_impl(self._prepare_impl(inputs))

    def _synchronize_impl(self) -> None:
        if self.device == "cuda":
            import torch
            torch.cuda.synchronize()

    def _to_host_impl(self, value: Any) -> np.ndarray:
        return value.detach().float().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)

    def _details_impl(self) -> Mapping[str, Any]:
        return {}

    def _settings_impl(self) -> Mapping[str, Any]:
        """A backend's typed settings: keep a frozen dataclass, return ``dataclasses.asdict`` of it."""
        return {}

    def _cuda_stream_impl(self) -> Any:
        return None

    def _upstream_key_impl(self, spec: BuildSpec) -> str | None:
        return None

    def _close_impl(self) -> None:
        """Release runtime resources; default drops references."""


def _shape(value: Any) -> tuple[int, ...]:
    """A tensor's / array's / OrtValue's shape (OrtValue.shape is a method)."""
    shape = value.shape
    return tuple(int(d) for d in (shape() if callable(shape) else shape))
