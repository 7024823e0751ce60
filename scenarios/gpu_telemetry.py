"""NVML readers for the CUDA cases (DESIGN.md section 5): the GPUs of the machine, SM clock,
temperature and clock-event (throttle) reasons before and after a case, and energy per inference.

Every reader works where NVML is absent: without ``nvidia-ml-py`` (import name ``pynvml``), without
the driver's ``libnvidia-ml.so.1`` or without a GPU, a figure is None and a reason says why, never
a made-up number. The decoding and the energy arithmetic are pure functions, tested without a GPU.

The NVML calls (``nvmlDeviceGetClockInfo``, ``nvmlDeviceGetTemperatureV``,
``nvmlDeviceGetCurrentClocksEventReasons``, ``nvmlDeviceGetTotalEnergyConsumption`` ...) follow
nvidia-ml-py 13's ``pynvml.py``; the readings on a real GPU have never run on the development
machine (it has no GPU): see the README's "verified on" table.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

try:  # optional: the GPU extra installs it; only its constants are used at import time
    import pynvml
except ImportError:
    pynvml = None

#: clock-event reason bits, (pynvml constant, name, documented value): NVML's
#: nvmlClocksEventReason* (formerly nvmlClocksThrottleReason*, same bits); the last two exist
#: only under the older names in nvidia-ml-py 13
_REASONS = (
    ("nvmlClocksEventReasonGpuIdle", "gpu_idle", 0x1),
    ("nvmlClocksEventReasonApplicationsClocksSetting", "applications_clocks_setting", 0x2),
    ("nvmlClocksEventReasonSwPowerCap", "sw_power_cap", 0x4),
    ("nvmlClocksEventReasonHwSlowdown", "hw_slowdown", 0x8),
    ("nvmlClocksEventReasonSyncBoost", "sync_boost", 0x10),
    ("nvmlClocksEventReasonSwThermalSlowdown", "sw_thermal_slowdown", 0x20),
    ("nvmlClocksEventReasonHwThermalSlowdown", "hw_thermal_slowdown", 0x40),
    ("nvmlClocksEventReasonHwPowerBrakeSlowdown", "hw_power_brake_slowdown", 0x80),
    ("nvmlClocksEventReasonDisplayClockSetting", "display_clock_setting", 0x100),
    ("nvmlClocksThrottleReasonBoardLimit", "board_limit", 0x200),
    ("nvmlClocksThrottleReasonReliability", "reliability", 0x400),
)
REASON_BITS: dict[int, str] = {getattr(pynvml, const, value): name for const, name, value in _REASONS}
#: reasons that are not a slowdown: an idle GPU lowers its clocks, and applications clocks are
#: an administrator's setting, not the hardware backing off under load
NOT_THROTTLING = frozenset({"gpu_idle", "applications_clocks_setting"})
#: NVML's energy counter moves every 20-100 ms: a window shorter than about a second is mostly
#: quantization error, so the energy window runs at least this long
ENERGY_WINDOW_S = 1.0
#: give up waiting for the energy counter to move after this long (it is not updating)
COUNTER_STALL_S = 5.0


# ---- pure functions ----
def decode_reasons(mask: int) -> list[str]:
    """The names of the bits set in a clock-event reason mask (unknown bits as ``bit_0x...``)."""
    names = [name for bit, name in sorted(REASON_BITS.items()) if mask & bit]
    unknown = mask & ~sum(REASON_BITS)
    names += [f"bit_{1 << i:#x}" for i in range(64) if unknown & (1 << i)]
    return names


def throttle_reasons(mask: int) -> list[str]:
    """The reasons in ``mask`` that mean the clocks were held down (all but idle and applications clocks)."""
    return [name for name in decode_reasons(mask) if name not in NOT_THROTTLING]


def energy_figures(start_mj: int, end_mj: int, seconds: float, calls: int,
                   batch_size: int) -> tuple[dict[str, float] | None, str | None]:
    """Energy per inference from two reads of NVML's energy counter (millijoules).

    Returns ``({energy_j_per_inference, energy_j_per_item, avg_power_w}, None)`` or
    ``(None, reason)`` when the window cannot give a figure.
    """
    if calls < 1 or seconds <= 0 or batch_size < 1:
        return None, f"an empty energy window ({calls} calls over {seconds:g} s, batch {batch_size})"
    if end_mj <= start_mj:  # a driver reload resets the counter; an unchanged one did not update
        return None, f"the energy counter did not advance ({start_mj} -> {end_mj} mJ)"
    joules = (end_mj - start_mj) / 1000.0
    return {"energy_j_per_inference": joules / calls, "energy_j_per_item": joules / (calls * batch_size),
            "avg_power_w": joules / seconds}, None


# ---- NVML access ----
@functools.cache
def nvml() -> tuple[Any, str | None]:
    """``(pynvml, None)`` with NVML initialised once for the process, or ``(None, reason)``."""
    if pynvml is None:
        return None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()  # loads libnvidia-ml.so.1 from the driver
    except pynvml.NVMLError as exc:
        return None, f"NVML did not initialise: {exc} (no NVIDIA driver here?)"
    return pynvml, None


def _read(fn: Callable[..., Any], *args: Any) -> tuple[Any, str | None]:
    """One NVML call: ``(value, None)`` or ``(None, why)`` (e.g. Not Supported on this GPU)."""
    try:
        return fn(*args), None
    except pynvml.NVMLError as exc:
        return None, f"{fn.__name__}: {exc}"


def _handle(index: int) -> tuple[Any, str | None]:
    lib, why = nvml()
    if lib is None:
        return None, why
    return _read(lib.nvmlDeviceGetHandleByIndex, index)


def _uuid_key(uuid: str) -> str:
    return uuid.lower().removeprefix("gpu-")


def cuda_nvml_index(ordinal: int | None = None) -> tuple[int | None, str | None]:
    """NVML's index of a CUDA device (default: torch's current one), matched by UUID: NVML counts
    every GPU in PCI order, CUDA only the visible ones, fastest first unless CUDA_DEVICE_ORDER says."""
    import torch
    if not torch.cuda.is_available():
        return None, cuda_absent_reason()
    lib, why = nvml()
    if lib is None:
        return None, why
    ordinal = torch.cuda.current_device() if ordinal is None else ordinal
    want = _uuid_key(str(torch.cuda.get_device_properties(ordinal).uuid))
    count, why = _read(lib.nvmlDeviceGetCount)
    for index in range(count or 0):
        handle, why = _read(lib.nvmlDeviceGetHandleByIndex, index)
        uuid, why = _read(lib.nvmlDeviceGetUUID, handle) if handle is not None else (None, why)
        if uuid is not None and _uuid_key(uuid) == want:
            return index, None
    return None, f"no NVML device has the UUID of CUDA device {ordinal} ({want}); a MIG instance?{f' ({why})' if why else ''}"


def cuda_absent_reason() -> str | None:
    """Why no CUDA device can be used here (None when one can)."""
    import torch
    if torch.cuda.is_available():
        return None
    built = f"torch {torch.__version__} built for CUDA {torch.version.cuda}" if torch.version.cuda else \
        f"torch {torch.__version__} is a CPU-only build"
    _, why = nvml()
    return f"torch.cuda.is_available() is False ({built}); NVML: {why or 'initialised'}"


def snapshot(index: int | None) -> dict[str, Any]:
    """SM clock, temperature and clock-event reasons of NVML device ``index`` now; a figure NVML
    cannot give is None with the reason in ``notes``."""
    out: dict[str, Any] = {"sm_clock_mhz": None, "temperature_c": None, "clock_event_reasons": None,
                           "throttled": None, "notes": {}}
    handle, why = _handle(index) if index is not None else (None, "no NVML index for this device")
    if handle is None:
        out["notes"]["all"] = why
        return out
    lib = pynvml
    out["sm_clock_mhz"], why = _read(lib.nvmlDeviceGetClockInfo, handle, lib.NVML_CLOCK_SM)
    if why:
        out["notes"]["sm_clock_mhz"] = why
    out["temperature_c"], why = _temperature(handle)
    if why:
        out["notes"]["temperature_c"] = why
    mask, why = _reasons_mask(handle)
    if mask is None:
        out["notes"]["clock_event_reasons"] = why
    else:
        out["clock_event_reasons"] = decode_reasons(mask)
        out["throttled"] = bool(throttle_reasons(mask))
    return out


def _temperature(handle: Any) -> tuple[int | None, str | None]:
    """nvmlDeviceGetTemperatureV (newer drivers); nvmlDeviceGetTemperature where it is missing."""
    lib = pynvml
    if hasattr(lib, "nvmlDeviceGetTemperatureV"):
        try:
            return lib.nvmlDeviceGetTemperatureV(handle, lib.NVML_TEMPERATURE_GPU), None
        except lib.NVMLError_FunctionNotFound:
            pass  # a driver older than the binding: the deprecated call below still exists there
        except lib.NVMLError as exc:
            return None, f"nvmlDeviceGetTemperatureV: {exc}"
    return _read(lib.nvmlDeviceGetTemperature, handle, lib.NVML_TEMPERATURE_GPU)


def _reasons_mask(handle: Any) -> tuple[int | None, str | None]:
    """nvmlDeviceGetCurrentClocksEventReasons; the older ...ThrottleReasons (same bits) on older drivers."""
    lib = pynvml
    if not hasattr(lib, "nvmlDeviceGetCurrentClocksEventReasons"):  # an nvidia-ml-py older than the rename
        return _read(lib.nvmlDeviceGetCurrentClocksThrottleReasons, handle)
    try:
        return lib.nvmlDeviceGetCurrentClocksEventReasons(handle), None
    except lib.NVMLError_FunctionNotFound:
        return _read(lib.nvmlDeviceGetCurrentClocksThrottleReasons, handle)
    except lib.NVMLError as exc:
        return None, f"nvmlDeviceGetCurrentClocksEventReasons: {exc}"


def energy_window(run: Callable[[], Any], index: int | None, batch_size: int,
                  min_seconds: float = ENERGY_WINDOW_S) -> dict[str, Any]:
    """Energy per inference over back-to-back ``run()`` calls for at least ``min_seconds``.

    The counter moves in steps every 20-100 ms, so the window opens and closes on a step (the
    first read that differs from the one before), not at an arbitrary time: the energy between
    two steps is then exact and the calls between them are counted to within one call. The
    counter is the whole board's: another process on the GPU adds to it. A snapshot at the end
    (``telemetry_under_load``) shows whether the clocks were held down while the GPU was busy.
    """
    fields: dict[str, Any] = {"energy_j_per_inference": None, "energy_j_per_item": None, "avg_power_w": None,
                              "energy_window_s": None, "energy_window_calls": None}
    handle, why = _handle(index) if index is not None else (None, "no NVML index for this device")
    if handle is None:
        return {**fields, "energy_reason": why}
    try:
        return {**fields, **_energy_steps(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), run,
                                          batch_size, min_seconds), "telemetry_under_load": snapshot(index),
                "energy_scope": f"NVML board energy of GPU {index} (every process on it)"}
    except pynvml.NVMLError as exc:  # e.g. Not Supported (energy needs Volta or newer)
        return {**fields, "energy_reason": f"nvmlDeviceGetTotalEnergyConsumption: {exc}"}


def _energy_steps(read: Callable[[], int], run: Callable[[], Any], batch_size: int,
                  min_seconds: float) -> dict[str, Any]:
    """The window of :func:`energy_window`, from one counter step to the first step after ``min_seconds``."""
    def next_step(after: int) -> tuple[int | None, int]:
        """Run until the counter differs from ``after``: (its new value, or None after a stall; calls)."""
        calls, stall = 0, time.perf_counter() + COUNTER_STALL_S
        while time.perf_counter() < stall:
            run()
            calls += 1
            value = read()
            if value != after:
                return value, calls
        return None, calls

    start, _ = next_step(read())  # the calls before the first step fall outside the window
    if start is None:
        return {"energy_reason": f"the energy counter stood still for {COUNTER_STALL_S:g} s of inferences"}
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < min_seconds:
        run()
        calls += 1
    end, more = next_step(read())
    t1 = time.perf_counter()
    if end is None:
        return {"energy_reason": f"the energy counter stood still for {COUNTER_STALL_S:g} s of inferences"}
    figures, why = energy_figures(start, end, t1 - t0, calls + more, batch_size)
    return {**(figures or {}), "energy_window_s": t1 - t0, "energy_window_calls": calls + more,
            **({"energy_reason": why} if why else {})}


def gpu_inventory() -> tuple[list[dict[str, Any]], str | None]:
    """Every GPU of the machine for machine_info: NVML's list (index, name, UUID, memory, compute
    capability, driver, CUDA ordinal when visible), torch's visible devices where NVML is absent."""
    import torch
    lib, why = nvml()
    if lib is None:
        if not torch.cuda.is_available():
            return [], cuda_absent_reason()
        gpus = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": None, "cuda_index": i, "name": p.name, "memory_bytes": p.total_memory,
                         "compute_capability": f"{p.major}.{p.minor}", "driver": None})
        return gpus, f"from torch (driver unknown): {why}"
    visible = {}
    if torch.cuda.is_available():
        visible = {_uuid_key(str(torch.cuda.get_device_properties(i).uuid)): i for i in range(torch.cuda.device_count())}
    driver, _ = _read(lib.nvmlSystemGetDriverVersion)
    cuda_driver, _ = _read(lib.nvmlSystemGetCudaDriverVersion)
    count, why = _read(lib.nvmlDeviceGetCount)
    gpus = []
    for index in range(count or 0):
        handle, _ = _read(lib.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            continue
        name, _ = _read(lib.nvmlDeviceGetName, handle)
        uuid, _ = _read(lib.nvmlDeviceGetUUID, handle)
        memory, _ = _read(lib.nvmlDeviceGetMemoryInfo, handle)
        cc, _ = _read(lib.nvmlDeviceGetCudaComputeCapability, handle)
        gpus.append({"index": index, "cuda_index": visible.get(_uuid_key(uuid)) if uuid else None, "name": name,
                     "uuid": uuid, "memory_bytes": memory.total if memory is not None else None,
                     "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None, "driver": driver,
                     # NVML gives the driver's CUDA version as 1000 * major + 10 * minor
                     "driver_cuda": f"{cuda_driver // 1000}.{cuda_driver % 1000 // 10}" if cuda_driver else None})
    return gpus, None if gpus else (why or "NVML lists no GPU")
