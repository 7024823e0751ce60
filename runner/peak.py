"""This machine's peak per precision, measured once and cached like an engine; each latency case's
share of it.

A case's GFLOP/s alone does not say how far it is from the limit: 40 GFLOP/s is most of a
laptop core and a sliver of a GPU. So the run measures a large GEMM per precision with the
runtimes' own kernels (runner/peak_kernels.py) and records per case ``peak_gflops_per_s``,
``peak_method`` and ``share_of_peak`` = the case's GFLOP/s / that peak (int8 cases against the
int8 GEMM's GOP/s; null with ``share_of_peak_reason`` where either side is unknown).

Cached in the engine cache root (``_peak/<key>.json``), keyed by what changes the figure: the
hardware (core/hardware.py ``hardware_id``), the thread count, the usable CPUs and the kernels'
library versions, so it is measured once per machine and setting, not per run. The file is
written whole (``os.replace``) under a file lock (pytest-xdist workers measure one at a time and
once), and validated on read: a damaged file is measured again with a :class:`CorruptPeakWarning`.
Only a clean figure is kept: one measured under host interference (runner/interference.py) is used
by its run, with the reason in its method, and measured again by the next run.
``--recalibrate-peak`` measures again whatever the file holds.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import math
import os
import statistics
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from infermatrix.core import checked_record
from infermatrix.core.hardware import cpu_flags, hardware_id

from . import peak_kernels
from .interference import HostWatch

PEAK_DIR = "_peak"   # inside the engine cache root, beside the engines (cleared with them)
SCHEMA = 1
LIBRARIES = ("torch", "onnxruntime")  # the kernels' libraries: a new version may have new kernels
LOCK_TIMEOUT_S = 600.0

Entry = dict[str, Any]   # {"gflops_per_s", "median_gflops_per_s", "n", "samples", "method", "note", ...}
Measure = Callable[[str, str, "int | None"], Entry]


class CorruptPeakWarning(UserWarning):
    """The cached peak calibration failed its checks and is measured again."""


def peak_precision(precision: str, device: str, tf32: bool = False) -> str:
    """The peak a case compares to: int8 schemes to the int8 GEMM, CUDA fp32 under TF32 to fp32-tf32."""
    if precision == "fp32" and device == "cuda" and tf32:
        return "fp32-tf32"
    return precision


def measure(device: str, precision: str, threads: int | None,
            flags: frozenset[str] | None = None, seconds: float = peak_kernels.SAMPLE_S) -> Entry:
    """One precision's peak on ``device``, with the host's interference during it."""
    import torch
    try:
        make, name, note = peak_kernels.kernel(device, precision, threads,
                                               cpu_flags() if flags is None else flags)
    except peak_kernels.NotMeasured as exc:
        return {"gflops_per_s": None, "reason": str(exc), "method": None}
    watch = HostWatch()
    try:
        n, samples = peak_kernels.time_gemm(make, peak_kernels.MIN_N[device], peak_kernels.MAX_N[device], seconds)
    except Exception as exc:  # noqa: BLE001 - a kernel that fails here leaves the share null with the reason
        return {"gflops_per_s": None, "method": name, "reason": f"the {name} GEMM failed: {type(exc).__name__}: {exc}"}
    interference = watch.finish(samples)["interference"]
    ops = 2.0 * n ** 3
    threads_used = torch.get_num_threads() if device == "cpu" and "ONNX Runtime" not in name else threads
    where = f"{threads_used} threads" if threads_used else "the runtime's default threads"
    method = (f"{name}, {n}x{n}x{n}, best of {len(samples)} calls over {sum(samples):.2f} s, "
              f"{where if device == 'cpu' else 'CUDA events'}")
    return {"gflops_per_s": ops / min(samples) / 1e9, "median_gflops_per_s": ops / statistics.median(samples) / 1e9,
            "n": n, "samples": len(samples), "method": method, "note": note, "interference": interference,
            "reason": None}


def calibration_key(device: str, threads: int | None) -> dict[str, Any]:
    """What makes two calibrations the same figure: hardware, threads, usable CPUs, kernel versions."""
    from infermatrix.runner.run_stats import host_fingerprint
    host = host_fingerprint(device)
    info = {"infermatrix": {"cpu_model": host["cpu"], "gpu": {"name": host["gpu"]} if "gpu" in host else None}}
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = md.version(lib)
        except md.PackageNotFoundError:
            versions[lib] = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"hardware": hardware_id(info), "device": device, "threads": threads or "default",
            "usable_cpus": usable, "versions": versions}


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("method"), str):
        return False
    g = entry.get("gflops_per_s")
    return isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g) and g > 0


class PeakCache:
    """The calibrations of one cache root, device and thread count; ``measure`` is injectable (tests)."""

    def __init__(self, root: Path, device: str, threads: int | None, *, recalibrate: bool = False,
                 measure_fn: Measure | None = None, key: dict[str, Any] | None = None) -> None:
        self.key = key if key is not None else calibration_key(device, threads)
        self.device, self.threads, self.recalibrate = device, threads, recalibrate
        digest = checked_record.digest(self.key)[:16]
        self.path = Path(root).expanduser() / PEAK_DIR / f"{digest}.json"
        self._measure = measure_fn or (lambda d, p, t: measure(d, p, t))
        self._memo: dict[str, Entry] = {}

    def read(self) -> dict[str, Entry]:
        """The cached peaks by precision; {} when there is no file, a corrupt one warns."""
        try:
            data = checked_record.load(self.path, SCHEMA)
        except checked_record.CorruptRecord as exc:
            return self._corrupt(str(exc))
        if data is None:  # never measured here (or no cache folder at all)
            return {}
        if data.get("key") != json.loads(checked_record.canonical(self.key)):
            return self._corrupt(f"its key {data.get('key')} is not this machine's {self.key}")
        peaks = data.get("peaks")
        bad = [p for p, e in peaks.items() if not _valid_entry(e)] if isinstance(peaks, dict) else ["(not an object)"]
        if bad:
            return self._corrupt(f"invalid peak(s) {', '.join(bad)}")
        return peaks

    def _corrupt(self, why: str) -> dict[str, Entry]:
        warnings.warn(f"peak calibration {self.path} is corrupt ({why}); measuring the peaks again",
                      CorruptPeakWarning, stacklevel=3)
        return {}

    def _write(self, peaks: dict[str, Entry]) -> None:
        # written whole: readers see the old file or the new one, never half of one
        checked_record.dump(self.path, {"schema": SCHEMA, "key": json.loads(checked_record.canonical(self.key)),
                                        "peaks": peaks})

    def peak(self, precision: str) -> Entry:
        """The peak for ``precision`` (see ``peak_precision``): cached, else measured and cached."""
        if precision in self._memo:
            return self._memo[precision]
        cached = {} if self.recalibrate else self.read()
        if precision in cached:
            self._memo[precision] = {**cached[precision], "cached": True}
            return self._memo[precision]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S)
            lock.acquire()
        except OSError as exc:  # a read-only cache: measured for this run, kept nowhere
            entry = self._measure(self.device, precision, self.threads)
            self._memo[precision] = {**entry, "cached": False, "not_cached": f"cache not writable: {exc.strerror}"}
            return self._memo[precision]
        try:
            cached = {} if self.recalibrate else self.read()  # another process may have measured it meanwhile
            if precision in cached:
                entry = {**cached[precision], "cached": True}
            else:
                entry = {**self._measure(self.device, precision, self.threads), "cached": False}
                if _valid_entry(entry) and not entry.get("interference"):
                    kept = self.read() if self.recalibrate else cached  # the other precisions stay
                    self._write({**kept, precision: {k: v for k, v in entry.items() if k != "cached"}})
        finally:
            lock.release()
        self._memo[precision] = entry
        return entry


_CACHES: dict[tuple, PeakCache] = {}


def case_peak(root: Path, device: str, precision: str, threads: int | None, *, tf32: bool = False,
              recalibrate: bool = False) -> Entry:
    """The peak a latency case compares to; one PeakCache per root, device and threads per process,
    so a run measures (or reads) each precision once and ``recalibrate`` measures once per run."""
    key = (str(root), device, threads, recalibrate)
    if key not in _CACHES:
        _CACHES[key] = PeakCache(root, device, threads, recalibrate=recalibrate)
    return _CACHES[key].peak(peak_precision(precision, device, tf32))


def method_text(entry: Entry) -> str | None:
    """The kernel and sizes, the native/emulated note, interference: one line for the record."""
    if not entry.get("method"):
        return None
    parts = [entry["method"], entry.get("note"),
             f"measured under host interference ({entry['interference']}): measured again next run"
             if entry.get("interference") else None, entry.get("not_cached")]
    return "; ".join(p for p in parts if p)


def share_fields(gflops_per_s: float | None, entry: Entry) -> dict[str, Any]:
    """The latency record's peak fields (core/records.py): the peak, its method and the share."""
    peak = entry.get("gflops_per_s")
    out = {"peak_gflops_per_s": peak, "peak_method": method_text(entry), "share_of_peak": None,
           "share_of_peak_reason": None}
    if gflops_per_s is None:
        out["share_of_peak_reason"] = ("FLOPs unknown: they are counted on the model's torch module "
                                       "(torch.utils.flop_counter) and this model has none or none were counted")
    elif peak is None:
        out["share_of_peak_reason"] = f"no peak for this precision: {entry.get('reason')}"
    else:
        out["share_of_peak"] = gflops_per_s / peak
    return out
