"""The engine registry: adding a backend is one module plus one line here."""
from __future__ import annotations

from .base import Engine
from .onnxruntime_engine import OnnxRuntimeEngine
from .onnxruntime_tensorrt import OnnxRuntimeTensorRtEngine
from .openvino_engine import OpenVinoEngine
from .tensorrt_engine import TensorRTEngine
from .torch_compile import TorchCompileCudaGraphsEngine, TorchCompileEngine
from .torch_eager import TorchEagerEngine
from .torchscript import TorchScriptEngine

ENGINES: dict[str, type[Engine]] = {}


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Add ``cls`` to the registry (usable as a class decorator by out-of-tree engines)."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__qualname__} has no 'name' class attribute")
    if cls.name in ENGINES and ENGINES[cls.name] is not cls:
        raise ValueError(f"engine name {cls.name!r} is already registered by {ENGINES[cls.name].__qualname__}")
    ENGINES[cls.name] = cls
    return cls


def get_engine(name: str) -> type[Engine]:
    try:
        return ENGINES[name]
    except KeyError:
        raise KeyError(f"unknown engine {name!r}; registered engines: {sorted(ENGINES)}") from None


for _cls in (TorchEagerEngine, TorchScriptEngine, TorchCompileEngine, TorchCompileCudaGraphsEngine,
             OnnxRuntimeEngine, OpenVinoEngine, TensorRTEngine):
    register_engine(_cls)
register_engine(OnnxRuntimeTensorRtEngine)  # ONNX Runtime with its TensorRT EP

BASELINE_ENGINE = TorchEagerEngine.name


def baseline_for(source: str) -> str:
    """The engine whose fp32 outputs are the reference for a model of ``source``
    (class data ``reference_for``: PyTorch eager for modules, ONNX Runtime CPU for ONNX files)."""
    # declared on the class itself: a subclass (a test's slowed-down eager) is not a reference
    found = [name for name, cls in ENGINES.items() if source in vars(cls).get("reference_for", ())]
    if len(found) != 1:
        raise LookupError(f"expected one registered engine with {source!r} in reference_for; found {found}")
    return found[0]
