"""The steps of the ONNX stage (engines/onnx_stage.py), each a small frozen object.

A step holds the step before it (``parent``; None for a source) and its own parameters. Its
cache key is the sha256 of the parent's key, those parameters and the versions of the
libraries that shape its output (``key_fields``); ``build`` writes its graph from the
parent's. Sources: ``Export`` (a torch module) and ``OnnxFile`` (a user's file, used as is);
transforms: ``Fuse`` (transformer fusions), ``Quantize`` (int8), ``Float16`` (fp16, fp32 I/O).
A new step is one more subclass; onnx_stage.materialize caches and chains any of them.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from .base import TORCH_LIBRARIES
from .cache import cache_key, file_sha256
from .onnx_export import export_onnx
from .onnx_quantize import CALIBRATED, RECIPES, quantize
from .onnx_rewrite import to_fp16
from .spec import INT8_SCHEMES, BuildSpec, TransformerHints

OPSET = 18
#: fusion settings: opt_level 0 leaves the rest of graph optimization to the runtime
FUSE = {"api": "onnxruntime.transformers.optimizer.optimize_model", "opt_level": 0}
FP16 = {"api": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True}
ONNX_LIBRARIES = ("onnx", "onnxruntime", "onnxruntime-gpu")
#: the exporter (onnxscript, onnx-ir), the model code and the graph format shape an export
EXPORT_LIBRARIES = (*TORCH_LIBRARIES, "onnx", "onnxscript", "onnx-ir")
#: every distribution a stage step depends on: for an engine's ``artifact_libraries``
STAGE_LIBRARIES = tuple(dict.fromkeys((*EXPORT_LIBRARIES, *ONNX_LIBRARIES)))


def library_versions(dists: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for dist in dists:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


@dataclass(frozen=True)
class Built:
    """A materialized step: its ONNX graph and the record of every step that made it."""

    model: Path
    record: Mapping[str, Any]


class Step(ABC):
    """One step of the stage; subclasses are frozen dataclasses whose fields are what they
    are built from, and whose ``params`` say which of those shape the graph (the key)."""

    kind: ClassVar[str]
    libraries: ClassVar[tuple[str, ...]] = ONNX_LIBRARIES
    #: the step before this one: a dataclass field of the steps that transform a graph, a
    #: class attribute None of the sources (no default here, or dataclasses would take it)
    parent: Step | None

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """This step's own settings (with the parent's key and versions, its cache key)."""

    @abstractmethod
    def build(self, src: Path | None, dst: Path, tmp: Path) -> dict[str, Any]:
        """Write the graph to ``dst`` from the parent's graph ``src`` (intermediates in
        ``tmp``); return what was done, for the record."""

    def existing(self) -> Built | None:
        """A graph that needs no build (a user's file): used as is, never copied."""
        return None

    def key_fields(self) -> dict[str, Any]:
        return {"step": self.kind, "parent": self.parent.key if self.parent else None,
                "params": self.params(), "versions": library_versions(self.libraries)}

    @cached_property
    def key(self) -> str:
        return cache_key(self.key_fields())


@dataclass(frozen=True)
class Export(Step):
    """torch -> ONNX with the spec's preferred exporter (the other one as a logged fallback)."""

    spec: BuildSpec = field(repr=False, compare=False)
    opset: int = OPSET
    kind: ClassVar[str] = "export"
    parent: ClassVar[None] = None
    libraries: ClassVar[tuple[str, ...]] = EXPORT_LIBRARIES

    def params(self) -> dict[str, Any]:
        s = self.spec
        return {"model": s.name, "module": f"{type(s.module).__module__}.{type(s.module).__qualname__}",
                "weights": self._weights, "inputs": [[n, str(s.example_inputs[n].dtype), list(s.example_inputs[n].shape)]
                                                     for n in s.input_names],
                "outputs": list(s.output_names), "dynamic_axes": {n: dict(a) for n, a in s.dynamic_axes.items()},
                "exporter": s.onnx_exporter, "opset": self.opset,
                # the module's config (an hf: directory's config.json) shapes the graph too
                "model_digest": s.model_digest}

    @cached_property
    def _weights(self) -> str:
        """sha256 of the module's state dict: the same name with other weights is another graph."""
        import torch
        h = hashlib.sha256()
        for name, t in sorted(self.spec.module.state_dict().items()):
            if not isinstance(t, torch.Tensor):  # a module's _extra_state: its type is all we can key
                h.update(f"{name}:{type(t).__qualname__}".encode())
                continue
            t = t.detach().contiguous().cpu()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()

    def build(self, src: Path | None, dst: Path, tmp: Path) -> dict[str, Any]:
        return {"exporter": export_onnx(self.spec, dst, prefer=self.spec.onnx_exporter, opset=self.opset)}


@dataclass(frozen=True)
class OnnxFile(Step):
    """A user's ONNX file, run as given: keyed by its bytes (and its external data's)."""

    path: Path
    kind: ClassVar[str] = "onnx-file"
    parent: ClassVar[None] = None
    libraries: ClassVar[tuple[str, ...]] = ()

    def params(self) -> dict[str, Any]:
        return {"sha256": {p.name: file_sha256(p) for p in onnx_files(self.path)}}

    def existing(self) -> Built:
        return Built(self.path, {"file": self.path.name, "steps": [self.kind], "stage_key": self.key[:16]})

    def build(self, src: Path | None, dst: Path, tmp: Path) -> dict[str, Any]:
        raise TypeError(f"{self.path} is used as given; OnnxFile is never built")


@dataclass(frozen=True)
class WeightsNotInputs(Step):
    """A graph of IR version < 4 with its weights no longer listed as graph inputs, at IR 4.

    Before IR 4 every initializer had to be a graph input too (the ONNX model zoo's older files:
    light_densenet121 lists 848 weights beside its one input). ONNX Runtime's optimized copy of
    such a graph keeps those inputs after its fusions drop their initializers, and then requires
    them when it runs (770 "Required inputs" there), so every engine built from it failed. IR 4
    is the first version that allows an initializer that is not an input; nothing else changes."""

    parent: Step
    kind: ClassVar[str] = "weights-not-inputs"
    libraries: ClassVar[tuple[str, ...]] = ("onnx",)

    def params(self) -> dict[str, Any]:
        return {"ir_version": 4}

    def build(self, src: Path | None, dst: Path, tmp: Path) -> dict[str, Any]:
        import onnx
        model = onnx.load(str(src))
        weights = {t.name for t in model.graph.initializer}
        kept = [i for i in model.graph.input if i.name not in weights]
        dropped = len(model.graph.input) - len(kept)
        del model.graph.input[:]
        model.graph.input.extend(kept)
        was, model.ir_version = model.ir_version, max(model.ir_version, 4)
        onnx.save(model, str(dst))  # not checked here: a legacy file the runtimes load as given must not stop at ONNX's checker
        return {"ir_version": {"from": was, "to": model.ir_version}, "weight_inputs_dropped": dropped}


def old_ir(path: Path) -> bool:
    """Whether the ONNX file at ``path`` predates IR 4 (its weights listed as inputs too); read
    once per file version (the stage plans each engine's chain from it). A file that is not
    there is not judged here: its step's key, which reads its bytes, says so where it is used."""
    try:
        stat = path.stat()
    except OSError:
        return False
    return _old_ir(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _old_ir(path: str, mtime_ns: int, size: int) -> bool:
    import onnx
    return onnx.load(path, load_external_data=False).ir_version < 4


@dataclass(frozen=True)
class Fuse(Step):
    """ONNX Runtime's transformer optimizer: Attention / LayerNorm / GELU fusions."""

    parent: Step
    model_type: str
    num_heads: int
    hidden_size: int
    use_gpu: bool = False
    kind: ClassVar[str] = "fuse"

    @classmethod
    def from_hints(cls, parent: Step, hints: TransformerHints, use_gpu: bool = False) -> Fuse:
        return cls(parent, hints.model_type, hints.num_heads, hints.hidden_size, use_gpu)

    def params(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "num_heads": self.num_heads, "hidden_size": self.hidden_size,
                "use_gpu": self.use_gpu, **FUSE}

    def build(self, src: Path | None, dst: Path, tmp: Path) -> dict[str, Any]:
        from onnxruntime.transformers import optimizer
        opt = optimizer.optimize_model(str(src), model_type=self.model_type, num_heads=self.num_heads,
                                       hidden_size=self.hidden_size, opt_level=FUSE["opt_level"], use_gpu=self.use_gpu)
        opt.save_model_to_file(str(dst))
        return {"fused_operators": {k: v for k, v in opt.get_fused_operator_statistics().items() if v}}


@dataclass(frozen=True)
class Quantize(Step):
    """int8 with one of INT8_SCHEMES (engines/onnx_quantize.py); static schemes calibrate on
    ``calibration()``'s batches, whose bytes are part of the key."""

    parent: Step
    scheme: str
    calibration: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    kind: ClassVar[str] = "quantize"

    def __post_init__(self) -> None:
        if self.scheme not in INT8_SCHEMES:
            raise ValueError(f"int8 scheme {self.scheme!r}; expected one of {INT8_SCHEMES}")
        if self.scheme in CALIBRATED and self.calibration is None:
            raise ValueError(f"int8 scheme {self.scheme!r} calibrates activations and needs a calibration set; "
                             f"the spec has none (schemes without one: "
                             f"{sorted(set(INT8_SCHEMES) - CALIBRATED)})")

    @cached_property
    def _batches(self) -> list[dict[str, Any]] | None:
        if self.scheme not in CALIBRATED:
            return None
        return [{n: _numpy(v) for n, v in batch.items()} for batch in self.calibration()]

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scheme": self.scheme, "recipe": RECIPES[self.scheme]}
        if self._batches is not None:
            h = hashlib.sha256()
            for batch in self._batches:
                for n, a in sorted(batch.items()):
                    h.update(f"{n}:{a.dtype}:{a.shape}".encode())
                    h.update(a.tobytes())
            out["calibration"] = {"batches": len(self._batches), "sha256": h.hexdigest()}
        return out

    def build(self, src: Path | None, dst: Path, tmp: Path) -> dict[str, Any]:
        return quantize(self.scheme, src, dst, tmp, self._batches)


@dataclass(frozen=True)
class Float16(Step):
    """fp16 weights and activations, fp32 inputs and outputs (callers keep feeding float32)."""

    parent: Step
    kind: ClassVar[str] = "fp16"

    def params(self) -> dict[str, Any]:
        return dict(FP16)

    def build(self, src: Path | None, dst: Path, tmp: Path) -> dict[str, Any]:
        to_fp16(src, dst, keep_io_types=FP16["keep_io_types"])
        return {"fp16_io": "float32" if FP16["keep_io_types"] else "float16"}


def onnx_files(path: Path) -> list[Path]:
    """``path`` and the external-data files its tensors point to (they are part of the model)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data
    model = onnx.load(str(path), load_external_data=False)
    external = {ExternalDataInfo(t).location for t in _tensors(model.graph) if uses_external_data(t)}
    return [path, *(path.parent / loc for loc in sorted(external))]


def _tensors(graph: Any) -> Iterator[Any]:
    """Initializers and constant tensors of ``graph`` and its subgraphs (If / Loop bodies)."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _tensors(sub)


def _numpy(value: Any) -> Any:
    import numpy as np
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
