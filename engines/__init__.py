"""Inference backends behind one protocol (see engines.base.Engine)."""
from .base import (DEVICES, PRECISIONS, BuildSpec, Engine, EngineError, EngineUnavailable,
                   Outputs, TransformerHints)
from .registry import BASELINE_ENGINE, ENGINES, get_engine, register_engine

__all__ = ["DEVICES", "PRECISIONS", "BuildSpec", "Engine", "EngineError", "EngineUnavailable",
           "Outputs", "TransformerHints", "BASELINE_ENGINE", "ENGINES", "get_engine", "register_engine"]
