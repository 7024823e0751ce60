"""New run folders: a run is written into a folder no earlier run used, so none is overwritten."""
from __future__ import annotations

import time
from pathlib import Path


def new_out_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a new run folder under {root}")
