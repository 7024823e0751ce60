"""The GPU side of the per-engine memory measurement (runner/memory.py, step 4 of its docstring):
probes that read an engine's device memory in the measuring child. CUDA is created by the child
itself, never by a process it was forked from (runner/memory_server.py)."""
from __future__ import annotations

import os
from typing import Any


def _cuda_context() -> None:
    """Create the CUDA context before the idle reading: every CUDA engine pays it alike."""
    import torch
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()


class TorchGpu:
    """Engines that allocate through PyTorch's caching allocator."""
    note = "; GPU: torch.cuda.max_memory_allocated over load + rounds"

    def start(self) -> None:
        import torch
        _cuda_context()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()

    def peak(self) -> tuple[int | None, str | None]:
        import torch
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - self.base, None


class ProcessGpu:
    """Runtimes with their own device allocator (ONNX Runtime CUDA): this process's device memory
    from NVML after the rounds (an arena keeps its peak), above the idle CUDA context."""
    note = "; GPU: NVML usedGpuMemory of the subprocess after the rounds, above its idle CUDA context"

    def start(self) -> None:
        _cuda_context()
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml, self.problem = pynvml, None
        except Exception as exc:  # ImportError, or an NVML library that does not load
            self.nvml, self.problem = None, f"NVML unavailable ({type(exc).__name__}: {exc}); pip install nvidia-ml-py"
        try:
            self.base = self._used() if self.nvml else None
        except LookupError as exc:  # this driver's NVML cannot list processes: said, not guessed
            self.nvml, self.problem, self.base = None, str(exc), None

    def _used(self) -> int | None:
        nvml, found = self.nvml, []
        for i in range(nvml.nvmlDeviceGetCount()):
            for proc in compute_processes(nvml, nvml.nvmlDeviceGetHandleByIndex(i)):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    found.append(proc.usedGpuMemory)
        return sum(found) if found else None

    def peak(self) -> tuple[int | None, str | None]:
        if self.problem:
            return None, self.problem
        try:
            used = self._used()
        except LookupError as exc:
            return None, str(exc)
        if used is None or self.base is None:
            return None, "NVML lists no device memory for this pid (a container's PID namespace hides it?)"
        return used - self.base, None


def compute_processes(nvml: Any, handle: Any) -> list[Any]:
    """``nvmlDeviceGetComputeRunningProcesses`` with the older versioned call as a fallback: the
    unversioned name is _v3, and on a driver without _v3 nvidia-ml-py raises
    ``NVMLLibraryMismatchError``, which is not an ``NVMLError``. LookupError when neither works."""
    tried = []
    for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2"):
        try:
            return list(getattr(nvml, name)(handle))
        except (nvml.NVMLError, nvml.NVMLLibraryMismatchError) as exc:
            tried.append(f"{name}: {type(exc).__name__}: {exc}")
    raise LookupError("NVML lists no processes on this driver (" + "; ".join(tried) + ")")


GPU_PROBES = {"torch": TorchGpu, "process": ProcessGpu}
