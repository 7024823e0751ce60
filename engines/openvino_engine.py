"""OpenVINO (optional extra ``openvino``): the shared ONNX stage's graph converted to IR, IR cached.

fp32 converts the exported graph (or the user's ONNX file). int8 is built the way OpenVINO's
users build it, with NNCF on that converted fp32 model (engines/openvino_int8.py: its
``static_per_channel`` is NNCF's default, ``static`` forces per-tensor weight scales; the
transformer model type where the model has transformer hints). It no longer converts the
stage's ONNX Runtime Q/DQ graph: that graph quantizes the unfused export, which cost a real
8-layer BERT its accuracy (cosine 0.18 where ONNX Runtime's own run of it kept 0.9987).
``details()`` names the recipe (``int8_recipe``) and counts the layers that ran in u8/i8.

Measured on this machine's AMD EPYC (2 shared cores, so no speed is claimed), cosine / SQNR vs
PyTorch fp32 at bs8, NNCF vs the old shared Q/DQ graph: tiny-cnn 0.99995 / 40.0 dB vs 0.99999 /
46.6 dB; resnet18 0.99989 / 36.4 dB vs 0.99986 / 35.3 dB (21 of 21 layers in int8); tiny-bert
(static, TRANSFORMER) 0.972 / 12.0 dB vs 0.999 / 26.9 dB, below the int8 policy, as NNCF's
SmoothQuant on random weights costs it (0.9915 without); the seeded mobilenet_v2 all zeros, its
activations below NNCF's smallest scale (refused at build, openvino_int8.collapse_problem).

The other schemes stay ONNX Runtime's: OpenVINO ran the dynamic graphs' matmuls in f32 (0 of 14
layers on tiny-bert), so an "int8" row would not be int8, and weight_only is the decoders' scheme
while this engine runs no decoder (no dynamic_shapes).

Every row pins ``INFERENCE_PRECISION_HINT=f32``: without it OpenVINO's CPU plugin silently
runs in bf16/fp16 where the hardware has it, and an fp32 row would not be fp32 at all (nor
the non-quantized layers of an int8 row what the graph says).
"""
from __future__ import annotations

import errno
import importlib.util
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import onnx_stage, openvino_int8
from .base import BuildSpec, Engine, EngineUnavailable, Outputs
from .cache import cache_key

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
    artifact_libraries: ClassVar[tuple[str, ...]] = (*onnx_stage.STAGE_LIBRARIES, "openvino", "nncf")
    consumes: ClassVar[frozenset[str]] = frozenset({"torch", "onnx"})
    int8_schemes: ClassVar[frozenset[str]] = openvino_int8.SCHEMES
    # no dynamic_shapes: the IR is converted with fixed feature dims and run through one
    # preallocated infer request; a decoder's growing KV cache is not wired here

    @classmethod
    def build_recipe(cls) -> dict[str, Any]:
        return {"onnx_stage": onnx_stage.recipe(), "feature_dims": "fixed from the example inputs",
                "int8": openvino_int8.RECIPE}

    def _availability_problem_impl(self) -> str | None:
        if self.precision == "int8" and importlib.util.find_spec("nncf") is None:
            return "OpenVINO int8 is built with NNCF, which is not installed (pip install 'infermatrix[openvino]')"
        return super()._availability_problem_impl()

    def _upstream_key_impl(self, spec: BuildSpec) -> str | None:
        source = onnx_stage.plan(spec, "fp32").key
        if self.precision != "int8":
            return source
        # NNCF calibrates on the spec's batches: their bytes, like the source graph, key the IR
        return cache_key({"source": source, "calibration": openvino_int8.digest(self._calibration(spec)),
                          "transformer": spec.transformer is not None})

    @staticmethod
    def _calibration(spec: BuildSpec) -> list[dict[str, np.ndarray]]:
        return openvino_int8.samples(spec.calibration() if spec.calibration is not None else ())

    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        import openvino as ov
        # int8 too starts from the fp32 source graph: NNCF quantizes the ov.Model itself
        with onnx_stage.open_stage(onnx_stage.plan(spec, "fp32"), spec.store, workdir) as built:
            model = ov.convert_model(str(built.model))
            # keep the graph's batch axis (dynamic, or a file's fixed 1); pin the feature dims
            # to the spec's, so the CPU plugin compiles for one shape rather than any
            model.reshape({n: ov.PartialShape([model.input(n).get_partial_shape()[0],
                                               *spec.example_inputs[n].shape[1:]])
                           for n in spec.input_names})
            record = dict(built.record)
            if self.precision == "int8":
                items = self._calibration(spec)
                fp32, model = model, openvino_int8.quantize(model, spec.int8_scheme, items,
                                                            transformer=spec.transformer is not None)
                collapsed = openvino_int8.collapse_problem(fp32, model, items)
                if collapsed:
                    raise EngineUnavailable(collapsed)
                record["int8_recipe"] = openvino_int8.label(spec.int8_scheme, spec.transformer is not None)
            save_ir(model, workdir / ARTIFACT)
        (workdir / RECORD).write_text(json.dumps(record, indent=1))

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
        recipe = record.pop("int8_recipe", None)
        self._facts = {**{f"onnx_{k}": v for k, v in record.items()},
                       **({"int8_recipe": recipe, **self._runtime_facts()} if self.precision == "int8" else {})}

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


def save_ir(model: Any, path: Path) -> None:
    """``ov.save_model`` with a full disk said as one: OpenVINO reports any failed write as
    "basic_ios::clear: iostream error" (measured on a 64 KiB tmpfs)."""
    import openvino as ov
    try:
        # compress_to_fp16=False: the default would store fp16 weights in an "fp32" artifact
        ov.save_model(model, str(path), compress_to_fp16=False)
    except RuntimeError as exc:
        if "iostream error" not in str(exc):
            raise
        free = shutil.disk_usage(path.parent).free
        need = sum(op.get_byte_size() for op in model.get_ops() if op.get_type_name() == "Constant")
        if free < need + (1 << 20):
            raise OSError(errno.ENOSPC, f"no space left on {path.parent}: OpenVINO could not write {path.name} "
                                        f"(about {need} bytes of weights, {free} bytes free)") from exc
        raise OSError(errno.EIO, f"OpenVINO could not write {path} ({exc}; {free} bytes free)") from exc
