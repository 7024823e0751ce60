"""Naming a model to a fresh process (the per-engine memory child, a cold start), so that process
registers it the same way: the built-in models, an ``hf:``/``onnx:`` source with its settings, or
the module that registered it at run time (a test module, a conftest.py)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from .builtin import register_builtin_models
from .registry import MODELS, get_model
from .sources import registered_source, resolve
from .user_inputs import attach_inputs


def model_handoff(name: str) -> dict[str, Any]:
    """What :func:`register_handed_off` needs in the other process (JSON-serialisable)."""
    module, root = _registering_module(get_model(name).factory)
    inputs = get_model(name).inputs_file  # the user's own inputs: the child measures on the same data
    return {"model": name, "source": registered_source(name), "model_module": module, "model_root": root,
            "inputs": str(inputs) if inputs is not None else None}


def register_handed_off(req: dict[str, Any]) -> None:
    """Register the model ``req`` names in this process; LookupError when it cannot be."""
    register_builtin_models()
    if req.get("source"):  # an hf:/onnx: model: registered at run time, so again here with its settings
        entry, seq_len, dims = req["source"]
        resolve(entry, seq_len=seq_len, dims=dims)
    if req["model"] not in MODELS and req.get("model_module"):
        sys.path.insert(0, req["model_root"])
        importlib.import_module(req["model_module"])
    if req["model"] in MODELS and req.get("inputs") and get_model(req["model"]).inputs_file is None:
        attach_inputs(req["model"], req["inputs"])
    if req["model"] not in MODELS:
        raise LookupError(f"model {req['model']!r} is not registered in a fresh interpreter (registered at run "
                          "time, e.g. in a conftest.py hook), so it cannot be measured in a process of its own")


def _registering_module(factory: Any) -> tuple[str | None, str | None]:
    """The module that defines the model's factory and the sys.path root it imports from: the
    child imports it when the built-in registry lacks the model."""
    name = getattr(factory, "__module__", None)
    file = getattr(sys.modules.get(name or ""), "__file__", None)
    if not name or name == "__main__" or not file:
        return None, None
    root = Path(file).resolve().parent
    for _ in range(name.count(".") + (Path(file).name == "__init__.py")):
        root = root.parent
    return name, str(root)
