"""What an engine is asked to build: the model, its I/O contract and the build hints."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DEVICES = ("cpu", "cuda")
#: static: QDQ with calibrated activations (CNNs); dynamic: activations quantized per call
#: (encoders); weight_only: int8 weights in blocks, what LLM decoders ship with
INT8_SCHEMES = ("static", "dynamic", "weight_only")


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
    module: Any
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

    def __post_init__(self) -> None:
        if self.onnx_exporter not in ("dynamo", "torchscript"):
            raise ValueError(f"onnx_exporter={self.onnx_exporter!r}; expected 'dynamo' or 'torchscript'")
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

    def positional(self, inputs: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(inputs[n] for n in self.input_names)
