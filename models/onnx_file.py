"""A user's ONNX file as a model (``onnx:PATH``), run as given by the engines that consume ONNX.

Its inputs follow the graph: declared names, element types and shapes. The first axis of
every input is the batch (symbolic: it takes the batch size; fixed at 1: the model runs at
batch 1 only, and the matrix skips its other batch sizes); every other symbolic dimension takes
its value from ``dims`` (NAME=VALUE; an unnamed dynamic dimension is called ``<input>_dim<axis>``).
A model's own ``dims`` table is checked against the graph (``strict``): a name that is no symbolic
dim of it is an error; the run-wide ``dims`` may name dims of other files. Inputs are seeded:

- floating point: standard normal;
- integers whose name contains ``mask``: ones (nothing masked); ``token_type`` / ``segment``:
  zeros; ``position``: 0..n-1 along the last axis; any other integer: uniform in [0, 100),
  valid ids for any vocabulary or table of at least 100 entries;
- bool: random.

Its int8 scheme comes from the graph (a Conv: static per-channel, else dynamic), calibrated
on the same seeded inputs; ONNX Runtime CPU fp32 is its reference (engines.registry.baseline_for).
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infermatrix.engines import BuildSpec

from .registry import ModelSpec, register_model

INT_RANGE = (0, 100)
CONV_OPS = frozenset({"Conv", "ConvTranspose", "QLinearConv", "ConvInteger"})


@dataclass(frozen=True)
class GraphInput:
    name: str
    dtype: Any                       # numpy dtype
    dims: tuple[int | str, ...]      # fixed sizes and symbolic names; dims[0] is the batch


@dataclass(frozen=True)
class OnnxFileModel(ModelSpec):
    """A ModelSpec whose graph may fix its batch axis at 1 (``fixed_batch``): examples and calibration
    then use batch 1. It keeps what its dims were read from, so a second registration can be checked."""

    #: non-batch symbolic dim -> the input axes that use it, e.g. ``seq`` -> ("input_ids[1]",)
    dim_users: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    batch_symbols: tuple[str, ...] = ()
    #: the value each non-batch symbolic dim was registered with
    dim_values: Mapping[str, int] = field(default_factory=dict)

    def dims_for(self, dims: Mapping[str, int], strict: Collection[str] = ()) -> dict[str, int]:
        """The values ``dims`` would give this graph's symbolic dims (ValueError as at registration)."""
        return _dim_values(self.onnx_file, self.dim_users, set(self.batch_symbols), dims, strict)

    def calibration(self, batches: int = 8, batch_size: int = 4) -> Callable[[], list[dict]]:
        return super().calibration(batches, 1 if self.fixed_batch else batch_size)

    def build_spec(self, module: Any, example_batch: int, **kwargs: Any) -> BuildSpec:
        return super().build_spec(module, 1 if self.fixed_batch else example_batch, **kwargs)


def read_graph(path: Path) -> tuple[list[GraphInput], list[str], set[str]]:
    """(inputs, output names, operator types) of the ONNX file at ``path``."""
    import onnx
    from google.protobuf.message import DecodeError
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        raise ValueError(f"{path} is not an ONNX model (it does not parse as one: {exc})") from exc
    graph = model.graph
    # an empty or foreign protobuf can parse as an empty ModelProto
    if model.ir_version < 1 or not graph.node or not graph.output:
        raise ValueError(f"{path} is not an ONNX model (ir_version {model.ir_version}, "
                         f"{len(graph.node)} nodes, {len(graph.output)} outputs)")
    weights = {t.name for t in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in weights:  # IR < 4 graphs list their weights as inputs too
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
            raise ValueError(f"{path}: input {value.name!r} is not a tensor of known rank; "
                             "only tensor inputs with declared shapes can be generated")
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        except KeyError as exc:
            raise ValueError(f"{path}: input {value.name!r} has element type {tensor.elem_type}, "
                             "which has no numpy type to generate it with") from exc
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or f"{value.name}_dim{axis}"
                     for axis, d in enumerate(tensor.shape.dim))
        inputs.append(GraphInput(value.name, dtype, dims))
    if not inputs:
        raise ValueError(f"{path}: the graph has no inputs to feed")
    ops = {n.op_type for n in graph.node} | {n.op_type for f in model.functions for n in f.node}
    return inputs, [o.name for o in graph.output], ops


def _batch_axis(path: Path, inputs: list[GraphInput]) -> tuple[set[str], bool]:
    """(symbols that name the batch, whether the batch is fixed at 1)."""
    symbols, fixed = set(), False
    for i in inputs:
        if not i.dims:
            raise ValueError(f"{path}: input {i.name!r} is a scalar; every input needs a first (batch) axis")
        first = i.dims[0]
        if isinstance(first, str):
            symbols.add(first)
        elif first == 1:
            fixed = True
        else:
            raise ValueError(f"{path}: input {i.name!r} has a fixed first (batch) axis of {first}; "
                             "the first axis is run as the batch, so it must be symbolic or 1")
    return symbols, fixed


def _dim_users(inputs: list[GraphInput], batch: set[str]) -> dict[str, tuple[str, ...]]:
    """Each non-batch symbolic dim -> the input axes that use it."""
    users: dict[str, list[str]] = {}
    for i in inputs:
        for axis, d in enumerate(i.dims):
            if isinstance(d, str) and d not in batch:
                users.setdefault(d, []).append(f"{i.name}[{axis}]")
    return {d: tuple(u) for d, u in users.items()}


def listed_dims(users: Mapping[str, tuple[str, ...]], batch: Collection[str]) -> str:
    """The graph's symbolic dims for a message: each with the input axes that use it, then the batch's."""
    listed = "; ".join(f"{d} (used by {', '.join(u)})" for d, u in users.items())
    listed = listed or ("none besides the batch" if batch else "none")
    return listed + (f"; batch axis: {', '.join(sorted(batch))} (set by the batch size)" if batch else "")


def unknown_run_dims(names: Collection[str], models: Collection[ModelSpec]) -> str | None:
    """What is wrong with run-wide dims ``names`` (--dim): each must be a non-batch symbolic dim of
    at least one of the run's onnx: models, or it would be ignored in silence; None when all are
    (and when the run has no onnx: model, whose dims a config file may still hold)."""
    files = [m for m in models if isinstance(m, OnnxFileModel)]
    unknown = [n for n in names if not any(n in m.dim_users for m in files)]
    if not files or not unknown:
        return None
    dims = " | ".join(f"{m.onnx_file.name}: {listed_dims(m.dim_users, m.batch_symbols)}" for m in files)
    return (f"{', '.join(map(repr, unknown))} {'names' if len(unknown) == 1 else 'name'} no symbolic dim of the "
            f"run's onnx: models (a name is matched exactly; the batch axis takes the batch size). Their dims: {dims}")


def _dim_values(path: Path, users: Mapping[str, tuple[str, ...]], batch: set[str], dims: Mapping[str, int],
                strict: Collection[str] = ()) -> dict[str, int]:
    """Every non-batch symbolic dim's value from ``dims``; a missing one is an error listing them all.
    Entries for other symbols are ignored (one ``dims`` serves every onnx: file of a run), except
    the names in ``strict`` (the model's own table): each must be a symbolic dim of this graph."""
    listed = listed_dims(users, batch)
    unknown = [k for k in strict if k not in users and k not in batch]
    if unknown:
        raise ValueError(f"{path}: dims {', '.join(map(repr, unknown))} of this model's own table "
                         f"{'is no symbolic dim' if len(unknown) == 1 else 'are no symbolic dims'} of the graph. "
                         f"The graph's symbolic dims: {listed}")
    bad = {k: v for k, v in dims.items() if k in users and (not isinstance(v, int) or isinstance(v, bool) or v < 1)}
    if bad:
        raise ValueError(f"{path}: dims {bad}: each value must be a positive integer")
    missing = [d for d in users if d not in dims]
    if missing:
        raise ValueError(f"{path}: no value for symbolic dim(s) {', '.join(missing)}; give each as NAME=VALUE. "
                         f"The graph's symbolic dims: {listed}")
    return {d: int(dims[d]) for d in users}


def _generator(inputs: list[GraphInput], batch_symbols: set[str], fixed: bool, values: dict[str, int],
               path: Path) -> Any:
    def make(batch: int, seed: int) -> dict[str, Any]:
        import torch
        if fixed and batch != 1:
            names = [i.name for i in inputs if i.dims[0] == 1]
            raise ValueError(f"{path.name}: batch size {batch}: inputs {names} have a fixed batch axis of 1, "
                             "so this model runs at batch size 1 only")
        g = torch.Generator().manual_seed(seed)
        out = {}
        for i in inputs:
            shape = [batch if axis == 0 or d in batch_symbols else values[d] if isinstance(d, str) else d
                     for axis, d in enumerate(i.dims)]
            out[i.name] = _seeded(i.name, i.dtype, shape, g)
        return out
    return make


def _seeded(name: str, dtype: Any, shape: list[int], g: Any) -> Any:
    import numpy as np
    import torch
    kind, lower = np.dtype(dtype).kind, name.lower()
    target = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
    if kind == "f":
        return torch.randn(shape, generator=g).to(target)
    if kind == "b":
        return torch.rand(shape, generator=g) < 0.5
    if kind not in "iu":
        raise ValueError(f"input {name!r} has numpy type {np.dtype(dtype)}, which cannot be generated")
    if "mask" in lower:
        return torch.ones(shape, dtype=target)
    if "token_type" in lower or "segment" in lower:
        return torch.zeros(shape, dtype=target)
    if "position" in lower and shape:
        return torch.arange(shape[-1]).expand(shape).to(target).contiguous()
    return torch.randint(*INT_RANGE, shape, generator=g).to(target)


def register_onnx_file(path: Path, *, name: str, dims: Mapping[str, int], strict: Collection[str] = ()) -> ModelSpec:
    """Register the ONNX file at ``path`` as model ``name`` (models.sources.resolve ``onnx:PATH``);
    ``strict``: the names of ``dims`` that must be symbolic dims of this graph."""
    path = Path(path).expanduser()
    inputs, outputs, ops = read_graph(path)
    batch_symbols, fixed = _batch_axis(path, inputs)
    users = _dim_users(inputs, batch_symbols)
    values = _dim_values(path, users, batch_symbols, dims, strict)
    return register_model(OnnxFileModel(
        name=name, factory=None, onnx_file=path, make_inputs=_generator(inputs, batch_symbols, fixed, values, path),
        input_names=tuple(i.name for i in inputs), output_names=tuple(outputs),
        int8_scheme="static_per_channel" if ops & CONV_OPS else "dynamic", fixed_batch=1 if fixed else None,
        dim_users=users, batch_symbols=tuple(sorted(batch_symbols)), dim_values=values))
