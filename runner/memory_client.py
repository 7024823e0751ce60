"""The parent side of the memory fork server (runner/memory_server.py): starts this process's
server on first use, sends it one case at a time (per lane: runner/memory_queue.py runs lanes side
by side, each with servers of its own), kills a child at its timeout, stops the server
at the end of the run (``shutdown``, from RunSession.close and at exit). Each process has its own
servers, one per preload profile in use ("full", and "lean" for cases whose load imports the
torch compile stack); an xdist worker its own; a forked copy of the owner never uses nor stops them."""
from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from infermatrix.core.source_shim import write_shim

from .memory import ROOT, _tail, child_environment

START_TIMEOUT_S = 300.0  # the imports, on a host busy with the run's builds
KILL_GRACE_S = 30.0      # for the server to report a child killed at its timeout


class ServerUnavailable(RuntimeError):
    """The server did not start or stopped answering: the parent measures in a fresh interpreter."""


class MemoryServer:
    """One server process and its pipes, owned by the process that started it."""

    def __init__(self, profile: str = "full", start_timeout_s: float | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="infermatrix-memory-server-"))
        shim = write_shim(ROOT, self.workdir / "shim")
        env = child_environment(shim)
        self.owner, self._buf = os.getpid(), b""
        with open(self.workdir / "server.log", "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "infermatrix.runner.memory_server", str(self.workdir),
                                          profile],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
        try:
            self.ready = self._read(time.monotonic() + (start_timeout_s or START_TIMEOUT_S))
        except (TimeoutError, ServerUnavailable) as exc:
            self.close()
            raise ServerUnavailable(f"the memory server did not start: {exc}") from exc

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def measure(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The child's result; ``{"error": ...}`` for a child that failed, crashed or timed out."""
        deadline = time.monotonic() + timeout_s
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        try:  # a fork takes milliseconds; a timeout shorter than the server's answer still ends in a kill
            child = self._read(max(deadline, time.monotonic() + KILL_GRACE_S))["child"]
        except TimeoutError as exc:
            raise ServerUnavailable(f"the memory server did not fork within {KILL_GRACE_S:g} s") from exc
        try:
            return self._read(deadline)
        except TimeoutError:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:  # it ended meanwhile; the server reports it either way
                pass
        try:
            self._read(time.monotonic() + KILL_GRACE_S)  # the server's report of the killed child
        except TimeoutError as exc:
            raise ServerUnavailable(f"the memory server did not reap child {child} after killing it") from exc
        return {"error": f"the memory child timed out after {timeout_s:g} s", "traceback": ""}

    def _read(self, deadline: float) -> dict[str, Any]:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no answer from the memory server")
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self.proc.wait()
                log = self.workdir / "server.log"
                raise ServerUnavailable(f"the memory server exited with code {code}\n"
                                        + (_tail(log.read_bytes()) if log.exists() else ""))
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        """Stop the server (EOF on its stdin ends its loop) and remove its folder."""
        if self.owner != os.getpid():  # a forked copy of the owner: the server is not ours to stop
            return
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


_servers: dict[tuple[str, int], MemoryServer] = {}  # by preload profile (memory_server.PROFILES) and lane
_key_locks: dict[tuple[str, int], threading.Lock] = {}  # one measurement at a time per server
_start_failed: dict[str, str] = {}  # a server that did not start once is not started again per case
_lock = threading.Lock()  # guards the dicts above, never held while a server starts or measures
_local = threading.local()  # this thread's lane (use_lane)


def use_lane(lane: int) -> None:
    """This thread measures with the servers of ``lane`` (runner/memory_queue.py: one lane per
    thread, so two children can run at once; the main thread uses lane 0)."""
    _local.lane = lane


def _key(profile: str) -> tuple[str, int]:
    return profile, getattr(_local, "lane", 0)


def _key_lock(key: tuple[str, int]) -> threading.Lock:
    with _lock:
        return _key_locks.setdefault(key, threading.Lock())


def start(profile: str = "full") -> dict[str, Any]:
    """This thread's server of ``profile``, started if it is not running: its ready message
    (import seconds, preloads missing here, Python threads). ServerUnavailable when it does not start."""
    key = _key(profile)
    with _key_lock(key):
        return _running(key).ready


def _running(key: tuple[str, int]) -> MemoryServer:
    profile = key[0]
    if profile in _start_failed:
        raise ServerUnavailable(_start_failed[profile])
    server = _servers.get(key)
    if server is None or not server.alive():
        if server is not None:
            server.close()
        started = time.perf_counter()
        try:
            _servers[key] = MemoryServer(profile)
        except ServerUnavailable as exc:
            _start_failed[profile] = str(exc)
            raise
        finally:
            _local.start_s = server_start_seconds() + time.perf_counter() - started
    return _servers[key]


def server_start_seconds() -> float:
    """Seconds this thread has spent starting fork servers (runner/memory_queue.py keeps them out of
    a child's own seconds: the first child of each lane starts that lane's servers)."""
    return getattr(_local, "start_s", 0.0)


def measure_forked(request: dict[str, Any], timeout_s: float, profile: str = "full") -> tuple[dict[str, Any], str, str]:
    """(result, why it failed or "", traceback tail) from a child of this thread's server of
    ``profile``, started on first use. ServerUnavailable when it cannot start or stopped answering."""
    key = _key(profile)
    with _key_lock(key):
        server = _running(key)
        try:
            result = server.measure(request, timeout_s)
        except (ServerUnavailable, OSError) as exc:  # OSError: a broken pipe to a server that died
            server.close()
            del _servers[key]
            raise ServerUnavailable(str(exc)) from exc
    if "error" in result:
        return {}, result["error"], result.get("traceback") or ""
    return result, "", ""


def server_pid(profile: str = "full", lane: int = 0) -> int | None:
    """This process's running server of ``profile`` in ``lane``, if any (tests: one per lane, gone after :func:`shutdown`)."""
    server = _servers.get((profile, lane))
    return server.proc.pid if server is not None and server.alive() else None


def shutdown() -> None:
    """Stop this process's servers: at the end of the run (RunSession.close) and at exit."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.close()


atexit.register(shutdown)
