"""What a torch module computes, as a digest: part of every cache key (with its weights).

Two modules with the same weights can compute different things (an extra branch, a changed
activation, a stride). The weights digest alone would let a cache entry built from the old code
be reused, and the run would time the old graph. The digest here covers:

- the source file of every class in the module tree (``type(m).__mro__`` for each submodule),
  and the source files of the functions, classes and modules those files' globals name (one
  level: a helper imported from another file is covered, a helper *that* helper imports is not);
- the factory's file (``extra``: the ModelSpec factory, which picks the constructor arguments);
- each submodule's ``repr`` (hyper-parameters such as stride or padding that change no weight
  shape) and its plain attributes (numbers, strings, flags set in ``__init__``).

Files inside torch itself are skipped: torch's version is already in the key. Only Python
source files are read (extension modules are covered by their package's version where the key
holds it). File hashes are memoised by (path, mtime, size), so a repeated digest costs a stat per
file: milliseconds for a transformer. What it cannot see is written in docs/cache.md ("Key").
"""
from __future__ import annotations

import hashlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

_PLAIN = (bool, int, float, str, bytes, type(None))
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")  # an object's id in a repr: differs between processes
_HASHES: dict[tuple[str, int, int], str] = {}


def _torch_dir() -> str:
    import torch
    return os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


def _source_file(obj: Any) -> str | None:
    """The .py file that defines ``obj`` (a class, function or module), or None (builtin, C, exec'd)."""
    if isinstance(obj, ModuleType):
        path = getattr(obj, "__file__", None)
    else:
        mod = sys.modules.get(getattr(obj, "__module__", None) or "")
        path = getattr(mod, "__file__", None)
        if path is None:
            try:
                path = inspect.getsourcefile(obj)
            except (TypeError, OSError):
                return None
    if not path or not str(path).endswith(".py"):
        return None
    return os.path.abspath(path)


def _file_hash(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    memo = (path, st.st_mtime_ns, st.st_size)
    if memo not in _HASHES:
        with open(path, "rb") as f:
            _HASHES[memo] = hashlib.sha256(f.read()).hexdigest()
    return _HASHES[memo]


def _globals_files(module_file: str, module_name: str) -> Iterable[str]:
    """The files of what ``module_name``'s globals name: one level of its imports."""
    mod = sys.modules.get(module_name)
    if mod is None or getattr(mod, "__file__", None) is None or os.path.abspath(mod.__file__) != module_file:
        return ()
    found = []
    for name, value in list(vars(mod).items()):
        # a name the source can write: pytest's assertion rewriting adds "@py_builtins" and
        # "@pytest_ar" to a test module's globals, which a fresh interpreter's import lacks
        if not name.isidentifier() or name.startswith("__"):
            continue
        if isinstance(value, ModuleType) or inspect.isclass(value) or inspect.isfunction(value):
            path = _source_file(value)
            if path is not None:
                found.append(path)
    return found


def _plain_state(module: Any) -> str:
    """A submodule's attributes that are plain values (what ``__init__`` set besides weights)."""
    items = []
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or name == "training":
            continue
        if isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value)):
            items.append(f"{name}={value!r}")
    return ",".join(items)


def code_files(module: Any, extra: Iterable[Callable[..., Any]] = ()) -> dict[str, str]:
    """{source file: sha256} of what ``module`` (and the ``extra`` callables) run, torch excluded."""
    torch_dir = _torch_dir()
    classes: dict[type, None] = {}
    for m in module.modules():
        for cls in type(m).__mro__:
            if cls is not object:
                classes.setdefault(cls)
    direct: dict[str, str] = {}  # file -> its module's name
    for obj in [*classes, *extra]:
        path = _source_file(obj)
        if path is not None and not path.startswith(torch_dir):
            direct.setdefault(path, getattr(obj, "__module__", "") or "")
    files = set(direct)
    for path, name in direct.items():
        files.update(p for p in _globals_files(path, name) if not p.startswith(torch_dir))
    return {p: _file_hash(p) for p in sorted(files)}


def code_digest(module: Any, extra: Iterable[Callable[..., Any]] = ()) -> str:
    """sha256 over the code files, the classes' names, each submodule's repr and plain attributes."""
    extra = tuple(extra)
    h = hashlib.sha256()
    for path, digest in code_files(module, extra).items():
        # the file's name, not its absolute path: a clone elsewhere (or a CI checkout) keeps its keys
        h.update(f"file:{Path(path).name}:{digest}\n".encode())
    for name, m in module.named_modules():
        cls = type(m)
        h.update(f"mod:{name}:{cls.__module__}.{cls.__qualname__}:{_plain_state(m)}\n".encode())
    h.update(_ADDRESS.sub("0x?", repr(module)).encode())
    for fn in extra:
        h.update(f"extra:{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}\n".encode())
    return h.hexdigest()
