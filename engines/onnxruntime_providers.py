"""ONNX Runtime execution providers as typed settings, and the check that one really loaded.

Each provider's settings are a frozen dataclass validated on construction: the engine records
them (``Engine.settings()``: the cache key and each case's extra_info) and turns them into the
provider options ONNX Runtime parses, in its own spelling:

- CUDA EP: names from onnxruntime/core/providers/cuda/cuda_execution_provider_info.cc
  (``device_id``, ``cudnn_conv_algo_search`` EXHAUSTIVE|HEURISTIC|DEFAULT, ``use_tf32``,
  ``enable_cuda_graph``, ``prefer_nhwc``); booleans as "1"/"0", the spelling its parser accepts
  (core/common/parse_string.h takes 0/1/true/false) and the one ``get_provider_options()`` reports.
- TensorRT EP: names from onnxruntime/core/providers/tensorrt/tensorrt_execution_provider_info.cc
  (``trt_fp16_enable``, ``trt_int8_enable``, ``trt_engine_cache_enable``/``_path``,
  ``trt_timing_cache_enable``/``_path``, ``trt_profile_min/opt/max_shapes``,
  ``trt_cuda_graph_enable``); booleans as "True"/"False": the Python binding's TensorRT parser
  (onnxruntime_pybind_state.cc) rejects anything but True/true/False/false, and the EP docs
  say "for bool type options in python API, set them as False/True".

An InferenceSession asked for a provider that cannot load does not fail: it warns and runs on
the CPU (reproduced in tests/test_ort_providers.py with the CPU wheel asked for CUDA).
``provider_fallback`` compares what was asked with ``session.get_providers()``; the engine
turns a fallback into a skip with the reason, so a CPU number is never filed under cuda. The
reason quotes what ONNX Runtime said: a provider missing from the build is a Python warning, but
one that is built in and fails to load (a missing libcudnn, libnvinfer) is only logged by ORT's
C++ logger on file descriptor 2, which ``native_stderr`` captures around session creation (and
writes back, so nothing is hidden).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path, PurePosixPath

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
#: cuDNN convolution algorithm search modes, as the CUDA EP spells them
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


def _flag(value: bool, spelling: tuple[str, str]) -> str:
    return spelling[0] if value else spelling[1]


def _check_types(obj: object, fields: Mapping[str, type]) -> None:
    """Strict types: a provider option built from "0" or 1.0 would mean something else."""
    for name, kind in fields.items():
        value = getattr(obj, name)
        # bool is an int subclass: device_id=True must not pass as device 1
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{type(obj).__name__}.{name}={value!r}; expected {kind.__name__}")


@dataclass(frozen=True)
class CudaProviderSettings:
    """The CUDA EP's options. ``use_tf32`` follows the run's TF32 policy (Engine.tf32): the CUDA
    EP turns TF32 *on* unless told otherwise (cuda_execution_provider_info.h: use_tf32{true}),
    so an fp32 row is fp32 only because this says "0"."""

    use_tf32: bool
    device_id: int = 0
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    #: replays one captured graph per session; needs fixed I/O addresses (IO binding does that)
    enable_cuda_graph: bool = False
    prefer_nhwc: bool = False

    name: ClassVar[str] = CUDA  # the provider these options are for (not a field)
    #: options whose applied value the engine reads back from get_provider_options()
    checked: ClassVar[tuple[str, ...]] = ("use_tf32", "cudnn_conv_algo_search", "enable_cuda_graph", "prefer_nhwc")

    def __post_init__(self) -> None:
        _check_types(self, {"use_tf32": bool, "device_id": int, "cudnn_conv_algo_search": str,
                            "enable_cuda_graph": bool, "prefer_nhwc": bool})
        if self.device_id < 0:
            raise ValueError(f"CudaProviderSettings.device_id={self.device_id}; expected >= 0")
        if self.cudnn_conv_algo_search not in CONV_ALGO_SEARCH:
            raise ValueError(f"CudaProviderSettings.cudnn_conv_algo_search={self.cudnn_conv_algo_search!r}; "
                             f"expected one of {CONV_ALGO_SEARCH}")

    def provider_options(self, entry: Path | None = None) -> dict[str, str]:
        """The options ONNX Runtime parses (``entry`` is unused: nothing of the CUDA EP is cached)."""
        on_off = ("1", "0")
        return {"device_id": str(self.device_id), "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
                "use_tf32": _flag(self.use_tf32, on_off), "enable_cuda_graph": _flag(self.enable_cuda_graph, on_off),
                "prefer_nhwc": _flag(self.prefer_nhwc, on_off)}


@dataclass(frozen=True)
class TensorRtProviderSettings:
    """The TensorRT EP's options. Cache paths are relative to the engine's cache entry, so the
    recorded settings (the cache key) never hold a temporary build path; ``provider_options``
    resolves them under the entry it is given. Profile shapes use the EP's format,
    ``name:1x3x32x32,other:...``; give all three or none."""

    fp16: bool = False
    int8: bool = False
    device_id: int = 0
    engine_cache_path: str = "trt-engines"
    timing_cache_path: str = "trt-timing"
    profile_min_shapes: str = ""
    profile_opt_shapes: str = ""
    profile_max_shapes: str = ""
    cuda_graph: bool = False

    name: ClassVar[str] = TENSORRT
    checked: ClassVar[tuple[str, ...]] = ("trt_fp16_enable", "trt_int8_enable", "trt_engine_cache_enable",
                                          "trt_timing_cache_enable", "trt_cuda_graph_enable")

    def __post_init__(self) -> None:
        _check_types(self, {"fp16": bool, "int8": bool, "device_id": int, "engine_cache_path": str,
                            "timing_cache_path": str, "profile_min_shapes": str, "profile_opt_shapes": str,
                            "profile_max_shapes": str, "cuda_graph": bool})
        if self.device_id < 0:
            raise ValueError(f"TensorRtProviderSettings.device_id={self.device_id}; expected >= 0")
        for field_name in ("engine_cache_path", "timing_cache_path"):
            rel = PurePosixPath(getattr(self, field_name))
            if not rel.parts or rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"TensorRtProviderSettings.{field_name}={getattr(self, field_name)!r}: expected a "
                                 "relative path inside the engine's cache entry (no '..', not absolute)")
        profiles = (self.profile_min_shapes, self.profile_opt_shapes, self.profile_max_shapes)
        if any(profiles):
            if not all(profiles):
                raise ValueError("TensorRtProviderSettings: give profile_min_shapes, profile_opt_shapes and "
                                 "profile_max_shapes together (the EP needs all three) or none")
            check_profile(*(parse_shapes(p) for p in profiles))

    def provider_options(self, entry: Path | None = None) -> dict[str, str]:
        """Options for an engine whose cache entry is ``entry`` (build dir or final dir)."""
        if entry is None:
            raise ValueError("TensorRtProviderSettings.provider_options needs the cache entry its caches live in")
        true_false = ("True", "False")
        options = {"device_id": str(self.device_id),
                   "trt_fp16_enable": _flag(self.fp16, true_false), "trt_int8_enable": _flag(self.int8, true_false),
                   "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(Path(entry) / self.engine_cache_path),
                   "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(Path(entry) / self.timing_cache_path),
                   "trt_cuda_graph_enable": _flag(self.cuda_graph, true_false)}
        if self.profile_min_shapes:
            options.update(trt_profile_min_shapes=self.profile_min_shapes,
                           trt_profile_opt_shapes=self.profile_opt_shapes,
                           trt_profile_max_shapes=self.profile_max_shapes)
        return options


def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """``"x:1x3x32x32,y:1x8"`` -> ``{"x": (1, 3, 32, 32), "y": (1, 8)}``; a clear error otherwise."""
    out: dict[str, tuple[int, ...]] = {}
    for item in text.split(","):
        name, sep, dims = item.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d < 1 for d in shape) or name in out:
            raise ValueError(f"profile shapes {text!r}: {item!r} is not 'name:d1xd2x...' with positive dims "
                             "and a name used once")
        out[name] = shape
    return out


def check_profile(low: Mapping[str, tuple[int, ...]], opt: Mapping[str, tuple[int, ...]],
                  high: Mapping[str, tuple[int, ...]]) -> None:
    """Same inputs and ranks in the three shapes, and min <= opt <= max in every dimension."""
    if not set(low) == set(opt) == set(high):
        raise ValueError(f"profile shapes name different inputs: min {sorted(low)}, opt {sorted(opt)}, max {sorted(high)}")
    for name in low:
        a, b, c = low[name], opt[name], high[name]
        if not len(a) == len(b) == len(c) or not all(x <= y <= z for x, y, z in zip(a, b, c)):
            raise ValueError(f"profile shapes of {name!r}: need min <= opt <= max with one rank; got {a}, {b}, {c}")


def format_profile(profile: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]) -> tuple[str, str, str]:
    """``{input: (min, opt, max)}`` (engines/tensorrt_plan.py ``profile_shapes``, shared with the
    ``tensorrt`` engine) as the EP's three strings, ``"x:1x3x32x32,y:..."`` each."""
    if not profile:
        raise ValueError("profile shapes need at least one input")

    def one(i: int) -> str:
        return ",".join(f"{n}:{'x'.join(str(int(d)) for d in shapes[i])}" for n, shapes in profile.items())
    low, opt, high = one(0), one(1), one(2)
    check_profile(parse_shapes(low), parse_shapes(opt), parse_shapes(high))
    return low, opt, high


def provider_fallback(asked: Sequence[str], running: Sequence[str], warnings: Iterable[str] = ()) -> str | None:
    """Why the session does not run on what was asked (None when every asked provider loaded).

    ``running`` is ``session.get_providers()``; ``warnings`` what ONNX Runtime warned while the
    session was created (it names the provider it could not find). Pure: tested without a GPU.
    """
    missing = [p for p in asked if p not in running]
    if not missing:
        return None
    said = "; ".join(dict.fromkeys(w.strip() for w in warnings if w.strip()))
    return (f"asked for {', '.join(asked)}, ONNX Runtime runs {', '.join(running) or 'nothing'}: "
            f"{', '.join(missing)} did not load"
            + (f" (ONNX Runtime said: {said})" if said else "")
            + "; its numbers would not be what this case is named for, so it is skipped")


def options_not_applied(asked: Mapping[str, str], applied: Mapping[str, str], keys: Iterable[str]) -> dict[str, tuple]:
    """``keys`` whose value ONNX Runtime reports (``get_provider_options()``) differs from the
    one asked for: {key: (asked, applied)}. Booleans compare across spellings (True/1); a key
    the provider does not report cannot be checked and is left out."""
    def norm(v: str) -> str:
        return {"true": "1", "false": "0"}.get(v.lower(), v)
    return {k: (asked[k], applied[k]) for k in keys
            if k in asked and k in applied and norm(asked[k]) != norm(str(applied[k]))}


#: ORT's default log line: "2026-12-06 10:44:57.54 [E:onnxruntime:Default, file.cc:12 fn] message"
_ORT_LOG = re.compile(r"\[([EWF]):onnxruntime:[^\]]*\]\s*(.*)")


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 inside the block (ONNX Runtime's C++
    logger; ``sys.stderr`` is Python's and never sees it). Yields a list filled, on exit, with the
    warning/error messages ORT logged; everything captured is written back to the real stderr."""
    said: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read()
            os.write(2, text)
            for line in text.decode(errors="replace").splitlines():
                found = _ORT_LOG.search(line)
                if found:
                    said.append(re.sub(r"\x1b\[[0-9;]*m", "", found.group(2)).strip())
