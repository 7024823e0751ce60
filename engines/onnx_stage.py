"""The shared ONNX stage: export (or a user's .onnx file), transformer fusion, int8, fp16.

Every backend that consumes ONNX (ONNX Runtime, OpenVINO, a TensorRT engine) gets its graph
here, composed the way Polygraphy composes loaders: a step is a small frozen object holding
the step before it and its own parameters. Its cache key is the sha256 of the previous
step's key, those parameters and the versions of the libraries that shape its output, so a
step is materialized once per key through ``BuildSpec.store(kind="onnx-stage", ...)`` and
shared by every engine and precision that needs it (ONNX Runtime fp32 and int8 and OpenVINO
all start from one export). An entry holds ``model.onnx`` and ``stage.json``: what every step
up to this one did (exporter, fused operators, int8 scheme and operators ...), which engines
report in ``details()``. Without a store (``store=None``) steps build into a scratch dir.

An engine uses it as::

    step = plan(spec, "int8", fuse=True, use_gpu=False)  # export -> fuse -> quantize
    with open_stage(step, spec.store, workdir) as built:
        runtime_build(built.model)                       # its own artifact, its own entry
    record = built.record
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .onnx_quantize import RECIPES
from .onnx_shapes import build_folder
from .onnx_steps import (EXPORT_LIBRARIES, FP16, FUSE, ONNX_LIBRARIES, OPSET, STAGE_LIBRARIES, Built, Export,
                         Float16, Fuse, OnnxFile, Quantize, Step, WeightsNotInputs, old_ir)
from .spec import BuildSpec

__all__ = ["KIND", "MODEL", "RECORD", "PRECISIONS", "EXPORT_LIBRARIES", "ONNX_LIBRARIES", "STAGE_LIBRARIES",
           "Built", "Export", "Float16", "Fuse", "OnnxFile", "Quantize", "Step", "materialize", "open_stage",
           "plan", "recipe", "source"]

KIND = "onnx-stage"              # the store's kind (the cache's <root>/onnx-stage/<key>/)
MODEL = "model.onnx"
RECORD = "stage.json"
PRECISIONS = ("fp32", "fp16", "int8")


def recipe() -> dict[str, Any]:
    """Every fixed setting of the stage, for an engine's ``build_recipe`` (its own cache key
    then changes when the stage's recipes do)."""
    return {"opset": OPSET, "fuse": FUSE, "fp16": FP16, "int8": RECIPES}


def source(spec: BuildSpec) -> Step:
    """The first step: the user's file as given (one of IR < 4 without its weights as inputs:
    ``WeightsNotInputs``), or an export of the module."""
    if spec.onnx_file is None:
        return Export(spec)
    given = OnnxFile(Path(spec.onnx_file))
    return WeightsNotInputs(given) if old_ir(given.path) else given


def plan(spec: BuildSpec, precision: str, *, fuse: bool = False, use_gpu: bool = False) -> Step:
    """The usual chain for ``precision``: source [-> fuse] [-> quantize(spec.int8_scheme) | -> fp16].

    ``fuse`` applies the transformer fusions when the spec has transformer hints (an engine's
    policy: ONNX Runtime fuses for int8 only). fp32 is the source graph itself.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"the ONNX stage builds {PRECISIONS}; got precision {precision!r}")
    step = source(spec)
    if fuse and spec.transformer is not None:
        step = Fuse.from_hints(step, spec.transformer, use_gpu)
    if precision == "int8":
        step = Quantize(step, spec.int8_scheme, spec.calibration)
    elif precision == "fp16":
        step = Float16(step)
    return step


def materialize(step: Step, store: Callable[..., Path] | None, scratch: Path | None = None) -> Built:
    """``step``'s graph, built (after its parents) or taken from ``store``; uncached steps
    build into ``scratch``. A parent is only materialized when its child must be built."""
    ready = step.existing()
    if ready is not None:
        return ready

    def build(out: Path) -> None:
        src = materialize(step.parent, store, scratch) if step.parent is not None else None
        # every temporary file of the step's tools lives in the entry's own folder and goes with
        # it (build_folder: the cwd and tempfile's dir); paths absolute, as the cwd changes
        out, model = out.resolve(), src.model.resolve() if src else None
        with tempfile.TemporaryDirectory(dir=out, prefix=".tmp-") as tmp, build_folder(Path(tmp)):
            done = step.build(model, out / MODEL, Path(tmp))
        before = dict(src.record) if src else {}
        record = {**before, **done, "steps": [*before.get("steps", ()), step.kind], "stage_key": step.key[:16]}
        (out / RECORD).write_text(json.dumps(record, indent=1, default=str))

    if store is not None:
        out = store(KIND, step.key_fields(), build)
    else:
        if scratch is None:
            raise ValueError("materialize without a store needs a scratch directory")
        out = scratch / f"{step.kind}-{step.key[:16]}"
        if not (out / RECORD).is_file():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            try:
                build(out)
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)  # no half graph for a retry to pick up
                raise
    return Built(out / MODEL, json.loads((out / RECORD).read_text()))


@contextmanager
def open_stage(step: Step, store: Callable[..., Path] | None, workdir: Path) -> Iterator[Built]:
    """Materialize ``step`` for an engine building into ``workdir``. With a store the graphs
    live in the cache; without one they are built in a scratch dir under ``workdir`` that is
    removed on exit, so use ``built.model`` inside the ``with`` block."""
    if store is not None:
        yield materialize(step, store)
        return
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".onnx-stage-") as scratch:
        yield materialize(step, None, Path(scratch))
