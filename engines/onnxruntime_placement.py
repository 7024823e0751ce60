"""Which nodes of an ONNX Runtime session left the GPU: read from ONNX Runtime itself, judged by type.

A session asked for the CUDA EP can still run some nodes on the CPU EP, with no error: nodes the
EP has no kernel for, and ORT's own shape subgraphs (``GetCpuPreferredNodes`` in
onnxruntime/core/framework/fallback_cpu_capability.cc moves small int64 chains such as
Shape -> Gather -> Unsqueeze -> Concat feeding a Reshape to the CPU, where they are cheaper).
The first kind makes a "cuda" figure partly a CPU figure; the second is ORT working as designed.

How it is seen: ``session.record_ep_graph_assignment_info=1`` and
``InferenceSession.get_provider_graph_assignment_info()`` (ORT >= 1.24; one ``OrtEpAssignedSubgraph``
per EP group with ``ep_name`` and ``get_nodes()`` -> ``name``, ``op_type``). ORT's warning "Some
nodes were not assigned to the preferred execution providers" goes to its C++ logger on fd 2,
which Python cannot capture, and lists no nodes below VERBOSE.

Why not ``session.disable_cpu_ep_fallback=1``: ORT's check (InferenceSession::Initialize) fails the
session when *any* main-graph node is on the CPU EP, shape subgraphs included, with a message
naming no node: it would refuse nearly every exported transformer for doing what ORT intends.

The judgement: the shape subgraphs ORT moves produce integer (or bool) tensors only, since a node
with a float16/bfloat16 input is never moved and its sources are Shape/Size outputs and small
initializers. So a CPU-assigned node whose outputs are all integer/bool is shape work; one with a
floating-point output, or whose output types are unknown, is compute that left the GPU.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CPU = "CPUExecutionProvider"
RECORD_KEY = "session.record_ep_graph_assignment_info"
#: onnx.TensorProto element types of shape work: INT8..INT64 / UINT8..UINT64 and BOOL
SHAPE_TYPES = frozenset({2, 3, 4, 5, 6, 7, 9, 12, 13})


def output_types(model: Path) -> dict[str, tuple[int, ...]]:
    """``{node name: element types of its outputs}`` of an ONNX file, from ONNX shape inference
    (0 where a type stays unknown). Unnamed nodes are left out: they cannot be matched."""
    import onnx
    # not strict: nodes of domains it does not know (com.microsoft fusions) keep unknown types
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(model), load_external_data=False))
    g = proto.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.output, *g.input)}
    types.update({t.name: t.data_type for t in g.initializer})
    return {n.name: tuple(types.get(o, 0) for o in n.output if o) for n in g.node if n.name}


def assignments(session: Any) -> list[tuple[str, str, str]]:
    """``[(ep, op_type, node name)]`` of a session created with ``RECORD_KEY`` set."""
    return [(sub.ep_name, node.op_type, node.name) for sub in session.get_provider_graph_assignment_info()
            for node in sub.get_nodes()]


def cpu_placement(placed: Iterable[tuple[str, str, str]], types: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """What ran on the CPU EP: every node by op type, and the compute nodes among them (a float
    output, or no known types) by op type, with a note when there are any. Pure: tested on the CPU."""
    on_cpu = [(op, name) for ep, op, name in placed if ep == CPU]
    compute = [op for op, name in on_cpu
               if not types.get(name) or not all(t in SHAPE_TYPES for t in types[name])]
    out: dict[str, Any] = {"ort_cpu_nodes": dict(Counter(op for op, _ in on_cpu)),
                           "ort_cpu_compute_nodes": dict(Counter(compute))}
    if compute:
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(Counter(compute).items()))
        out["ort_cpu_fallback"] = (f"{len(compute)} compute node(s) ran on the CPU EP, not the GPU ({ops}): "
                                   "this case's figures are partly CPU figures")
    return out
