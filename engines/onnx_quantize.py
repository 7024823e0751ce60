"""The int8 recipes of the ONNX stage (engines/onnx_stage.py), built with ONNX Runtime's quantizer.

- ``dynamic`` / ``dynamic_per_channel``: int8 weights (one scale per tensor or per output
  channel), activations quantized on every call (``quantize_dynamic``);
- ``static`` / ``static_per_channel``: Q/DQ pairs with activation ranges calibrated (MinMax)
  on the model's seeded calibration batches (``quantize_static``), after ORT's pre-processing
  with symbolic shape inference, or ONNX's where that gives up (engines/onnx_shapes.py);
  per-channel converts a graph older than opset 13 first (its DequantizeLinear has an axis);
- ``weight_only``: int8 weights in blocks of 32 (MatMulNBits), what LLM decoders ship with.

Every scheme starts from engines/onnx_prepare.py: Constant / Identity weights folded into
initializers (a paddle2onnx export keeps every weight in a Constant node), and for the dynamic
schemes the Convs whose weight is computed left in float; the record says how many and why.

``RECIPES`` holds every setting a scheme uses; the stage puts it in the step's cache key, so
changing a setting here rebuilds what was quantized with the old one.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_prepare import PER_CHANNEL_OPSET, prepare
from .onnx_rewrite import gemm_to_matmul
from .onnx_shapes import build_folder, preprocess_for_static
from .spec import INT8_SCHEMES

#: every scheme first folds Constant / Identity weights into initializers (engines/onnx_prepare.py);
#: the dynamic ones leave in float the Convs whose weight stays computed, which ORT cannot quantize
_DYNAMIC = {"api": "quantize_dynamic", "weight_type": "QInt8", "fold_weights": True, "exclude_computed_weights": True}
_STATIC = {"api": "quantize_static", "format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8",
           "calibrate_method": "MinMax", "shape_inference": "symbolic, else onnx where symbolic gives up",
           "fold_weights": True}
#: scheme -> the settings it is built with (part of the stage's cache key)
RECIPES: dict[str, dict[str, Any]] = {
    "dynamic": {**_DYNAMIC, "per_channel": False},
    "dynamic_per_channel": {**_DYNAMIC, "per_channel": True},
    "static": {**_STATIC, "per_channel": False},
    # per-channel Q/DQ carries an axis attribute: opset 13 at least (an older graph is converted)
    "static_per_channel": {**_STATIC, "per_channel": True, "min_opset": PER_CHANNEL_OPSET},
    "weight_only": {"api": "MatMulNBitsQuantizer", "bits": 8, "block_size": 32, "is_symmetric": True,
                    "accuracy_level": 4, "gemm_to_matmul": True, "fold_weights": True},
}
CALIBRATED = frozenset({"static", "static_per_channel"})
#: operators that say a graph was quantized, counted in the step's record
INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                      "ConvInteger", "DynamicQuantizeMatMul", "QLinearConv", "QLinearMatMul", "MatMulNBits"})

Batch = Mapping[str, np.ndarray]


def reinfer_shapes(src: Path, dst: Path) -> None:
    """Drop the exporter's/fuser's value_info and re-run symbolic shape inference.

    quantize_dynamic fails on both exporters' graphs without it (measured: the dynamo graph
    carries a stale shape, "Inferred shape and existing shape differ"; the fused graph's
    contrib ops have no types for onnx's own shape inference).
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    model = onnx.load(str(src))
    del model.graph.value_info[:]
    onnx.save(SymbolicShapeInference.infer_shapes(model, auto_merge=True), str(dst))


class CalibrationReader:
    """onnxruntime.quantization.CalibrationDataReader over seeded batches."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self._it = iter(batches)

    def get_next(self) -> Batch | None:
        return next(self._it, None)


def quantize(scheme: str, src: Path, dst: Path, tmp: Path, calibration: list[Batch] | None) -> dict[str, Any]:
    """Quantize ``src`` into ``dst`` with ``scheme``; intermediates go to ``tmp``, and so does
    every temporary file of ONNX Runtime's tools (build_folder). Returns what was done: the
    scheme, the int8 operators in the result and the scheme's own facts."""
    if scheme not in RECIPES:
        raise ValueError(f"int8 scheme {scheme!r}; expected one of {INT8_SCHEMES}")
    recipe = RECIPES[scheme]
    record: dict[str, Any] = {"int8_scheme": scheme}
    # absolute: build_folder changes the cwd, and a cache root or an onnx: path may be relative
    src, dst, tmp = Path(src).resolve(), Path(dst).resolve(), Path(tmp).resolve()
    with build_folder(tmp):
        prepared = prepare(src, tmp / "prepared.onnx", fold=recipe["fold_weights"], min_opset=recipe.get("min_opset", 0),
                           exclude_computed=recipe.get("exclude_computed_weights", False))
        record.update(prepared.record)
        src = tmp / "prepared.onnx"
        if scheme in CALIBRATED:
            record["shape_inference"] = _quantize_static(src, dst, tmp, recipe, calibration)
        else:
            shaped = tmp / "shaped.onnx"
            reinfer_shapes(src, shaped)
            if scheme == "weight_only":
                record.update(_quantize_weights(shaped, dst, recipe))
            else:
                from onnxruntime.quantization import QuantType, quantize_dynamic
                quantize_dynamic(str(shaped), str(dst), weight_type=QuantType[recipe["weight_type"]],
                                 per_channel=recipe["per_channel"], nodes_to_exclude=list(prepared.exclude))
    record["int8_ops"] = int8_ops(dst)
    if scheme != "weight_only":
        record["int8_weight_scales"] = weight_scales(dst)
    return record


def _quantize_static(src: Path, dst: Path, tmp: Path, recipe: Mapping[str, Any],
                     calibration: list[Batch] | None) -> dict[str, Any]:
    """Q/DQ int8 calibrated on ``calibration``; returns which shape inference prepared it."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    if not calibration:
        raise ValueError("static int8 needs calibration batches (BuildSpec.calibration); the spec has none")
    pre = tmp / "pre.onnx"
    shapes = preprocess_for_static(src, pre, tmp)
    quantize_static(str(pre), str(dst), CalibrationReader(calibration),
                    quant_format=QuantFormat[recipe["format"]], per_channel=recipe["per_channel"],
                    activation_type=QuantType[recipe["activation_type"]], weight_type=QuantType[recipe["weight_type"]],
                    calibrate_method=CalibrationMethod[recipe["calibrate_method"]])
    return shapes


def _quantize_weights(src: Path, dst: Path, recipe: Mapping[str, Any]) -> dict[str, int]:
    """int8 weights in blocks of 32 with fp32 scales; accuracy_level 4 lets the kernel
    quantize activations per block on the fly. Measured on the trained tiny-gpt2 (greedy,
    32 tokens, 6 prompts): token agreement 0.97-1.0 and 0.67 ms/token, where dynamic
    per-tensor int8 agreed on 0.47-1.0 (0.92 ms) and per-channel on 0.66-1.0."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    model = onnx.load(str(src))
    # MatMulNBits takes MatMul only; GPT-2's Conv1D layers export as Gemm
    rewritten = gemm_to_matmul(model) if recipe["gemm_to_matmul"] else 0
    quantizer = MatMulNBitsQuantizer(model, bits=recipe["bits"], block_size=recipe["block_size"],
                                     is_symmetric=recipe["is_symmetric"], accuracy_level=recipe["accuracy_level"])
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), False)
    matmuls = sum(n.op_type == "MatMulNBits" for n in quantizer.model.model.graph.node)
    return {"gemm_rewritten_to_matmul": rewritten, "weight_only_matmuls": matmuls}


def int8_ops(path: Path) -> dict[str, int]:
    """How many of each quantization operator the graph at ``path`` holds."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(sorted(Counter(n.op_type for n in graph.node if n.op_type in INT8_OPS).items()))


def weight_scales(path: Path) -> dict[str, int]:
    """How many constant tensors of the int8 graph at ``path`` have one scale per channel and how
    many one per tensor. Why: ``quantize_dynamic(per_channel=True)`` honours per_channel for
    MatMul only (its ConvInteger path quantizes weights per tensor), so dynamic_per_channel
    of a Conv net is per tensor throughout, and the record says so."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
    counts = Counter()
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in sizes:       # Q/DQ: the scale
            scale = node.input[1]
        elif node.op_type in ("ConvInteger", "MatMulInteger") and len(node.input) > 3 and node.input[1] in sizes:
            scale = node.input[3]                                                # the weight's zero point
        else:
            continue
        counts["per_channel" if sizes.get(scale, 1) > 1 else "per_tensor"] += 1
    return {"per_channel": counts["per_channel"], "per_tensor": counts["per_tensor"]}
