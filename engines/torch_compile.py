"""torch.compile with the inductor backend.

The compiled code is part of the cache entry: the build compiles with inductor's on-disk cache
(TORCHINDUCTOR_CACHE_DIR, and Triton's) pointed at ``<entry>/inductor``, so its files (FX graph and
AOTAutograd cache entries, generated Python, C++ / Triton kernels) are listed in meta.json with
their sha256 and size and verified like any other artifact: a flipped or truncated one is a corrupt
entry, rebuilt with a warning. The entry also records how long the cold compile took
(``compile.json``). ``load`` copies the verified files into a private scratch directory (inductor
writes lock files and markers as it reads, and a shared cache may be read-only) and recompiles
against them, recording that time separately. Latency is only measured after both, never
including a compile. Inductor's FX graph cache entries are pickles and its kernels are code that
torch loads and runs: the checksums make sure a damaged file is rebuilt, never loaded.

``torch_compile_cudagraphs`` is the same with ``mode="reduce-overhead"``: inductor records the
graph once as a CUDA graph and replays it, which removes the per-kernel launch cost that
dominates small batches on a GPU. Each call starts a new step
(``torch.compiler.cudagraph_mark_step_begin()``), and outputs live in the graph's static
buffers (the next replay overwrites them), so they are cloned before any comparison. CUDA
only; never run on a GPU so far.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

from .base import BuildSpec, EngineError, Outputs
from .cache_meta import META, EntryMeta, MetaError
from .torch_common import TorchModuleEngine, module_for, prepare_tensors

RECORD = "compile.json"
INDUCTOR = "inductor"  # inductor's on-disk cache for this entry (a sub-folder of the entry)
_CACHE_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
#: compiled kernels in inductor's cache: C++ (CPU) and Triton (GPU) binaries
KERNEL_SUFFIXES = (".so", ".cubin", ".hsaco", ".spv")


class WarmCompileWarning(UserWarning):
    """A load compiled graphs or kernels its entry's inductor files should have held: its warm
    compile seconds include compiling."""


@contextmanager
def inductor_cache(directory: Path) -> Iterator[None]:
    """Inductor (and Triton) read and write their on-disk cache in ``directory`` for the duration;
    their in-memory caches are cleared on the way in, so a compile this process did before cannot
    stand in for the files (a rebuild writes every file again), and on the way out."""
    old = {k: os.environ.get(k) for k in _CACHE_ENV}
    clear_caches = None
    try:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
        os.environ["TRITON_CACHE_DIR"] = str(directory / "triton")
        # imported only now: importing torch._dynamo creates the cache folder the environment
        # names, which must be this one (the process-wide one may sit in a read-only cache)
        from torch._inductor.utils import clear_caches
        clear_caches()
        yield
    finally:
        if clear_caches is not None:
            clear_caches()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def probe_cpu_isa() -> None:
    """Inductor's check of which CPU vector ISAs work (it compiles a probe per ISA with the C++
    compiler and loads each in a subprocess: 8 s of CPU on a 2-core AMD EPYC, 12.3 s of a 19.6 s
    memory child where it was found), done once per host and never inside an entry's scratch cache.

    Its result is files (the probes and their load markers) that say nothing about a model, only
    about this host's CPU, compiler and torch, so they go where inductor keeps its other host-wide
    files (its precompiled headers): its default cache folder (``/tmp/torchinductor_<user>``), not
    the process's cache. Done in the engine cache (the run's ``_inductor``), each fresh engine
    cache compiled the probes again: every test with a cache of its own, every fleet worker on a
    fresh volume. An ISA the CPU does not report is never probed (inductor reads the CPU's flags
    first), so markers left by another CPU cannot enable one. Where that folder cannot be written,
    the process's own cache serves. Not part of a compile's recorded seconds."""
    from torch._inductor.cpu_vec_isa import valid_vec_isa_list
    if valid_vec_isa_list.cache_info().currsize:  # functools.cache: probed by this process already
        return
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    host = Path(default_cache_dir())
    try:
        host.mkdir(parents=True, exist_ok=True)
        writable = os.access(host, os.W_OK)
    except OSError:  # a file in its place, a read-only /tmp: the process's own cache serves
        writable = False
    with inductor_cache(host) if writable else nullcontext():
        valid_vec_isa_list()


def kernel_include_dirs() -> list[str]:
    """The header folders inductor's C++ kernels compile against: this torch's and this Python's.
    Inductor keys each compiled kernel by its source and its compiler command line, which names
    them, so an entry built by a torch installed elsewhere (another virtual environment, another
    clone's tox environment, the same cache) found its graph in the cache but compiled every kernel
    again at each load, and recorded that as the warm compile (mobilenet_v2 fp32 batch 1 on the
    AMD EPYC: 10.2 s against 2.5 s where the paths match). In the key, such an entry is rebuilt once."""
    import sysconfig

    import torch
    return [str(Path(torch.__file__).parent / "include"), str(sysconfig.get_path("include", scheme="posix_prefix"))]


def _kernel_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.suffix in KERNEL_SUFFIXES}


def _graph_misses() -> int:
    """Graphs inductor compiled in this process because its FX graph cache had none."""
    from torch._dynamo.utils import counters
    return counters["inductor"]["fxgraph_cache_miss"]


def copy_verified(entry: Path, dest: Path) -> int:
    """Copy the entry's inductor files that meta.json lists into ``dest``, each checked against its
    sha256 as it is copied (a process that loads the entry by path verifies it too); returns the count."""
    try:
        meta = EntryMeta.from_json((entry / META).read_text(encoding="utf-8"), engine=entry.parent.name, key=entry.name)
    except (OSError, UnicodeDecodeError, MetaError) as exc:
        raise EngineError(f"torch_compile entry {entry}: {META} is unusable ({exc}); clear the entry to rebuild it") from exc
    n = 0
    for rel, rec in meta.files.items():
        if not rel.startswith(INDUCTOR + "/"):
            continue
        data = (entry / rel).read_bytes()
        if len(data) != rec.bytes or hashlib.sha256(data).hexdigest() != rec.sha256:
            raise EngineError(f"torch_compile entry {entry}: {rel} fails its checksum; clear the entry to rebuild it")
        target = dest / rel[len(INDUCTOR) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        n += 1
    return n


def mark_dynamic_axes(spec: BuildSpec, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` (the spec's inputs, in order) with the spec's dynamic axes marked for dynamo, which
    then compiles those sizes symbolic and every other static."""
    import torch
    for name, arg in zip(spec.input_names, args):
        for axis in spec.dynamic_axes.get(name, {}):
            torch._dynamo.maybe_mark_dynamic(arg, axis)
    return args


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
    # a spec with dynamic axes (a decoder's growing KV cache) compiles with those axes marked
    # dynamic, so the graph is symbolic in those lengths instead of recompiling every step, and
    # static in the rest. Measured on tiny-gpt2 fp32 (bench/decoder_compile.py; Xeon with AMX,
    # 2 cores, 2026-12-07) against dynamic=True, which made every size symbolic: cold compile 14.0 s
    # against 16.0 s at batch 1 and 14.8 s against 19.5 s at batch 8, a fresh process's warm compile
    # 3.4 s against 6.4 s and 7.5 s; step medians within the noise at batch 1 (0.59-0.80 ms against
    # 0.64-0.66 ms in five processes each) and lower at batch 8 (0.83-0.93 ms against 0.90-0.99 ms)
    dynamic_shapes: ClassVar[bool] = True
    live_module: ClassVar[bool] = True  # compiles the live module at load
    #: torch.compile's mode (None: its default)
    compile_mode: ClassVar[str | None] = None

    @classmethod
    def build_recipe(cls) -> dict[str, Any]:
        # "symbolic": which sizes a dynamic-axes spec compiles symbolic (an entry compiled with every
        # size symbolic holds graphs this code does not trace: its load would compile them again)
        return {"backend": "inductor", "mode": cls.compile_mode, "headers": kernel_include_dirs(),
                "symbolic": "the spec's dynamic axes"}

    def _settings_impl(self) -> Mapping[str, Any]:
        return {"backend": "inductor", "mode": self.compile_mode or "default"}

    def _compile(self, spec: BuildSpec) -> tuple[Any, float]:
        import torch
        module = module_for(spec, self.precision, self.device)
        # dynamo remembers, per code object and for the whole process, which input sizes changed
        # between its compiles ("automatic dynamic"): a batch-8 compile after a batch-1 compile of the
        # same model then traced another graph (its symbols in another order) than a fresh process
        # does, so the memory child's load of that entry missed inductor's cache and compiled again
        # (tiny-gpt2, 13.8 s). Forgetting it makes every compile the one a deployment's fresh process runs.
        torch._dynamo.reset_code_state()
        # isolate_recompiles: this compile neither reuses another torch.compile call's graph held in
        # memory (which would leave a rebuilt entry without inductor files and time no compile) nor
        # counts against the recompile limit other calls share (past it dynamo runs eager);
        # torch is pinned (pyproject.toml) to a version that has it
        # a spec's dynamic axes (a decoder's token and KV-cache lengths) are the only symbolic sizes
        # (see dynamic_shapes): dynamic=True made every size symbolic, batch and widths too. "maybe":
        # a model whose code pins one of those lengths compiles it static, as dynamic=True did, where
        # mark_dynamic would fail the build (tests/test_generation.py catches a decoder recompiling)
        compiled = torch.compile(module, backend="inductor", dynamic=None if spec.dynamic_axes else False,
                                 mode=self.compile_mode, isolate_recompiles=True)
        args = mark_dynamic_axes(spec, prepare_tensors(spec.example_inputs, spec.input_names, self.precision,
                                                       self.device))
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(*args)  # the first call compiles
        self._synchronize_impl()
        return compiled, time.perf_counter() - start

    def _build_impl(self, spec: BuildSpec, workdir: Path) -> None:
        (workdir / INDUCTOR).mkdir()
        if self.device == "cpu":
            probe_cpu_isa()
        with inductor_cache(workdir / INDUCTOR):  # an empty cache: a cold compile, all its files in the entry
            self._just_built, seconds = self._compile(spec)
        (workdir / RECORD).write_text(json.dumps({"cold_compile_s": seconds}))

    def _load_impl(self, workdir: Path, spec: BuildSpec) -> None:
        built = getattr(self, "_just_built", None)
        if built is not None:  # built by this instance a moment ago: don't compile twice
            self._module, self._warm_compile_s, self._just_built = built, None, None
        else:
            scratch = Path(tempfile.mkdtemp(prefix="infermatrix-inductor-"))
            # removed at close, or at exit for an engine never closed
            self._scratch = weakref.finalize(self, shutil.rmtree, scratch, True)
            copy_verified(workdir, scratch)
            if self.device == "cpu":
                probe_cpu_isa()
            kernels, graphs = _kernel_files(scratch), _graph_misses()
            with inductor_cache(scratch):
                self._module, self._warm_compile_s = self._compile(spec)
            self._compiled_at_load = (_graph_misses() - graphs, len(_kernel_files(scratch) - kernels))
            if any(self._compiled_at_load):
                warnings.warn(WarmCompileWarning(
                    f"{self.name} {self.precision}: loading {workdir} compiled {self._compiled_at_load[0]} graph(s) and "
                    f"{self._compiled_at_load[1]} kernel(s) its inductor files should hold (expected 0 and 0: a "
                    "torch, compiler or inductor setting other than the build's); compile_seconds_warm "
                    f"{self._warm_compile_s:.1f} s includes compiling them"), stacklevel=2)
        self._cold_compile_s = json.loads((workdir / RECORD).read_text())["cold_compile_s"]
        self._names = spec.input_names

    def _close_impl(self) -> None:
        super()._close_impl()
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            scratch()  # the finalizer: removes the scratch copy once

    def _details_impl(self) -> Mapping[str, Any]:
        # cold: first compile with an empty inductor cache; warm: the recompile at load
        # against inductor's cache (None when this process built it moments ago)
        # and what the warm compile compiled that the entry should have held (0, 0: all from the cache)
        graphs, kernels = getattr(self, "_compiled_at_load", (None, None))
        return {"compile_seconds_cold": self._cold_compile_s, "compile_seconds_warm": self._warm_compile_s,
                "compile_warm_graphs_compiled": graphs, "compile_warm_kernels_compiled": kernels}


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
