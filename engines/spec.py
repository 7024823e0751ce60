"""What an engine is asked to build: the model, its I/O contract and the build hints."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infermatrix.core.schema import DEVICES, INT8_SCHEMES, PRECISIONS  # noqa: F401  (re-exported)

# the axes' values are part of the results schema (core/schema.py), defined there once. The int8
# recipes: static = Q/DQ with activation ranges calibrated on sample inputs; dynamic = weights int8,
# activations quantized per call; each with one weight scale per tensor or per output channel;
# weight_only = int8 weights in blocks of 32 (MatMulNBits), what LLM decoders ship with. Which an
# engine builds is its class data ``Engine.int8_schemes``.
#: where a model comes from: a torch module (code, zoo, hf: directories) or an ONNX file (onnx:)
SOURCES = ("torch", "onnx")


@dataclass(frozen=True)
class TransformerHints:
    """What ONNX Runtime's transformer optimizer needs to fuse attention."""

    model_type: str  # onnxruntime.transformers.optimizer model type, e.g. "bert"
    num_heads: int
    hidden_size: int


@dataclass(frozen=True)
class BuildSpec:
    """Everything an engine may need to build an artifact from a PyTorch model.

    ``module`` is the fp32 ``torch.nn.Module`` in eval mode; it takes the inputs
    positionally in ``input_names`` order and returns a tensor or a tuple of tensors in
    ``output_names`` order. ``example_inputs`` are CPU tensors (batch >= 2 so that
    exporters do not specialise the batch axis to 1).
    """

    name: str
    module: Any                      # None for an onnx: model (``onnx_file`` is the model then)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    example_inputs: Mapping[str, Any]
    int8_scheme: str = "static"
    calibration: Callable[[], Iterable[Mapping[str, np.ndarray]]] | None = None
    transformer: TransformerHints | None = None
    #: exporter tried first by ONNX-based engines ("dynamo" or "torchscript")
    onnx_exporter: str = "dynamo"
    #: non-batch axes that vary between calls, by input/output name: {name: {axis: label}}
    #: (a decoder's sequence and KV-cache lengths). Only engines with ``dynamic_shapes`` take them.
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    #: the user's own ONNX file (onnx: models): ONNX engines run it as given, no export
    onnx_file: Path | None = None
    #: cache for intermediate artifacts shared by engines (the ONNX stage):
    #: ``store(kind, key_fields, build(stage_dir)) -> entry dir``; None builds uncached in place
    store: Callable[[str, Mapping[str, Any], Callable[[Path], None]], Path] | None = None
    #: digest of everything that defines the model (weights, config and tokenizer files, an
    #: ONNX file's external data): keys the shared intermediate artifacts ("" when unknown)
    model_digest: str = ""

    def __post_init__(self) -> None:
        if self.onnx_exporter not in ("dynamo", "torchscript"):
            raise ValueError(f"onnx_exporter={self.onnx_exporter!r}; expected 'dynamo' or 'torchscript'")
        if self.module is not None and self.onnx_file is not None:
            raise ValueError(f"{self.name}: give a module (a torch model) or an onnx_file, not both")
        if self.int8_scheme not in INT8_SCHEMES:
            raise ValueError(f"int8_scheme={self.int8_scheme!r}; expected one of {INT8_SCHEMES}")
        missing = [n for n in self.input_names if n not in self.example_inputs]
        if missing:
            raise ValueError(f"example_inputs lacks {missing}; expected keys {self.input_names}")
        names = (*self.input_names, *self.output_names)
        unknown = [n for n in self.dynamic_axes if n not in names]
        if unknown or any(0 in axes for axes in self.dynamic_axes.values()):
            raise ValueError(f"dynamic_axes {dict(self.dynamic_axes)}: names must be among {names} "
                             "and axis 0 (batch) is always dynamic, so it is not listed")

    @property
    def source(self) -> str:
        """"onnx" for a user's ONNX file, "torch" for a module."""
        return "onnx" if self.onnx_file is not None else "torch"

    def positional(self, inputs: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(inputs[n] for n in self.input_names)
