"""What a graph needs before ONNX Runtime's quantizer takes it (engines/onnx_quantize.py).

Exporters other than torch's write graphs the quantizer was not written for. paddle2onnx, for
one, keeps every weight in a ``Constant`` node (a PP-OCRv4 text detector: 342 Constant nodes,
all 62 Conv weights among them) and targets opset 12. Three things follow:

- ``quantize_dynamic`` quantizes a Conv with a bias only if its weight is an initializer: it
  reads the weight's rank from it to reshape the bias, and raises "Expected <w> to be an
  initializer" otherwise. ``fold_weights`` makes the Constant nodes and the Identity chains
  feeding a weight or bias input initializers (``quantize_static`` gets the same from the
  constant folding of its pre-processing); ``computed_weights`` names the Convs whose weight
  is still computed, which the dynamic schemes leave in float (``nodes_to_exclude``).
- per-channel Q/DQ writes DequantizeLinear with an ``axis`` attribute, which exists from
  opset 13: at opset 12 the quantized graph does not load ("Unrecognized attribute: axis").
  ``raise_opset`` converts the graph with ``onnx.version_converter``, what ONNX Runtime's own
  ``update_opset_version`` does for the opsets its other types need.
- nothing of it is silent: ``prepare`` returns what it folded, excluded and converted, for the
  step's record (an engine's ``details()`` as ``onnx_<key>``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: op type -> the input indices that hold its weights and bias (folded into initializers)
WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,)}
#: ops ONNX Runtime's dynamic quantizer cannot quantize with a computed weight (operators/conv.py)
NEEDS_INITIALIZER_WEIGHT = frozenset({"Conv"})
#: the first opset whose QuantizeLinear / DequantizeLinear take ``axis`` (per-channel scales)
PER_CHANNEL_OPSET = 13
#: node names the record lists by name; past this only the count says how many more
LISTED = 20


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` did: the record's entries and the nodes the quantizer must leave alone."""

    record: dict[str, Any]
    exclude: tuple[str, ...]


def prepare(src: Path, dst: Path, *, fold: bool = True, min_opset: int = 0, exclude_computed: bool = False) -> Prepared:
    """Write ``src`` to ``dst`` with its weights folded (``fold``: ``fold_weights``), its opset raised to
    ``min_opset`` where it is lower, and, with ``exclude_computed``, the nodes whose weight stays
    computed named for ``nodes_to_exclude``."""
    import onnx
    model = onnx.load(str(src))
    record: dict[str, Any] = {"weights_folded": fold_weights(model)} if fold else {}
    exclude: tuple[str, ...] = ()
    if exclude_computed:
        why = computed_weights(model)
        exclude = tuple(why)
        listed = dict(list(why.items())[:LISTED])
        record["nodes_excluded"] = {"count": len(why), "why": listed, **({"not_listed": len(why) - LISTED}
                                                                       if len(why) > LISTED else {})}
    record["opset"] = raise_opset(model, min_opset, src.name) if min_opset else {"kept": default_opset(model)}
    _save(model, dst)
    return Prepared(record, exclude)


def fold_weights(model: Any) -> dict[str, int]:
    """Make the weight and bias inputs (WEIGHT_INPUTS) that are constant in disguise initializers,
    in place: a Constant node's tensor becomes an initializer of the same name (every consumer
    sees the same value), and a consumer of an Identity chain ending at an initializer reads the
    initializer itself (the Identity is dropped when nothing else reads it). Returns how many
    Constant and Identity nodes were folded."""
    from onnx import helper
    graph = model.graph
    if model.ir_version < 4:   # initializers had to be graph inputs too before IR 4: left as they are
        return {"constant_nodes": 0, "identity_nodes": 0}
    inits = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    folded: dict[int, Any] = {}        # id -> Constant or Identity node made redundant
    constants = 0

    def source(name: str) -> str | None:
        """The initializer ``name`` stands for, folding the Constant at the end of its chain."""
        nonlocal constants
        chain = []
        while name not in inits:
            node = producer.get(name)
            if node is None or len(chain) > len(graph.node):
                return None
            if node.op_type == "Constant":
                # a graph output stays a node's output (an initializer as output is not every runtime's)
                tensor = None if name in outputs else _constant_tensor(node, helper)
                if tensor is None:
                    return None
                graph.initializer.append(tensor)
                inits.add(name)
                constants += 1
                chain.append(node)
                break
            if node.op_type != "Identity":
                return None
            chain.append(node)
            name = node.input[0]
        folded.update((id(n), n) for n in chain)
        return name

    for node in graph.node:
        for i in WEIGHT_INPUTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] and node.input[i] not in inits:
                init = source(node.input[i])
                if init is not None:
                    node.input[i] = init
    # a folded Identity goes once nothing reads it (a chain's head first, then the rest)
    kept = [n for n in graph.node if not (n.op_type == "Constant" and id(n) in folded)]
    identities = 0
    while True:
        read = {i for n in kept for i in n.input} | outputs
        unread = {id(n) for n in kept if id(n) in folded and n.output[0] not in read}
        if not unread:
            break
        identities += len(unread)
        kept = [n for n in kept if id(n) not in unread]
    del graph.node[:]
    graph.node.extend(kept)
    return {"constant_nodes": constants, "identity_nodes": identities}


def _constant_tensor(node: Any, helper: Any) -> Any:
    """The TensorProto a Constant node holds, named as its output; None for a sparse value."""
    import numpy as np
    from onnx import numpy_helper
    attr = node.attribute[0] if len(node.attribute) == 1 else None
    if attr is None or attr.name == "sparse_value":
        return None
    value = helper.get_attribute_value(attr)
    if attr.name == "value":
        tensor = type(value)()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
        return tensor
    dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
             "value_ints": np.int64}.get(attr.name)
    if dtype is None:     # value_string(s): never a weight
        return None
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), node.output[0])


def computed_weights(model: Any) -> dict[str, str]:
    """node name -> why, for each node of NEEDS_INITIALIZER_WEIGHT whose weight is not an
    initializer (after ``fold_weights``): what computes it, or that it is a graph input. An
    unnamed one is named ``<op>#<index>`` in place: ``nodes_to_exclude`` matches names."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    why = {}
    for k, node in enumerate(graph.node):
        if node.op_type not in NEEDS_INITIALIZER_WEIGHT or len(node.input) < 2 or node.input[1] in inits:
            continue
        weight, made_by = node.input[1], producer.get(node.input[1])
        source = f"computed by {made_by.op_type} {made_by.name!r}" if made_by else "a graph input"
        node.name = node.name or f"{node.op_type}#{k}"
        why[node.name] = (
            f"weight {weight!r} is {source}; ONNX Runtime's dynamic {node.op_type} quantizer needs an initializer")
    return why


def default_opset(model: Any) -> int:
    """The graph's ai.onnx opset (0 where it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def raise_opset(model: Any, minimum: int, name: str) -> dict[str, Any]:
    """Convert ``model`` in place to opset ``minimum`` where its own is lower. Returns the
    record's ``opset``: ``{"kept": v}`` or ``{"converted": [v, minimum], "why": ...}``."""
    from onnx import version_converter
    version = default_opset(model)
    if version >= minimum:
        return {"kept": version}
    try:
        converted = version_converter.convert_version(model, minimum)
    except Exception as exc:  # noqa: BLE001 - the converter raises bare C++ errors; re-raised with the context
        raise RuntimeError(f"per-channel int8 needs opset >= {minimum} (QuantizeLinear/DequantizeLinear axis); "
                           f"converting {name} from opset {version} failed: {type(exc).__name__}: {exc}. "
                           f"Schemes without per-channel scales keep opset {version}: 'static', 'dynamic'") from exc
    model.CopyFrom(converted)
    return {"converted": [version, minimum],
            "why": f"per-channel Q/DQ (QuantizeLinear/DequantizeLinear axis) exists from opset {minimum}"}


def _save(model: Any, dst: Path) -> None:
    """Weights past protobuf's 2 GB limit go to one external-data file beside ``dst``."""
    import onnx
    large = model.ByteSize() > 2**31 - 2**24
    onnx.save(model, str(dst), save_as_external_data=large, all_tensors_to_one_file=True,
              location=f"{dst.name}.data" if large else None)
