"""What makes two runs' latencies comparable; shared by the plugin and the CLI (JSON only)."""
from __future__ import annotations

from functools import lru_cache
from typing import Any


def hardware_id(machine_info: dict[str, Any]) -> str:
    """The hardware a run was measured on: CPU model, usable CPUs, the flags that change results,
    the GPU (core/hardware_kind.py ``HardwareKind.hardware``): two runs are comparable only when
    this matches. It reads the kind the run recorded, or derives it from an older run's machine_info
    (CPU model plus GPU name where that is all the run saved).

    pytest-benchmark's own machine id ignores the GPU, so it cannot tell an A100 run from an
    H100 run on the same host type. Library versions are not hardware: an A/B of an upgrade
    compares two kinds of one machine; a history's series key is the whole kind (``kind_of(...).id``).
    """
    from infermatrix.core.hardware_kind import kind_of  # it reads cpu_flags below
    return kind_of(machine_info).hardware


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
