"""Model sources named on the command line or in a config file.

``resnet50`` is a registered name; ``hf:PATH`` a local Hugging Face directory (models/hf.py);
``onnx:PATH`` an ONNX file (models/onnx_file.py). A source is registered under its directory's
or file's name (``hf:~/models/my-encoder`` -> ``my-encoder``), which is what ids and reports
show. Nothing is downloaded: a path that is missing or incomplete is an error naming it.

A source is registered once per process, with one setting (an hf: text model's ``seq_len``, an
onnx: file's symbolic ``dims``): naming it again with another setting is an error naming both.
``registered_source`` gives a registered source back as what re-registers it in another process
(the per-engine memory subprocess, runner/memory.py).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from .registry import MODELS

PREFIXES = ("hf:", "onnx:")
#: name -> the path it came from (one name, one path)
_PATHS: dict[str, Path] = {}
#: name -> (the entry with its absolute path, seq_len, the dims the graph took) it was registered with
_SETTINGS: dict[str, tuple[str, int, dict[str, int]]] = {}


class SourceError(ValueError):
    """A model source that cannot be used: its message names the bad value and the choices."""


def is_source(entry: str) -> bool:
    return entry.startswith(PREFIXES)


def source_name(entry: str) -> str:
    """The name a source is shown under: its directory's or file's name without the suffix."""
    path = Path(entry.split(":", 1)[1]).expanduser()
    return path.stem if entry.startswith("onnx:") else path.name


def registered_source(name: str) -> tuple[str, int, dict[str, int]] | None:
    """(entry, seq_len, dims) that register model ``name`` again through ``resolve`` (the entry with
    its absolute path); None for a model that did not come from a source."""
    if name not in _SETTINGS:
        return None
    entry, seq_len, dims = _SETTINGS[name]
    return entry, seq_len, dict(dims)


def resolve(entry: str, *, seq_len: int = 128, dims: Mapping[str, int] | None = None,
            strict_dims: Collection[str] = ()) -> str:
    """Register ``entry`` (if it is a source) and return the model name to use. ``strict_dims``:
    names of ``dims`` that must be symbolic dims of an onnx: file (the model's own table)."""
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
    try:
        if name in _PATHS:
            problem = _other_setting(name, kind, seq_len, dict(dims or {}), strict_dims)
        elif kind == "hf":
            from .hf import register_hf_directory
            register_hf_directory(path, name=name, seq_len=seq_len)
            problem, _SETTINGS[name] = None, (f"hf:{path}", seq_len, {})
        else:
            from .onnx_file import register_onnx_file
            spec = register_onnx_file(path, name=name, dims=dict(dims or {}), strict=strict_dims)
            problem, _SETTINGS[name] = None, (f"onnx:{path}", seq_len, dict(spec.dim_values))
    except (FileNotFoundError, ValueError) as exc:
        raise SourceError(f"{entry}: {exc}") from exc
    if problem:
        raise SourceError(f"{entry} is named twice with different settings: {problem}; a source is registered "
                          "once per run, so give every mention of it the same setting")
    _PATHS[name] = path
    return name


def _other_setting(name: str, kind: str, seq_len: int, dims: dict[str, int], strict_dims: Collection[str]) -> str | None:
    """Both settings, where a source named again asks for another one than it was registered with
    (only what the model takes counts: an image model has no seq_len, a graph only its own dims)."""
    from .hf_inputs import TokenizedSentences
    _, first_seq_len, first_dims = _SETTINGS[name]
    spec = MODELS[name]
    if kind == "hf" and isinstance(spec.make_inputs, TokenizedSentences) and seq_len != first_seq_len:
        return f"seq_len={first_seq_len} and seq_len={seq_len}"
    if kind == "onnx":
        now = spec.dims_for(dims, strict_dims)
        if now != first_dims:
            return f"dims {first_dims} and dims {now}"
    return None
