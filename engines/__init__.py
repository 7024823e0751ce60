"""Inference backends behind one protocol (see engines.base.Engine), the shared ONNX stage
(export, transformer fusion, int8 quantization, fp16 conversion) and the artifact cache."""
from .base import (DEVICES, INT8_SCHEMES, PRECISIONS, SOURCES, BuildSpec, Engine, EngineError, EngineUnavailable,
                   Outputs, TransformerHints)
from .registry import BASELINE_ENGINE, ENGINES, baseline_for, get_engine, register_engine

__all__ = ["DEVICES", "INT8_SCHEMES", "PRECISIONS", "SOURCES", "BuildSpec", "Engine", "EngineError",
           "EngineUnavailable", "Outputs", "TransformerHints", "BASELINE_ENGINE", "ENGINES", "baseline_for",
           "get_engine", "register_engine"]
