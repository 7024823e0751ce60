"""The hardware kind: what makes two runs one series of a history (and a run comparable at all).

A kind is the CPU model, the CPU flags that change results (AVX-512, VNNI, BF16, FP16, AMX), the
usable CPU count, the GPU (name, count, driver, CUDA) and the version of every engine library.
Two runners of one kind give one id, whatever their host names; any of those fields differing
gives another id. ``this_host_kind`` reads the host without importing torch (``/proc/cpuinfo``,
``nvidia-smi``, ``importlib.metadata``), so ``infermatrix kind`` can name the history folder and
the durations file before anything heavy is loaded; the plugin writes the same kind into every
run's machine_info, and ``kind_of`` reads it back (or derives it from a run saved before it was
recorded).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from infermatrix.core.hardware import cpu_flags

#: CPU flags (as /proc/cpuinfo spells them) that change what an engine computes or how fast:
#: the kernels an engine picks (oneDNN, MLAS, OpenVINO) are chosen by these at run time
RESULT_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx2", "avx512_bf16", "avx512_fp16", "avx512_vnni",
                "avx512f", "avx_vnni")
#: py-cpuinfo (pytest-benchmark's machine_info["cpu"]["flags"]) adds CPUID spellings beside the kernel's
_FLAG_ALIASES = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
                 "avxvnni": "avx_vnni", "amxbf16": "amx_bf16", "amxint8": "amx_int8", "amxtile": "amx_tile"}
MAX_ID_CHARS = 80
_HASH_CHARS = 8
_ID_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
#: words of a CPU/GPU model name that say nothing about the kind
_NOISE_WORDS = {"r", "tm", "cpu", "processor", "with", "corporation"}


class KindError(ValueError):
    """A hardware kind that cannot be built or read (the field and the bad value named)."""


def result_flags(flags: Any) -> tuple[str, ...]:
    """The sorted subset of ``flags`` (any spelling /proc/cpuinfo or py-cpuinfo uses) in RESULT_FLAGS."""
    names = {_FLAG_ALIASES.get(str(f).lower(), str(f).lower()) for f in flags or ()}
    return tuple(sorted(names & set(RESULT_FLAGS)))


@dataclass(frozen=True)
class HardwareKind:
    cpu_model: str
    cpu_flags: tuple[str, ...]
    cpus: int                      # usable CPUs; 0 only for a run saved without any CPU count
    gpu_name: str | None
    gpu_count: int
    driver: str | None
    cuda: str | None
    libraries: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.cpu_model, str) or not self.cpu_model.strip():
            raise KindError(f"cpu_model {self.cpu_model!r}: expected a non-empty string")
        if not isinstance(self.cpu_flags, tuple) or self.cpu_flags != result_flags(self.cpu_flags) \
                or len(self.cpu_flags) != len(set(self.cpu_flags)):
            raise KindError(f"cpu_flags {self.cpu_flags!r}: expected a sorted tuple of distinct flags "
                            f"from {', '.join(RESULT_FLAGS)}")
        for name in ("cpus", "gpu_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise KindError(f"{name} {value!r}: expected an integer >= 0")
        if (self.gpu_name is None) != (self.gpu_count == 0):
            raise KindError(f"gpu_name {self.gpu_name!r} with gpu_count {self.gpu_count}: "
                            "a GPU name goes with a count >= 1, no GPU with count 0")
        for name in ("gpu_name", "driver", "cuda"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise KindError(f"{name} {value!r}: expected a non-empty string or null")
        libs = self.libraries
        if not isinstance(libs, tuple) or any(not (isinstance(p, tuple) and len(p) == 2
                                                   and all(isinstance(s, str) and s for s in p)) for p in libs):
            raise KindError(f"libraries {libs!r}: expected a tuple of (name, version) string pairs")
        names = [n for n, _ in libs]
        if names != sorted(set(names)):
            raise KindError(f"libraries {names}: expected distinct names, sorted")

    def fields(self) -> dict[str, Any]:
        """The kind's fields as JSON values (libraries as a name -> version object)."""
        out = asdict(self)
        out["cpu_flags"] = list(self.cpu_flags)
        out["libraries"] = dict(self.libraries)
        return out

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:_HASH_CHARS]

    @property
    def id(self) -> str:
        """``<readable slug>-<8 hex of the fields' sha256>``: [a-z0-9-], at most 80 characters, a
        folder name on every filesystem. The slug is for people; the hash is what tells kinds apart."""
        parts = [_slug(self.cpu_model)[:28], f"{self.cpus}cpu" if self.cpus else "", _flag_tag(self.cpu_flags)]
        if self.gpu_count:
            parts.append(f"{self.gpu_count}x-{_slug(self.gpu_name or '')[:24]}")
        slug = "-".join(p.strip("-") for p in parts if p.strip("-"))
        room = MAX_ID_CHARS - _HASH_CHARS - 1
        if len(slug) > room:  # cut at a word's end, not inside one
            slug = slug[:room + 1].rsplit("-", 1)[0] if "-" in slug[:room + 1] else slug[:room]
        slug = slug.strip("-") or "host"
        return f"{slug}-{self.digest}"

    @property
    def hardware(self) -> str:
        """The hardware alone (CPU model, usable CPUs, result-changing flags, GPU): what makes two runs'
        latencies comparable at all. Library, driver and CUDA versions are left out on purpose: an
        A/B of an upgrade compares two kinds on one machine."""
        text = self.cpu_model + (f", {self.cpus} CPUs" if self.cpus else "")
        text += f" ({' '.join(self.cpu_flags)})" if self.cpu_flags else ""
        if self.gpu_count:
            text += f" + {self.gpu_name}" + (f" x{self.gpu_count}" if self.gpu_count > 1 else "")
        return text

    @property
    def label(self) -> str:
        """One human line: the hardware, the GPU software, how many libraries, the kind's hash."""
        gpu_software = ", ".join(s for s in (f"driver {self.driver}" if self.driver else "",
                                            f"CUDA {self.cuda}" if self.cuda else "") if s)
        libs = ", ".join(f"{n} {v}" for n, v in self.libraries if n in ("torch", "onnxruntime", "openvino",
                                                                         "onnxruntime-gpu", "tensorrt"))
        extra = "; ".join(s for s in (gpu_software, f"{len(self.libraries)} libraries" + (f" ({libs})" if libs else ""))
                          if s)
        return f"{self.hardware}; {extra} [{self.digest}]"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "fields": self.fields()}

    @classmethod
    def from_json(cls, data: Any) -> HardwareKind:
        """The kind ``to_json`` wrote; a stored id that its fields do not give is refused (an edited
        or foreign record must not land in another kind's series)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("fields"), Mapping):
            raise KindError(f"hardware kind {data!r:.200}: expected an object with 'fields'")
        f = data["fields"]
        expected = set(cls.__dataclass_fields__)
        if set(f) != expected:
            raise KindError(f"hardware kind fields {sorted(f)}: expected exactly {sorted(expected)}")
        libs = f["libraries"]
        if not isinstance(libs, Mapping):
            raise KindError(f"libraries {libs!r}: expected an object of name -> version")
        flags = f["cpu_flags"]
        if not isinstance(flags, list):
            raise KindError(f"cpu_flags {flags!r}: expected a list")
        kind = cls(cpu_model=f["cpu_model"], cpu_flags=tuple(flags), cpus=f["cpus"], gpu_name=f["gpu_name"],
                   gpu_count=f["gpu_count"], driver=f["driver"], cuda=f["cuda"],
                   libraries=tuple(sorted((str(n), str(v)) for n, v in libs.items())))
        if "id" in data and data["id"] != kind.id:
            raise KindError(f"hardware kind id {data['id']!r} does not match its fields (they give {kind.id!r})")
        return kind


def _slug(text: str) -> str:
    words = re.sub(r"[^a-z0-9]+", " ", text.lower()).split()
    return "-".join(w for w in words if w not in _NOISE_WORDS)


def _flag_tag(flags: tuple[str, ...]) -> str:
    """The flags in a few words: the widest vector unit, then VNNI/BF16/FP16 support."""
    have = set(flags)
    unit = ("amx" if have & {"amx_bf16", "amx_int8", "amx_tile"} else "avx512" if "avx512f" in have
            else "avx2" if "avx2" in have else "")
    extras = [name for name, needs in (("vnni", {"avx512_vnni", "avx_vnni"}), ("bf16", {"avx512_bf16", "amx_bf16"}),
                                       ("fp16", {"avx512_fp16"})) if have & needs]
    return "-".join([unit, *extras]).strip("-")


def kind_of(machine_info: Mapping[str, Any]) -> HardwareKind:
    """A run's kind: the one its plugin recorded, or, for a run saved before kinds were recorded,
    the same fields read from its older machine_info (pytest-benchmark's ``cpu`` block and
    infermatrix's ``cpu_model``, ``usable_cpus``, ``gpu`` and ``libraries``)."""
    ours = machine_info.get("infermatrix") or {}
    if not isinstance(ours, Mapping):
        raise KindError(f"machine_info['infermatrix'] is a {type(ours).__name__}; expected an object")
    if "hardware_kind" in ours:
        return HardwareKind.from_json(ours["hardware_kind"])
    cpu_block = machine_info.get("cpu") if isinstance(machine_info.get("cpu"), Mapping) else {}
    cpu = ours.get("cpu_model") or cpu_block.get("brand_raw") or machine_info.get("processor") or "unknown"
    cpus = ours.get("usable_cpus") or ours.get("logical_cpus") or cpu_block.get("count") or 0
    gpu = ours.get("gpu") if isinstance(ours.get("gpu"), Mapping) else None
    libraries = ours.get("libraries") if isinstance(ours.get("libraries"), Mapping) else {}
    return HardwareKind(
        cpu_model=str(cpu).strip() or "unknown", cpu_flags=result_flags(cpu_block.get("flags")), cpus=int(cpus),
        gpu_name=str(gpu["name"]) if gpu and gpu.get("name") else None,
        gpu_count=int(gpu.get("count") or 1) if gpu and gpu.get("name") else 0,
        driver=_text(gpu.get("driver")) if gpu and gpu.get("name") else None,
        cuda=_text(gpu.get("cuda")) if gpu and gpu.get("name") else None,
        libraries=tuple(sorted((str(n), str(v)) for n, v in libraries.items())))


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None and str(value) != "None" else None


def this_host_kind(libraries: Mapping[str, str]) -> HardwareKind:
    """This host's kind, read without importing torch. ``libraries``: every installed engine
    library's version (fixtures/machine.py ``library_versions``: which libraries are the engines'
    is the engines' knowledge, not core's)."""
    gpus = visible_gpus()
    return HardwareKind(
        cpu_model=cpu_model(), cpu_flags=result_flags(cpu_flags()), cpus=usable_cpus(),
        gpu_name=gpus[0]["name"] if gpus else None, gpu_count=len(gpus),
        driver=gpus[0]["driver"] if gpus else None, cuda=torch_cuda_version() if gpus else None,
        libraries=tuple(sorted(libraries.items())))


def cpu_model() -> str:
    """/proc/cpuinfo's model name: the kind's CPU and the engine cache's artifact fingerprint (runner/session.py)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def visible_gpus() -> list[dict[str, str]]:
    """The GPUs a CUDA program here sees (nvidia-smi's list, narrowed by CUDA_VISIBLE_DEVICES as
    CUDA narrows it), each with its name and driver; empty where there is no NVIDIA driver."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        res = subprocess.run([smi, "--query-gpu=index,uuid,name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if res.returncode != 0:
        return []
    rows = [dict(zip(("index", "uuid", "name", "driver"), (c.strip() for c in line.split(","))))
            for line in res.stdout.splitlines() if line.count(",") >= 3]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return rows
    picked = []
    for token in (t.strip() for t in visible.split(",")):
        match = [r for r in rows if token and (r["index"] == token or r["uuid"].startswith(token))]
        if not match:
            break  # CUDA stops at the first id it cannot resolve
        picked.append(match[0])
    return picked


def torch_cuda_version() -> str | None:
    """The CUDA that torch was built with (``torch.version.cuda``), read from torch/version.py's
    text: importing torch would cost seconds and memory that ``infermatrix kind`` must not spend."""
    import importlib.metadata as md
    try:
        text = md.distribution("torch").locate_file("torch/version.py").read_text()
    except (md.PackageNotFoundError, OSError):
        return None
    found = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return found.group(1) if found else None
