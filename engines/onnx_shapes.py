"""Shape inference before static int8, and the folder the ONNX tools' temporary files go to.

Static int8 (onnxruntime.quantization.quantize_static) starts from ``quant_pre_process``:
symbolic shape inference, ORT's basic graph optimizations, then ONNX shape inference. The
symbolic step gives up ("Incomplete symbolic shape inference") on graphs whose dims it cannot
prove equal: a paddle2onnx export with every dim symbolic is one (Resize(scales) on the batch
axis gives ``floor(1.0*N)``, which the next Add cannot merge with ``N``; fixing the non-batch
dims does not help, and the batch stays symbolic because a run calls it at several batch
sizes). There ``preprocess_for_static`` reruns the pre-processing without the symbolic step
(ONNX's own shape inference, which never gives up on a dim it cannot prove, only leaves it
unknown) and records which node stopped the symbolic one.

ONNX Runtime's tools write temporary files where the caller cannot choose: the symbolic
inference saves ``sym_shape_infer_temp.onnx`` and a model-sized ``<uuid>.data`` to the cwd
when it gives up, and the quantizer's ``tempfile.TemporaryDirectory()`` calls go to the
system temp dir. ``build_folder`` points both at the build's own folder.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: what onnxruntime.tools.symbolic_shape_infer raises and the file it leaves in the cwd
GAVE_UP = "Incomplete symbolic shape inference"
GAVE_UP_FILE = "sym_shape_infer_temp.onnx"


@contextmanager
def build_folder(folder: Path) -> Iterator[Path]:
    """Run the enclosed calls with ``folder`` as the cwd and as ``tempfile``'s directory.

    Why the cwd: SymbolicShapeInference.infer_shapes saves its partial graph (with external
    data, so a <uuid>.data as large as the weights) to a relative path and takes no argument
    for it. Why tempfile.tempdir: quant_pre_process, quantize_static and the shape-inference
    helpers create TemporaryDirectory() with no dir argument. Both are process-wide, so callers
    pass absolute paths; stage builds run one at a time in a process (the load generators'
    threads start after every build), so nothing else sees the change.
    """
    folder = Path(folder).resolve()
    before_cwd, before_temp = os.getcwd(), tempfile.tempdir
    tempfile.tempdir = str(folder)
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(before_cwd)
        tempfile.tempdir = before_temp


def preprocess_for_static(src: Path, dst: Path, folder: Path) -> dict[str, Any]:
    """``quant_pre_process`` of ``src`` into ``dst`` (absolute paths), run in ``folder``
    (build_folder). Returns the record's ``shape_inference``: ``{"used": "symbolic"}``, or
    ``{"used": "onnx", "symbolic_gave_up_at": "<op> '<node>': ..."}`` where it gave up."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    with build_folder(folder):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
            return {"used": "symbolic"}
        except Exception as exc:  # noqa: BLE001 - ORT raises a bare Exception; any other one is re-raised
            if str(exc) != GAVE_UP:
                raise
        blocked = where_symbolic_stopped(folder / GAVE_UP_FILE)
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return {"used": "onnx", "symbolic_gave_up_at": blocked}


def where_symbolic_stopped(partial: Path) -> str:
    """The first node (in graph order) of the partial graph symbolic inference saved whose
    output it could not shape, with its input and output shapes: what blocks it."""
    import onnx
    if not partial.is_file():
        return f"unknown node (symbolic shape inference left no {partial.name} to read it from)"
    graph = onnx.load(str(partial), load_external_data=False).graph
    shapes = {v.name: _dims(v) for v in (*graph.input, *graph.value_info, *graph.output)}
    shapes.update({t.name: [str(d) for d in t.dims] for t in graph.initializer})
    for node in graph.node:
        lost = [o for o in node.output if o and (o not in shapes or shapes[o] is None
                                                  or any(d.startswith("unk__") or d == "?" for d in shapes[o]))]
        if lost:
            def said(names: Any) -> str:
                return ", ".join(f"{n} {_shape_text(shapes.get(n))}" for n in names if n)
            return f"{node.op_type} {node.name!r}: output {said(lost)} from input {said(node.input)}"
    return "unknown node (every output of the partial graph has a shape)"


def _dims(value: Any) -> list[str] | None:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return None
    return [str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in tensor.shape.dim]


def _shape_text(dims: list[str] | None) -> str:
    return "[unknown]" if dims is None else f"[{', '.join(dims)}]"
