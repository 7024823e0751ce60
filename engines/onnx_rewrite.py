"""Small ONNX graph rewrites of the ONNX stage: Gemm -> MatMul for the weight-only quantizer,
float32 -> float16 with float32 inputs and outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def gemm_to_matmul(model: Any) -> int:
    """Rewrite ``Gemm(A, W[, C])`` with a constant W as ``MatMul(A, W) [+ C]``, in place.

    ONNX Runtime's weight-only quantizer (MatMulNBits) takes MatMul only, and GPT-2's Conv1D
    layers export as Gemm. Only the plain form (alpha = beta = 1, no transA) is rewritten;
    transB is folded into the weight. Returns how many nodes were rewritten.
    """
    from onnx import helper, numpy_helper
    weights = {init.name: init for init in model.graph.initializer}
    nodes, rewritten = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0)
        if node.op_type != "Gemm" or node.input[1] not in weights or not plain:
            nodes.append(node)
            continue
        if attrs.get("transB", 0):
            w = weights[node.input[1]]
            w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).T.copy(), w.name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = node.output[0] + "_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [product], name=node.name + "_MatMul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=node.name + "_Add"))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return rewritten


def to_fp16(src: Path, dst: Path, keep_io_types: bool = True) -> None:
    """``src`` with fp16 weights and activations written to ``dst``; ``keep_io_types`` keeps
    float32 inputs and outputs (casts at the edges), so callers feed what fp32 rows feed."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=keep_io_types), str(dst))
