"""What a TensorRT build is made of, decided without importing TensorRT (tests call these).

- ``build_plan_for(version, precision, tf32)``: the network flags, builder flags and which of the
  ONNX stage's graphs a precision is built from. Both majors build strongly typed networks:
  TensorRT 11 knows nothing else, and TensorRT 10.12 deprecated weak typing ("Deprecated in
  TensorRT 10.12. Superseded by strong typing" on BuilderFlag.FP16/INT8, NvInfer.h; trtexec 10.16
  turns those flags off under --stronglyTyped). So fp16 comes from the stage's fp16 graph (fp32
  I/O) and int8 from the explicit Q/DQ graph alone, on 10 as on 11; STRONGLY_TYPED exists since
  TensorRT 9.0, so every supported 10.x has it. The choice follows the installed
  ``tensorrt.__version__``, never a try/except around a flag that may be gone.
- ``profile_shapes``: the one optimization profile that covers every batch a run may use.
- ``TensorRTSettings``: the typed settings that enter the cache key and ``extra_info``.
- ``driver_from_proc``: the NVIDIA driver version from ``/proc/driver/nvidia/version``.

Sources: TensorRT 10.16 and 11.1 Python bindings (python/src/infer/pyCore.cpp, NVIDIA/TensorRT),
"Migrating from TensorRT 10.x to 11.x" (docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: TensorRT majors this engine is written for (the API differs between them; see build_plan_for)
SUPPORTED_MAJORS = (10, 11)
PRECISIONS = ("fp32", "fp16", "int8")
#: trt.DataType member name -> torch dtype name, for the device tensors bound to the engine's I/O.
#: INT64 is a native I/O type since TensorRT 10.0, so token ids stay int64 (no cast to int32).
TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
                "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}


@dataclass(frozen=True)
class BuildChoice:
    """How one (TensorRT major, precision) is built."""

    major: int
    #: the ONNX stage precision whose graph the parser reads: "fp32", "fp16" (fp32 I/O) or "int8" (Q/DQ)
    onnx_graph: str
    #: trt.NetworkDefinitionCreationFlag names passed to create_network
    network_flags: tuple[str, ...]
    #: trt.BuilderFlag names set on the builder config, and names cleared from it
    builder_flags: tuple[str, ...]
    cleared_flags: tuple[str, ...]
    strongly_typed: bool


def tensorrt_major(version: str) -> int:
    """The major of a ``tensorrt.__version__`` string ("10.13.3.9" -> 10)."""
    head = version.strip().split(".", 1)[0]
    if not head.isdigit():
        raise ValueError(f"cannot read a TensorRT major version from {version!r}")
    return int(head)


def version_problem(version: str) -> str | None:
    """Why this engine cannot drive TensorRT ``version`` (None when it can)."""
    major = tensorrt_major(version)
    if major not in SUPPORTED_MAJORS:
        return (f"tensorrt {version} is installed; this engine is written for TensorRT "
                f"{' and '.join(map(str, SUPPORTED_MAJORS))} (pip install tensorrt-cu13)")
    return None


def build_plan_for(version: str, precision: str, tf32: bool = False) -> BuildChoice:
    """The network flags, builder flags and ONNX graph for ``precision`` on TensorRT ``version``.

    TF32 is allowed by default in both majors (BuilderFlag.TF32 doc: "Enabled by default"), so
    the run's TF32 policy sets it when on and clears it when off, as Polygraphy's CreateConfig does.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"tensorrt builds {PRECISIONS}; got precision {precision!r}")
    problem = version_problem(version)
    if problem:
        raise ValueError(problem)
    major = tensorrt_major(version)
    tf32_set, tf32_cleared = (("TF32",), ()) if tf32 else ((), ("TF32",))
    # Each tensor's type comes from the graph, so the graph carries the precision; no precision
    # flag is ever set (trtexec 10.16: "setting int8 mode is not allowed if graph is strongly
    # typed"). TF32 is no precision flag: it is kept in both majors, and Polygraphy clears it the same
    # way whatever the typing. STRONGLY_TYPED is "retained for API compatibility but ignored" in 11;
    # passed anyway, as TensorRT's own 10.16 and 11.1 samples do.
    return BuildChoice(major, precision, ("STRONGLY_TYPED",), tf32_set, tf32_cleared, strongly_typed=True)


def profile_shapes(graph_shapes: Mapping[str, Sequence[int]], example_shapes: Mapping[str, Sequence[int]],
                   max_batch: int, opt_batch: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """One optimization profile: ``{input: (min, opt, max)}``.

    ``graph_shapes`` are the parsed network's input shapes (-1 where a dim is dynamic);
    ``example_shapes`` the spec's example inputs. A dynamic batch axis spans 1..max_batch, tuned
    at ``opt_batch``; a fixed one (a user's ONNX file exported at batch 1) stays what it is.
    Every other dim is pinned to the example's (the engine takes fixed feature dims).
    """
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"opt_batch={opt_batch} must lie in 1..max_batch={max_batch}")
    missing = sorted(set(graph_shapes) - set(example_shapes))
    if missing:
        raise ValueError(f"the network's inputs {missing} have no example input (examples: {sorted(example_shapes)})")
    out = {}
    for name, dims in graph_shapes.items():
        example = tuple(int(d) for d in example_shapes[name])
        dims = tuple(int(d) for d in dims)
        if len(dims) != len(example):
            raise ValueError(f"input {name!r}: the network has rank {len(dims)} {dims}, the example {example}")
        rest = []
        for axis, (d, e) in enumerate(zip(dims[1:], example[1:]), start=1):
            if d not in (-1, e):
                raise ValueError(f"input {name!r} axis {axis}: the network fixes {d}, the example has {e}")
            rest.append(e)
        if dims[0] == -1:
            lo, opt, hi = (1, *rest), (opt_batch, *rest), (max_batch, *rest)
        else:
            lo = opt = hi = (dims[0], *rest)
        out[name] = (lo, opt, hi)
    return out


def batch_limits(profile: Mapping[str, Sequence[Sequence[int]]]) -> tuple[int, int]:
    """The smallest and largest batch every input of a ``profile_shapes`` result accepts."""
    return max(p[0][0] for p in profile.values()), min(p[2][0] for p in profile.values())


@dataclass(frozen=True)
class TensorRTSettings:
    """What a plan is specific to, and how it was built: part of the cache key and extra_info.

    A serialized plan is tied to the TensorRT version and the GPU it was tuned on (its compute
    capability and, by NVIDIA's engine-compatibility rules, the device model); the driver is
    recorded and keyed as the issue asks, so a driver upgrade rebuilds rather than trusts.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    driver: str
    onnx_graph: str
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    cleared_flags: tuple[str, ...]
    strongly_typed: bool
    min_batch: int
    opt_batch: int
    max_batch: int


def tensorrt_settings(version: str, precision: str, tf32: bool, gpu_name: str, capability: tuple[int, int],
                      driver: str, opt_batch: int, max_batch: int) -> TensorRTSettings:
    choice = build_plan_for(version, precision, tf32)
    return TensorRTSettings(version, gpu_name, f"{capability[0]}.{capability[1]}", driver, choice.onnx_graph,
                            choice.network_flags, choice.builder_flags, choice.cleared_flags, choice.strongly_typed,
                            1, opt_batch, max_batch)


_PROC_DRIVER = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)")


def driver_from_proc(text: str) -> str | None:
    """The driver version in the text of ``/proc/driver/nvidia/version`` (proprietary or open
    kernel module), or None when the text holds none."""
    found = _PROC_DRIVER.search(text)
    return found.group(1) if found else None
