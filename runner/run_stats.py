"""What a run counts (engines built and loaded from the cache, memory figures measured or reused:
the terminal summary's lines, merged across xdist workers) and what ties an artifact to a host."""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

from infermatrix.core.hardware_kind import cpu_model


@dataclass
class BuildStats:
    built: int = 0
    build_seconds: float = 0.0
    cached: int = 0
    notices: set[str] = field(default_factory=set)
    memory_measured: int = 0  # cases whose memory a child measured this run
    memory_reused: int = 0    # cases whose kept figures were reused (runner/memory_reuse.py)
    memory_failed: int = 0    # cases whose memory child failed (memory_error in their record)

    def as_dict(self) -> dict[str, Any]:
        return {"built": self.built, "build_seconds": self.build_seconds, "cached": self.cached,
                "notices": sorted(self.notices), "memory_measured": self.memory_measured,
                "memory_reused": self.memory_reused, "memory_failed": self.memory_failed}

    def merge(self, other: dict[str, Any]) -> None:
        self.built += other["built"]
        self.build_seconds += other["build_seconds"]
        self.cached += other["cached"]
        self.notices.update(other["notices"])
        self.memory_measured += other["memory_measured"]
        self.memory_reused += other["memory_reused"]
        self.memory_failed += other["memory_failed"]

    def count_memory(self, info: dict[str, Any]) -> None:
        """A case's memory figures as delivered: measured this run, reused, or failed (nothing: not measured)."""
        if "memory_reused" not in info:
            return
        if info["memory_reused"]:
            self.memory_reused += 1
        elif info.get("memory_error"):
            self.memory_failed += 1
        else:
            self.memory_measured += 1


def host_fingerprint(device: str) -> dict[str, str]:
    """What ties an optimized artifact to the hardware (ORT/OpenVINO lay out for the CPU)."""
    info = {"machine": platform.machine(), "cpu": cpu_model()}
    if device == "cuda":
        import torch
        info.update(gpu=torch.cuda.get_device_name(0), cuda=str(torch.version.cuda))
    return info
