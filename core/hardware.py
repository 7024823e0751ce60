"""What makes two runs' latencies comparable; shared by the plugin and the CLI (JSON only)."""
from __future__ import annotations

from functools import lru_cache
from typing import Any


def hardware_id(machine_info: dict[str, Any]) -> str:
    """CPU model plus GPU name, from pytest-benchmark's machine_info as infermatrix extends it.

    pytest-benchmark's own machine id ignores the GPU, so it cannot tell an A100 run from an
    H100 run on the same host type.
    """
    ours = machine_info.get("infermatrix") or {}
    cpu = ours.get("cpu_model") or (machine_info.get("cpu") or {}).get("brand_raw") or machine_info.get("processor") or "?"
    gpu = (ours.get("gpu") or {}).get("name")
    return f"{cpu} + {gpu}" if gpu else str(cpu)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The first CPU's flags from /proc/cpuinfo (empty where there is none, e.g. macOS): what this
    host computes natively is read here, never assumed from its model name."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()
