"""torch.compile with the inductor backend.

The compiled code lives in inductor's own on-disk cache, which the fixtures point inside the
engine cache (TORCHINDUCTOR_CACHE_DIR), so a warm run re-uses it instead of recompiling from
scratch. The cache entry itself records how long the cold compile took (``compile.json``);
``load`` recompiles against the warm inductor cache and records that time separately.
Latency is only measured after both, never including a compile.

``torch_compile_cudagraphs`` is the same with ``mode="reduce-overhead"``: inductor records the
graph once as a CUDA graph and replays it, which removes the per-kernel launch cost that
dominates small batches on a GPU. Each call starts a new step
(``torch.compiler.cudagraph_mark_step_begin()``), and outputs live in the graph's static
buffers (the next replay overwrites them), so they are cloned before any comparison. CUDA
only; never run on a GPU so far.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from .base import BuildSpec, Outputs
from .torch_common import TorchModuleEngine, module_for, prepare_tensors

RECORD = "compile.json"


class TorchCompileEngine(TorchModuleEngine):
    name: ClassVar[str] = "torch_compile"
    capabilities: ClassVar[Mapping[str, frozenset[str]]] = {
        "cpu": frozenset({"fp32", "bf16"}),
        "cuda": frozenset({"fp32", "fp16", "bf16"}),
    }
    slow: ClassVar[frozenset[tuple[str, str]]] = frozenset({("cpu", "bf16")})
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    # compiled with dynamic=False: one graph per batch size, as a deployment would pin it
    dynamic_batch: ClassVar[bool] = False
    # a spec with dynamic axes (a decoder's growing KV cache) compiles with dynamic=True,
    # so the graph is symbolic in those lengths instead of recompiling every step
    dynamic_shapes: ClassVar[bool] = True
    live_module: ClassVar[bool] = True  # compiles the live module at load
    #: torch.compile's mode (None: its default)
    compile_mode: ClassVar[str | None] = None

    @classmethod
    def build_recipe(cls) -> dict[str, Any]:
        return {"backend": "inductor", "mode": cls.compile_mode}

    def _settings_impl(self) -> Mapping[str, Any]:
        return {"backend": "inductor", "mode": self.compile_mode or "default"}

    def _compile(self, spec: BuildSpec) -> tuple[Any, float]:
        import torch
        module = module_for(spec, self.precision, self.device)
        compiled = torch.compile(module, backend="inductor", dynamic=bool(spec.dynamic_axes), mode=self.compile_mode)
        args = prepare_tensors(spec.example_inputs, spec.input_names, self.precision, self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(*args)  # the first call compiles
        self._synchronize_impl()
        return compiled, time.perf_counter() - start

    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        self._just_built, seconds = self._compile(spec)
        (workdir / RECORD).write_text(json.dumps({"cold_compile_s": seconds}))

    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        built = getattr(self, "_just_built", None)
        if built is not None:  # built by this instance a moment ago: don't compile twice
            self._module, self._warm_compile_s, self._just_built = built, None, None
        else:
            self._module, self._warm_compile_s = self._compile(spec)
        self._cold_compile_s = json.loads((workdir / RECORD).read_text())["cold_compile_s"]
        self._names = spec.input_names

    def _details_impl(self) -> Mapping[str, Any]:
        # cold: first compile with an empty inductor cache; warm: the recompile at load
        # against inductor's cache (None when this process built it moments ago)
        return {"compile_seconds_cold": self._cold_compile_s, "compile_seconds_warm": self._warm_compile_s}


class TorchCompileCudaGraphsEngine(TorchCompileEngine):
    name: ClassVar[str] = "torch_compile_cudagraphs"
    capabilities: ClassVar[Mapping[str, frozenset[str]]] = {"cuda": frozenset({"fp32", "fp16", "bf16"})}
    slow: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    compile_mode: ClassVar[str | None] = "reduce-overhead"
    # a CUDA graph replays fixed shapes: a growing KV cache would re-record every step
    dynamic_shapes: ClassVar[bool] = False

    def _run_impl(self, prepared: Any) -> Outputs:
        import torch
        torch.compiler.cudagraph_mark_step_begin()  # a new step: the previous outputs may be overwritten
        return super()._run_impl(prepared)

    def _to_host_impl(self, value: Any) -> Any:
        # the graph's static output buffer: clone before the next replay overwrites it
        return value.detach().clone().float().cpu().numpy()
