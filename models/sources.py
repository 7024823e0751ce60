"""Model sources named on the command line or in a config file.

``resnet50`` is a registered name; ``hf:PATH`` a local Hugging Face directory (models/hf.py);
``onnx:PATH`` an ONNX file (models/onnx_file.py). A source is registered under its directory's
or file's name (``hf:~/models/my-encoder`` -> ``my-encoder``), which is what ids and reports
show. Nothing is downloaded: a path that is missing or incomplete is an error naming it.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .registry import MODELS

PREFIXES = ("hf:", "onnx:")
#: source entry -> registered name, and name -> the path it came from (one name, one path)
_RESOLVED: dict[str, str] = {}
_PATHS: dict[str, Path] = {}


class SourceError(ValueError):
    """A model source that cannot be used: its message names the bad value and the choices."""


def is_source(entry: str) -> bool:
    return entry.startswith(PREFIXES)


def source_name(entry: str) -> str:
    """The name a source is shown under: its directory's or file's name without the suffix."""
    path = Path(entry.split(":", 1)[1]).expanduser()
    return path.stem if entry.startswith("onnx:") else path.name


def resolve(entry: str, *, seq_len: int = 128, dims: Mapping[str, int] | None = None) -> str:
    """Register ``entry`` (if it is a source) and return the model name to use."""
    if not is_source(entry):
        if entry not in MODELS:
            raise SourceError(f"unknown model {entry!r}; registered models: {', '.join(sorted(MODELS))} "
                              f"(or a source: {' / '.join(p + 'PATH' for p in PREFIXES)})")
        return entry
    kind, raw = entry.split(":", 1)
    if not raw:
        raise SourceError(f"model source {entry!r} names no path; e.g. hf:./my-model or onnx:./model.onnx")
    path = Path(raw).expanduser().resolve()
    name = source_name(entry)
    if name in _PATHS and _PATHS[name] != path:
        raise SourceError(f"two model sources share the name {name!r}: {_PATHS[name]} and {path}; "
                          "rename one (the name shown in ids and reports is the directory's or file's name)")
    if name in MODELS and name not in _PATHS:
        raise SourceError(f"model source {entry!r} would be named {name!r}, which is a registered model; rename it")
    if name not in _PATHS:
        try:
            if kind == "hf":
                from .hf import register_hf_directory
                register_hf_directory(path, name=name, seq_len=seq_len)
            else:
                from .onnx_file import register_onnx_file
                register_onnx_file(path, name=name, dims=dict(dims or {}))
        except (FileNotFoundError, ValueError) as exc:
            raise SourceError(f"{entry}: {exc}") from exc
        _PATHS[name] = path
    _RESOLVED[entry] = name
    return name
