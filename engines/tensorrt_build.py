"""The TensorRT side of the ``tensorrt`` engine's build: its int8 graph, the builder, the GPU facts.

- ``SymmetricQuantize``: an ONNX stage step (engines/onnx_steps.py) giving the static int8
  schemes in the form TensorRT parses. TensorRT quantizes symmetrically only (signed int8,
  zero point 0: "Working with Quantized Types", TensorRT 11 docs; the parser rejects other zero
  points), while the stage's own static recipe has asymmetric uint8 activations. So this step
  calibrates exactly as ONNX Runtime's static int8 does (same batches, MinMax, per-tensor or
  per-channel weights, ``quant_pre_process`` first) and differs in two settings only: int8
  activations with ``ActivationSymmetric`` (ONNX Runtime's quantize_static docstring: "use
  symmetric QuantType.QInt8 for both activations and weights when targeting GPU/TRT"), and
  float biases (``QuantizeBias=False``): TensorRT's parser dequantizes INT8/FP8/INT4 only
  (onnx-tensorrt docs/operators.md), not the int32 biases ONNX Runtime writes by default, and
  fuses the bias into the int8 kernel itself. Cached and shared through the stage like any step.
- ``stage_step``: which stage graph a ``BuildChoice`` parses.
- ``build_serialized_plan``: OnnxParser -> builder config (flags, one optimization profile, a
  timing cache) -> ``build_serialized_network``; parser and builder errors raised with their text.
- ``gpu_facts``: GPU name, compute capability and driver for the cache key.

NEVER RUN HERE: everything that imports ``tensorrt`` was written from the TensorRT 10.16 / 11.1
Python bindings and Polygraphy (tools/Polygraphy/polygraphy/backend/trt/loader.py, config.py)
and has not run on a GPU; the int8 step and ``stage_step`` run in the tests on the CPU.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from . import onnx_stage
from .onnx_prepare import prepare
from .onnx_quantize import CALIBRATED, RECIPES, CalibrationReader, int8_ops
from .onnx_shapes import build_folder, preprocess_for_static
from .onnx_steps import Quantize, Step
from .spec import BuildSpec
from .tensorrt_plan import BuildChoice, driver_from_proc, profile_shapes

PLAN = "model.plan"
TIMING_CACHE = "timing.cache"
#: the stage's static recipes with signed, symmetric activations (TensorRT's only int8 form);
#: derived from RECIPES, so a change to the stage's calibration changes this key too
SYMMETRIC_RECIPES = {scheme: {**RECIPES[scheme], "activation_type": "QInt8", "activation_symmetric": True,
                              "quantize_bias": False} for scheme in sorted(CALIBRATED)}
log = logging.getLogger("infermatrix.tensorrt")


class TensorRTError(RuntimeError):
    """TensorRT refused a model: parser or builder errors, with TensorRT's own messages."""


@dataclass(frozen=True)
class SymmetricQuantize(Quantize):
    """Static int8 as Q/DQ pairs with zero points 0 (int8 weights and activations)."""

    kind: ClassVar[str] = "quantize-symmetric"

    def __post_init__(self) -> None:
        if self.scheme not in SYMMETRIC_RECIPES:
            raise ValueError(f"TensorRT's int8 comes from explicit Q/DQ graphs: schemes {sorted(SYMMETRIC_RECIPES)}; "
                             f"got {self.scheme!r}")
        super().__post_init__()

    def params(self) -> dict[str, Any]:
        return {**super().params(), "recipe": SYMMETRIC_RECIPES[self.scheme]}

    def build(self, src: Path | None, dst: Path, tmp: Path) -> dict[str, Any]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        recipe = SYMMETRIC_RECIPES[self.scheme]
        record: dict[str, Any] = {"int8_scheme": self.scheme, "int8_zero_points": "0 (symmetric int8, TensorRT's form)"}
        # the stage's own preparation: folded weights, opset 13 for per-channel Q/DQ, ONNX's shape
        # inference where the symbolic one gives up, temporary files in the build's folder
        src, dst, tmp = Path(src).resolve(), Path(dst).resolve(), Path(tmp).resolve()
        with build_folder(tmp):
            prepared = prepare(src, tmp / "prepared.onnx", fold=recipe["fold_weights"],
                               min_opset=recipe.get("min_opset", 0))
            record.update(prepared.record)
            pre = tmp / "pre.onnx"
            record["shape_inference"] = preprocess_for_static(tmp / "prepared.onnx", pre, tmp)
            # with symmetric activations ONNX Runtime keeps Relu/Clip in the graph (it folds them into
            # the quantization range only for asymmetric ones), which TensorRT fuses itself
            quantize_static(str(pre), str(dst), CalibrationReader(self._batches),
                            quant_format=QuantFormat[recipe["format"]], per_channel=recipe["per_channel"],
                            activation_type=QuantType[recipe["activation_type"]],
                            weight_type=QuantType[recipe["weight_type"]],
                            calibrate_method=CalibrationMethod[recipe["calibrate_method"]],
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "QuantizeBias": recipe["quantize_bias"]})
        return {**record, "int8_ops": int8_ops(dst)}


def stage_step(spec: BuildSpec, choice: BuildChoice) -> Step:
    """The ONNX stage chain a build parses: the export (or the user's file), then the fp16
    rewrite (fp32 I/O) or the symmetric Q/DQ graph. No transformer fusion: ONNX Runtime's fused
    operators (com.microsoft Attention, SkipLayerNormalization) are not ONNX TensorRT can parse."""
    if choice.onnx_graph == "int8":
        return SymmetricQuantize(onnx_stage.source(spec), spec.int8_scheme, spec.calibration)
    return onnx_stage.plan(spec, choice.onnx_graph)


# ---- TensorRT itself (never run here) ----
@functools.cache
def trt_logger() -> Any:
    """The process's one Python-side TensorRT logger, shared by every builder, parser and runtime
    of the ``tensorrt`` engine and alive for the whole process (TensorRT: "The logger must be valid
    until all objects created are released", NvInferRuntime.h): warnings go to Python logging,
    errors are also kept so a failed parse/build/run can raise them.

    ONNX Runtime's TensorRT EP cannot share it: the EP builds with its own C++ logger (a static in
    tensorrt_execution_provider.cc, GetTensorrtLogger) and takes none from Python. That is safe since
    TensorRT 8.2 ("Eliminated the global logger; each Runtime, Builder or Refitter now has its own
    logger", CHANGELOG), so the EP's builds in the same process neither steal nor silence this one's
    messages. The one process-global TensorRT logger left is the plugin library's
    (initLibNvInferPlugins overwrites it on each call; the EP calls it); this engine never calls
    ``trt.init_libnvinfer_plugins``, so it never replaces the EP's."""
    import tensorrt as trt

    class Recorder(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # the ILogger docstring: a subclass must call it explicitly
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity <= trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)

        def take(self) -> list[str]:
            taken, self.errors = self.errors, []
            return taken

    return Recorder()


def build_serialized_plan(onnx_path: Path, choice: BuildChoice, example_shapes: Mapping[str, Sequence[int]],
                          opt_batch: int, max_batch: int, workdir: Path) -> dict[str, Any]:
    """Parse ``onnx_path``, build a plan into ``workdir/model.plan`` with its timing cache beside
    it (``timing.cache``), and return what was built (profile, layers, flags) for the record."""
    import tensorrt as trt
    logger = trt_logger()
    logger.take()  # drop errors of an earlier, unrelated call
    builder = trt.Builder(logger)
    network = builder.create_network(sum(1 << int(getattr(trt.NetworkDefinitionCreationFlag, f))
                                         for f in choice.network_flags))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file, not parse(bytes): the parser then finds external weight files beside the
    # model (Polygraphy's NetworkFromOnnxPath does the same for that reason)
    parsed = parser.parse_from_file(str(onnx_path))
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    if not parsed or errors:
        raise TensorRTError(f"TensorRT's ONNX parser rejected {onnx_path.name}: " + "; ".join(errors or logger.take()))
    config = builder.create_builder_config()
    for flag in choice.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in choice.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    shapes = profile_shapes({t.name: tuple(t.shape) for t in inputs}, example_shapes, max_batch, opt_batch)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    # an empty cache per build: each entry is keyed on its own, and what the builder timed is
    # kept beside the plan (trtexec --timingCacheFile can rebuild from it quickly)
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(f"TensorRT could not build {onnx_path.name}: " + "; ".join(logger.take() or ["no message"]))
    (workdir / PLAN).write_bytes(bytes(memoryview(plan)))
    (workdir / TIMING_CACHE).write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return {"profile": {n: [list(s) for s in p] for n, p in shapes.items()}, "layers": network.num_layers,
            "network_inputs": [t.name for t in inputs],
            "network_outputs": [network.get_output(i).name for i in range(network.num_outputs)]}


def gpu_facts(index: int = 0) -> tuple[str, tuple[int, int], str]:
    """GPU ``index``'s name, compute capability and the driver version (NVML, else the kernel
    module's /proc file, else "unknown")."""
    import torch
    return (torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)), driver_version())


def driver_version() -> str:
    import importlib.util
    if importlib.util.find_spec("pynvml") is not None:  # nvidia-ml-py, in the gpu extra
        import pynvml
        try:
            pynvml.nvmlInit()
            try:
                found = pynvml.nvmlSystemGetDriverVersion()
            finally:
                pynvml.nvmlShutdown()
            return found.decode() if isinstance(found, bytes) else str(found)
        except pynvml.NVMLError as exc:
            log.warning("NVML could not read the driver version (%s); trying /proc", exc)
    try:
        with open("/proc/driver/nvidia/version") as f:
            return driver_from_proc(f.read()) or "unknown"
    except OSError:
        return "unknown"
