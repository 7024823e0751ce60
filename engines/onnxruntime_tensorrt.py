"""ONNX Runtime's TensorRT execution provider as its own engine (``onnxruntime_trt``).

It is the ``onnxruntime`` engine with another provider list, TensorRT first and the CUDA EP for
the nodes TensorRT does not take, so everything else (IO binding on device buffers, the engine's
own stream, the fallback check) is inherited, not copied. What differs:

- graphs: the stage's fp32 graph for fp32 and fp16 (``trt_fp16_enable`` lets TensorRT 10, which
  the EP links, pick fp16 kernels, as trtexec --fp16 and the ``tensorrt`` engine on TensorRT 10
  do), and for int8 the symmetric Q/DQ graph the ``tensorrt`` engine builds from too
  (engines/tensorrt_build.py ``SymmetricQuantize``, calibrated as ONNX Runtime's static int8):
  TensorRT takes only zero-point-0 int8 Q/DQ, so the stage's own uint8-activation graph would
  leave those nodes to the CUDA EP. No transformer fusion: its com.microsoft operators are not
  ONNX that TensorRT parses.
- the artifact is the stage graph as given plus TensorRT's engine and timing caches, which
  ``trt_engine_cache_path`` / ``trt_timing_cache_path`` put inside this engine's cache entry. The
  build runs the session once, so the TensorRT engine is serialized into the entry before the
  cache checksums it; the EP finds it again by the model's file name (``TRTGenerateId`` hashes
  the name, not the path, so the entry's move into place keeps it valid).
- one optimization profile for the dynamic batch, 1..MAX_BATCH tuned at OPT_BATCH, the same as
  the ``tensorrt`` engine's (engines/tensorrt_plan.py ``profile_shapes``), so the two are compared
  on equal terms; a larger batch is refused in ``prepare``.
- TF32: TensorRT allows TF32 for fp32 layers unless its TF32 builder flag is cleared (on by
  default), and the EP has no option that clears it (none among the names in
  tensorrt_execution_provider_info.cc). So this engine reports ``tf32=True`` whatever the run's
  policy: its fp32 rows belong under the fp32-tf32 equivalence row.

NEVER RUN HERE: no GPU, no onnxruntime-gpu, no libnvinfer on the machine this was written on.
Option names and spellings come from ONNX Runtime's sources and docs (see onnxruntime_providers.py);
tests/test_ort_providers.py checks the settings, the profile strings and the skip.
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import onnx_stage
from .base import BuildSpec, EngineError, EngineUnavailable
from .onnx_steps import Step, onnx_files
from .onnxruntime_engine import ARTIFACT, ORT_TYPES, OnnxRuntimeEngine
from .onnxruntime_providers import CUDA, TENSORRT, CudaProviderSettings, TensorRtProviderSettings, format_profile
from .tensorrt_build import SYMMETRIC_RECIPES, SymmetricQuantize
from .tensorrt_engine import TensorRTEngine
from .tensorrt_plan import profile_shapes

#: the TensorRT libraries ONNX Runtime 1.31's TensorRT EP links (readelf -d NEEDED of
#: libonnxruntime_providers_tensorrt.so in the onnxruntime-gpu 1.31.1 wheel); the plugin library is
#: dlopen'ed and optional
LIBNVINFER = "libnvinfer.so.10"
LIBNVONNXPARSER = "libnvonnxparser.so.10"
EP_LIBRARIES = (LIBNVINFER, LIBNVONNXPARSER)
#: the TensorRT the EP was compiled against: it passes 101401 (NV_TENSORRT_VERSION of 10.14.1) to
#: createInferBuilder_INTERNAL / createInferRuntime_INTERNAL; TensorRT promises only that a library
#: at least as new serves a client (pyproject's tensorrt extra pins the same floor)
EP_BUILT_AGAINST = (10, 14, 1)
PROFILE_RECORD = "tensorrt_ep.json"  # the profile the engine was built for, read back at load
INSTALL = ("pip install 'infermatrix[gpu,tensorrt]' on a CUDA runner (onnxruntime-gpu 1.31 and TensorRT "
           f"{'.'.join(map(str, EP_BUILT_AGAINST))}+ below 11 from tensorrt-cu13; the EP links libnvinfer.so.10, "
           "so TensorRT 11 does not serve it)")


def nv_tensorrt_version(number: int) -> tuple[int, int, int]:
    """``getInferLibVersion()``'s integer as (major, minor, patch): TensorRT 10 encodes
    major * 10000 + minor * 100 + patch (NvInferVersion.h, NV_TENSORRT_VERSION_INT)."""
    if number < 10000:
        raise ValueError(f"{number} is not a TensorRT >= 10 version number (major*10000 + minor*100 + patch)")
    return number // 10000, number // 100 % 100, number % 100


def ep_version_problem(found: tuple[int, int, int]) -> str | None:
    """Why the loaded TensorRT cannot serve ONNX Runtime's TensorRT EP (None when it can)."""
    text, need = ".".join(map(str, found)), ".".join(map(str, EP_BUILT_AGAINST))
    if found[0] != EP_BUILT_AGAINST[0]:
        return f"TensorRT {text} is loaded; ONNX Runtime's TensorRT EP links TensorRT {EP_BUILT_AGAINST[0]} ({INSTALL})"
    if found < EP_BUILT_AGAINST:
        return (f"TensorRT {text} is loaded; ONNX Runtime's TensorRT EP was built against {need} and TensorRT "
                f"serves only clients as old as the library or older ({INSTALL})")
    return None


def ep_library_problem(load: Any = ctypes.CDLL) -> str | None:
    """Why TensorRT cannot be loaded the way the EP will load it (None when it can): both linked
    libraries by soname (the wheel's ``import tensorrt`` loads them into the process first) and
    a libnvinfer at least as new as the EP was built against."""
    if importlib.util.find_spec("tensorrt") is not None:
        try:
            import tensorrt  # noqa: F401  -- the wheel's __init__ loads its bundled libraries
        except (ImportError, OSError) as exc:
            return f"tensorrt is installed but cannot be imported ({exc}); {INSTALL}"
    libs = {}
    for name in EP_LIBRARIES:
        try:
            libs[name] = load(name)  # found by soname when the wheel loaded it, else on the library path
        except OSError as exc:
            return f"{name} (TensorRT 10, which ONNX Runtime's TensorRT EP links) cannot be loaded ({exc}); {INSTALL}"
    return ep_version_problem(nv_tensorrt_version(int(libs[LIBNVINFER].getInferLibVersion())))


def graph_input_shapes(model: Path) -> dict[str, tuple[int, ...]]:
    """The graph's inputs (initializers excluded) with -1 where a dim is not fixed."""
    import onnx
    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return {i.name: tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim)
            for i in graph.input if i.name not in weights}


def trt_profile(graph: Mapping[str, tuple[int, ...]], examples: Mapping[str, tuple[int, ...]],
                opt_batch: int, max_batch: int) -> tuple[str, str, str] | None:
    """The EP's profile strings for the inputs with a dynamic dim (None when there is none: the
    EP then needs no profile). The EP wants every dynamic input named in all three strings."""
    dynamic = {n: dims for n, dims in graph.items() if -1 in dims}
    if not dynamic:
        return None
    return format_profile(profile_shapes(dynamic, examples, max_batch, opt_batch))


class OnnxRuntimeTensorRtEngine(OnnxRuntimeEngine):
    name: ClassVar[str] = "onnxruntime_trt"
    capabilities: ClassVar[Mapping[str, frozenset[str]]] = {"cuda": frozenset({"fp32", "fp16", "int8"})}
    install_hint: ClassVar[str | None] = INSTALL
    # the TensorRT wheels (metapackage or the CUDA-specific one) shape the serialized engine too
    artifact_libraries: ClassVar[tuple[str, ...]] = (*onnx_stage.STAGE_LIBRARIES, "tensorrt", "tensorrt-cu12",
                                                     "tensorrt-cu13")
    consumes: ClassVar[frozenset[str]] = frozenset({"torch", "onnx"})
    dynamic_shapes: ClassVar[bool] = False  # one profile over the batch; feature dims are fixed
    reference_for: ClassVar[frozenset[str]] = frozenset()
    int8_schemes: ClassVar[frozenset[str]] = frozenset(SYMMETRIC_RECIPES)
    fuse_transformers_for: ClassVar[frozenset[str]] = frozenset()
    execution_providers: ClassVar[Mapping[str, tuple[str, ...]]] = {"cuda": (TENSORRT, CUDA)}
    MAX_BATCH: ClassVar[int] = TensorRTEngine.MAX_BATCH
    OPT_BATCH: ClassVar[int] = TensorRTEngine.OPT_BATCH
    notice: ClassVar[str | None] = (f"onnxruntime_trt: ONNX Runtime's TensorRT EP, one profile batch 1-{MAX_BATCH} "
                                    f"tuned at {OPT_BATCH}; TensorRT may use TF32 in fp32 layers (its default, which "
                                    "the EP cannot turn off), so it is recorded as tf32=True")

    def __init__(self, precision: str, device: str, threads: int | None = None, spin: bool = True,
                 tf32: bool = False) -> None:
        super().__init__(precision, device, threads=threads, spin=spin, tf32=tf32)
        # what really happens (module docstring); the CUDA EP's fallback nodes keep the run's policy
        self.tf32 = True
        self._profile: tuple[str, str, str] | None = None

    @classmethod
    def build_recipe(cls) -> dict[str, Any]:
        return {"onnx_stage": onnx_stage.recipe(), "int8": SYMMETRIC_RECIPES, "fuse": False,
                "profile_batches": [1, cls.OPT_BATCH, cls.MAX_BATCH], "graph": "the stage graph as given"}

    def _provider_settings(self) -> tuple[Any, ...]:
        trt = TensorRtProviderSettings(fp16=self.precision == "fp16", int8=self.precision == "int8")
        return trt, CudaProviderSettings(use_tf32=self.tf32)

    def _availability_problem_impl(self) -> str | None:
        problems = [super()._availability_problem_impl(), ep_library_problem()]
        return "; ".join(p for p in problems if p) or None

    def _providers(self, entry: Path) -> list[tuple[str, dict[str, str]]]:
        trt, *rest = self.provider_settings
        if self._profile is not None:  # the profile is a fact of the build, not of the settings
            low, opt, high = self._profile
            trt = replace(trt, profile_min_shapes=low, profile_opt_shapes=opt, profile_max_shapes=high)
        for rel in (trt.engine_cache_path, trt.timing_cache_path):
            (entry / rel).mkdir(parents=True, exist_ok=True)
        stream = self._stream_option()
        return [(s.name, {**s.provider_options(entry), **stream}) for s in (trt, *rest)]

    # ---- build ----
    def _graph_step(self, spec: BuildSpec) -> Step:
        if self.precision == "int8":
            return SymmetricQuantize(onnx_stage.source(spec), spec.int8_scheme, spec.calibration)
        return onnx_stage.plan(spec, "fp32")  # fp16 is TensorRT's own choice under trt_fp16_enable

    def _build_artifact(self, spec: BuildSpec, model: Path, workdir: Path) -> None:
        # the graph as given, with its external data: ORT cannot save an optimized graph of a
        # session whose nodes TensorRT compiles, and TensorRT fuses the graph itself
        for f in onnx_files(model):
            dst = workdir / (ARTIFACT if f == model else f.relative_to(model.parent))
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
        examples = {n: tuple(spec.example_inputs[n].shape) for n in spec.input_names}
        self._profile = trt_profile(graph_input_shapes(workdir / ARTIFACT), examples, self.OPT_BATCH, self.MAX_BATCH)
        (workdir / PROFILE_RECORD).write_text(json.dumps({"profile": self._profile}, indent=1))
        sess = self._session(workdir / ARTIFACT, workdir)
        feeds = {i.name: _host(spec.example_inputs[i.name], ORT_TYPES[i.type]) for i in sess.get_inputs()}
        sess.run(None, feeds)  # the EP builds (and caches) its TensorRT engine by the first run at the latest
        del sess
        engines = sorted((workdir / self.provider_settings[0].engine_cache_path).glob("*.engine"))
        if not engines:
            raise EngineUnavailable(f"{self.name}: TensorRT took no part of {spec.name} (no engine in the cache "
                                    "after a run): the CUDA EP ran all of it, which is the onnxruntime engine's case")

    # ---- load ----
    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        # the same profile strings as at build, or the EP would rebuild the engine (its docs)
        profile = json.loads((workdir / PROFILE_RECORD).read_text())["profile"]
        self._profile = tuple(profile) if profile else None
        super()._load_impl(workdir, spec)
        self._trt_facts = {"trt_profile": self._profile,
                           "trt_engines": len(list((workdir / self.provider_settings[0].engine_cache_path).glob("*.engine")))}

    def _prepare_impl(self, inputs: Mapping[str, Any]) -> Any:
        batch = {int(v.shape[0]) for v in inputs.values()}.pop()  # the base class checked they agree
        if self._profile is not None and not 1 <= batch <= self.MAX_BATCH:
            raise EngineError(f"{self.name}: batch {batch} is outside the TensorRT profile this engine was built for "
                              f"(1..{self.MAX_BATCH}, {type(self).__name__}.MAX_BATCH)")
        return super()._prepare_impl(inputs)

    def _details_impl(self) -> Mapping[str, Any]:
        return {**super()._details_impl(), **self._trt_facts}


def _host(value: Any, dtype: Any) -> np.ndarray:
    host = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    return np.ascontiguousarray(host, dtype=dtype)
