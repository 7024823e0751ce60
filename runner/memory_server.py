"""The fork server of the per-engine memory measurement (runner/memory.py, method "fork").

A fresh interpreter per case spends about 4 s importing the frameworks before it measures
anything. The server is that interpreter started once per pytest process (each xdist worker
its own), lazily on the first case that measures memory, with the same command line and
environment as the fresh interpreter (this checkout first on its PYTHONPATH). It imports
``PRELOAD`` and nothing else, then forks one child per case: the child runs
``memory.measure`` (imports baseline, load, rounds) alone and exits, so no case sees another's
memory and the server never holds an engine.

Fork safety: the server runs no framework op, starts no framework thread pool and never touches
CUDA; a forked child creates its own (CUDA context included, in ``memory_gpu``). The parent test
process is never forked: it holds thread pools and a CUDA context. Imports leave idle native
threads (torch and ONNX Runtime one each here); a fork copies only the forking thread. OpenVINO is
not preloaded: its import starts a telemetry thread that may be inside a network call when the
server forks, and it imports in about 0.1 s in the child. CUDA children were not run where this
was written (no GPU): the design needs only that the server never initialises CUDA.

Page tables: Linux does not copy a fork's page-table entries for file mappings never written
(library code, read-only data); the child faults them in again when it touches them. Left so,
the child's idle reading would miss the library pages the imports touched (about 320 MiB here)
and its load and run figures would count them when first touched again, where the fresh
interpreter counted them at idle. So the server lists the pages resident after its imports
(/proc/self/pagemap) and each child maps those again first (MADV_POPULATE_READ): its page tables
then match the server's, as a fresh interpreter's match its own imports (bench/memory_methods.py
compares the figures of both methods).

Protocol, JSON lines over the server's stdin/stdout: the server says ``{"ready": ...}`` once,
then per request ``{"child": pid}`` (so the parent can kill it at its timeout) and the result.
The server dies with its parent (PR_SET_PDEATHSIG) and each child with the server.
"""
from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any


from .memory import COMPILE_STACK, FULL_ONLY, _last_json, _tail, run_request

#: imported once by the server; a missing one is left to the child (an engine not installed here).
#: transformers.modeling_utils is what every transformers architecture imports (1.3 s here).
PRELOAD = ("torch", "torchvision", "onnx", "onnxruntime", "transformers", "transformers.modeling_utils",
           "infermatrix.engines", "infermatrix.models.builtin", "infermatrix.models.handoff",
           "infermatrix.models.registry", "infermatrix.runner.memory")
#: What each server preloads. A module must not be preloaded for a case whose load or rounds
#: import it in a fresh interpreter (after its idle reading): its import would move from
#: load_rss_bytes into idle. Measured (a fresh interpreter, modules new after idle): only
#: torch.compile and torch int8 import packages at load, the compile stack, which torchvision
#: and transformers.modeling_utils import. Those cases get the "lean" server, whose child imports
#: them where the fresh interpreter did: before idle for a torchvision/transformers architecture,
#: at load otherwise (tiny-cnn torch_compile: 219 MiB at load both ways, 68 MiB from "full").
#: A lean child says whether its idle reading had all of FULL_ONLY (``full_only_at_idle``): then
#: "full" preloads nothing more for that model, and its later cases fork from it (runner/memory.py).
PROFILES = {"full": PRELOAD,
            "lean": tuple(m for m in PRELOAD if m not in FULL_ONLY)}


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MADV_POPULATE_READ = 22  # Linux >= 5.14
_SPECIAL = ("[vvar]", "[vvar_vclock]", "[vsyscall]", "[vdso]")
_resident_runs: list[tuple[int, int]] = []  # the server's, set after its imports; read by each child


# ---- the server process ----
def resident_runs() -> list[tuple[int, int]]:
    """(address, bytes) of each run of resident pages in this process's readable mappings of a
    file or special object (anonymous memory's page tables are copied by fork: not listed)."""
    import numpy as np
    runs = []
    with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split(maxsplit=5)
            path = fields[5].strip() if len(fields) > 5 else ""
            if not path or path in _SPECIAL or "r" not in fields[1]:
                continue
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            pagemap.seek(lo // PAGE * 8)
            present = (np.frombuffer(pagemap.read((hi - lo) // PAGE * 8), dtype=np.uint64) >> np.uint64(63)).astype(np.int8)
            edges = np.flatnonzero(np.diff(np.concatenate(([0], present, [0]))))  # run starts, ends
            runs += [(lo + int(a) * PAGE, int(b - a) * PAGE) for a, b in zip(edges[::2], edges[1::2])]
    return runs


def prefault(runs: list[tuple[int, int]]) -> int:
    """Map ``runs`` into this process's page tables; the bytes that could not be (kernel < 5.14:
    each page read once instead)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    failed = 0
    for address, length in runs:
        if libc.madvise(address, length, MADV_POPULATE_READ) == 0:
            continue
        if ctypes.get_errno() == 22:  # EINVAL: no MADV_POPULATE_READ here
            (ctypes.c_char * length).from_address(address)[::PAGE]
        else:  # EFAULT/ENOMEM: the mapping changed since the server listed it
            failed += length
    return failed


def _die_with(sig: int) -> None:
    """Ask Linux to send ``sig`` when the process that started this one exits (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)
    except (OSError, AttributeError):  # not glibc Linux: the stdin EOF below still ends the server
        pass


def _write(fd: int, obj: dict[str, Any]) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def serve(workdir: Path, profile: str) -> int:
    out = os.dup(1)
    os.dup2(2, 1)  # what the libraries print goes to the server's log; fd `out` carries the protocol
    parent = os.getppid()
    _die_with(signal.SIGTERM)
    if os.getppid() != parent:  # the parent exited before prctl took effect
        return 1
    start, missing = time.perf_counter(), {}
    for name in PROFILES[profile]:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing[name] = str(exc)
    gc.collect()
    gc.freeze()  # the imports' objects: a child's collections skip them
    global _resident_runs
    try:
        _resident_runs = resident_runs()
    except OSError as exc:  # no pagemap: the children's figures count library pages at first touch
        missing["/proc/self/pagemap"] = str(exc)
    _write(out, {"ready": True, "pid": os.getpid(), "seconds": time.perf_counter() - start,
                 "missing": missing, "python_threads": threading.active_count(),
                 "compile_stack": sorted(m for m in COMPILE_STACK if m in sys.modules),
                 "resident_bytes": sum(n for _, n in _resident_runs)})
    for n, line in enumerate(sys.stdin):  # EOF: the parent closed us (or died)
        _write(out, _fork_one(json.loads(line), out, workdir / f"child-{n}.log"))
    return 0


def _fork_one(request: dict[str, Any], out: int, log: Path) -> dict[str, Any]:
    sys.stdout.flush()
    sys.stderr.flush()  # nothing buffered here is written again by the child
    server = os.getpid()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(request, w, out, log, server)
    os.close(w)
    _write(out, {"child": pid})
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    tail = _tail(log.read_bytes()) if log.exists() else ""
    log.unlink(missing_ok=True)
    result = _last_json(b"".join(chunks).decode(errors="replace"))
    if result is None:
        how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return {"error": f"the memory child (pid {pid}) {how} before it reported", "traceback": tail}
    if "error" in result and not result.get("traceback"):
        result["traceback"] = tail
    return result


def _child(request: dict[str, Any], w: int, out: int, log: Path, server: int) -> None:
    """In the forked child: measure, write the result on ``w``, exit (never returns)."""
    code = 1
    try:
        _die_with(signal.SIGKILL)
        if os.getppid() != server:
            return
        os.close(out)  # the parent must see EOF when the server exits, whatever a child does
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        unmapped = prefault(_resident_runs)
        result, code = run_request(request)
        if unmapped and "error" not in result:
            result["method_note"] = result.get("method_note", "") + f"; {unmapped} bytes of the server's pages not mapped again"
        with os.fdopen(w, "w") as pipe:
            pipe.write(json.dumps(result) + "\n")
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1]), sys.argv[2]))
