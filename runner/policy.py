"""The process policy every measuring process applies the same way: the pytest run, the per-engine
memory child, ``infermatrix ab``'s workers (through the plugin) and bench/gpu_check.py's runs.

- threads: PyTorch's intra-op pool is process-wide (ONNX Runtime and OpenVINO take theirs per
  session from the engine), so it is set once here;
- torch.compile's compiled code lives in inductor's cache, kept inside the engine cache so a warm
  run does not recompile and ``--engine-cache-clear`` clears everything (torch reads this setting
  from the environment only, so the environment is where it is set);
- TF32 stated to PyTorch explicitly: its own defaults differ by library (cuDNN convolutions allow
  TF32 unless told not to, cuBLAS matmuls do not);
- nothing downloads: ``HF_HUB_OFFLINE=1`` unless the user set it.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

INDUCTOR_DIR = "_inductor"  # inside the engine cache root


@dataclass(frozen=True)
class ProcessPolicy:
    #: the engine cache (None: a process that builds nothing, e.g. one that only loads an entry)
    cache_root: Path | None
    threads: int | None = None
    tf32: bool = False

    def __post_init__(self) -> None:
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise ValueError(f"ProcessPolicy.threads={self.threads!r}; expected a positive count or None")

    def apply(self) -> None:
        import torch
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.cache_root is not None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_dir(Path(self.cache_root)))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32


#: the prefix of the folder a process makes when the engine cache is read-only (``inductor_dir``)
FALLBACK_PREFIX = "infermatrix-inductor-"


def inductor_dir(cache_root: Path) -> Path:
    """Inductor's scratch cache: inside ours when it can be written, else a folder of this process.
    Importing torch._dynamo creates it, so a read-only shared cache (a CI image, a network mount)
    would end every hf: model's build in "Read-only file system"; torch_compile's own artifacts
    live in its entries (engines/torch_compile.py), not here.

    The folder of a process is removed when that process exits, and a process started by one that
    made it (a memory child, the memory fork server: the setting is inherited) uses the same folder
    rather than making one of its own that nothing would remove (a forked child ends in ``os._exit``,
    which runs no exit handler)."""
    wanted = cache_root / INDUCTOR_DIR
    if os.access(wanted if wanted.exists() else cache_root, os.W_OK):
        return wanted
    inherited = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")
    if Path(inherited).name.startswith(FALLBACK_PREFIX) and os.access(inherited, os.W_OK):
        return Path(inherited)
    made = Path(tempfile.mkdtemp(prefix=FALLBACK_PREFIX))
    atexit.register(shutil.rmtree, made, True)
    return made
