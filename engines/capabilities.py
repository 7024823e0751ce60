"""What an engine can do, asked of its class data (the matrix generator's questions).

Engine (engines/base.py) declares the data (capabilities, requires, int8_schemes ...); these
class-level queries read it, so nothing outside an engine branches on its name.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

from .spec import INT8_SCHEMES


class EngineCapabilities:
    """Class-level queries over an engine's declared data (mixed into Engine)."""

    @classmethod
    def precisions(cls) -> frozenset[str]:
        return frozenset().union(*cls.capabilities.values())

    @classmethod
    def devices(cls) -> frozenset[str]:
        return frozenset(cls.capabilities)

    @classmethod
    def unsupported_reason(cls, device: str, precision: str) -> str | None:
        if device not in cls.capabilities:
            return f"{cls.name} does not run on {device!r}; it runs on {sorted(cls.capabilities)}"
        if precision not in cls.capabilities[device]:
            return (f"{cls.name} does not support {precision!r} on {device}; "
                    f"supported there: {sorted(cls.capabilities[device])}")
        return None

    @classmethod
    def source_problem(cls, source: str) -> str | None:
        """Why this engine cannot build a model of ``source`` (None when it can)."""
        if source in cls.consumes:
            return None
        if source == "onnx":
            return f"{cls.name} needs a torch module; an onnx: model is an ONNX file (engines for it: the ONNX consumers)"
        return f"{cls.name} builds from {sorted(cls.consumes)} models only; this one is a {source} model"

    @classmethod
    def scheme_problem(cls, scheme: str) -> str | None:
        """Why this engine cannot build int8 ``scheme`` (None when it can)."""
        if scheme in cls.int8_schemes:
            return None
        return (f"{cls.name} has no int8 scheme {scheme!r}; it builds {sorted(cls.int8_schemes) or 'no int8'} "
                f"(all schemes: {', '.join(INT8_SCHEMES)})")

    @classmethod
    def missing_requirements(cls) -> list[str]:
        """Modules in ``requires`` that are not installed (no import is performed)."""
        return [m for m in cls.requires if importlib.util.find_spec(m) is None]

    @classmethod
    def is_installed(cls) -> bool:
        return not cls.missing_requirements()

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        """Version of every distribution in ``artifact_libraries`` (package metadata, no
        import); one that is not installed is recorded as such, so installing it changes the key."""
        out = {}
        for dist in cls.artifact_libraries:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "not installed"
        return out

    @classmethod
    def build_recipe(cls) -> dict[str, Any]:
        """Class-level settings that shape the artifact; part of the cache key, so changing
        how an engine builds invalidates what it built before."""
        return {}
