"""Cold start: the time from starting a fresh process to its first answer, per engine.

What serverless and autoscaled inference pay on every new replica: the interpreter starts, imports
the runtime, loads the artifact (a prebuilt engine from the cache, as a deployment ships it: the
build is not part of a cold start), prepares the inputs and runs one inference. Each start is a new
``python -m infermatrix.scenarios.cold_start REQUEST`` process; the parent times it from just
before the spawn to the child's report that its first inference returned, and the child reports
its own phases (imports, load, first and second inference) on its own clock. Nothing is shared
between starts but the operating system's file cache (a second start reads the artifact from
memory, as a warm node does; the first start of a case says how cold a cold node is).

The parent side (:func:`cold_starts`) runs ``starts`` processes one after another and gives the
record's figures; the child side (:func:`child`) is this module run as a script.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infermatrix.core.percentiles import percentile
from infermatrix.core.source_shim import pythonpath, write_shim

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600.0
FIRST = "infermatrix-cold-start-first"   # printed the moment the first answer is back
READY = "infermatrix-cold-start "        # then the child's phases, as JSON
PHASES = ("import_s", "load_s", "first_inference_s", "second_inference_s")


def cold_starts(request: dict[str, Any], starts: int, shim_dir: Path) -> dict[str, Any]:
    """Run ``starts`` fresh processes for ``request`` (model hand-off, engine, precision, device,
    cache entry ...) one after another and summarise them: p50 and max of the wall time from the
    spawn to the first answer (the parent's clock, read when the child's FIRST line arrives), the
    median of each phase the children timed, and ``startup_s``: the interpreter's own start-up
    (the wall time the phases do not cover)."""
    if starts < 1:
        raise ValueError(f"starts={starts}; expected at least 1")
    env = dict(os.environ, PYTHONPATH=pythonpath(write_shim(ROOT, shim_dir), ROOT))
    walls, phases = [], []
    for _ in range(starts):
        with tempfile.TemporaryFile("w+") as err:
            begin = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "infermatrix.scenarios.cold_start", json.dumps(request)],
                                    stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            first, result = None, None
            try:
                for line in proc.stdout:
                    if line.startswith(FIRST) and first is None:
                        first = time.perf_counter() - begin
                    elif line.startswith(READY):
                        result = json.loads(line[len(READY):])
                proc.wait(timeout=TIMEOUT_S)
            finally:
                if proc.poll() is None:
                    proc.kill()
            err.seek(0)
            if proc.returncode or first is None or result is None:
                raise RuntimeError(f"a cold start of {request['engine']} {request['precision']} failed "
                                   f"(exit {proc.returncode}): {err.read().strip()[-1500:]}")
        walls.append(first - result["harness_import_s"])  # what a deployment pays, without our imports
        phases.append(result)
    median = {k: percentile([r[k] for r in phases], 50) for k in (*PHASES, "harness_import_s")}
    startup = percentile([w - sum(r[k] for k in PHASES[:3]) for w, r in zip(walls, phases)], 50)
    return {"cold_start_p50_s": percentile(walls, 50), "cold_start_max_s": max(walls), **median,
            "startup_s": max(startup, 0.0), "starts": starts, "cold_start_walls_s": walls}


def child(request: dict[str, Any]) -> dict[str, Any]:
    """One cold start, in this fresh process: the runtime's imports (first, so they are cold), this
    harness's own imports and the request's inputs (timed apart and taken out of the figure: a
    deployment neither imports infermatrix nor makes up its inputs), the load from the cache entry
    and the inputs' preparation, the first answer."""
    t_import = time.perf_counter()
    for module in request["runtime_modules"]:
        importlib.import_module(module)
    t_harness = time.perf_counter()
    from infermatrix.engines import get_engine
    from infermatrix.models.handoff import register_handed_off
    from infermatrix.models.registry import get_model
    register_handed_off(request)
    cls = get_engine(request["engine"])
    model = get_model(request["model"])
    inputs = model.inputs(request["batch_size"], seed=request["seed"])  # the request's data: not the replica's work
    t_load = time.perf_counter()
    engine = cls(request["precision"], request["device"], threads=request.get("threads"))
    live = model.build_module(request.get("cache_root")) if cls.live_module else None
    engine.load(Path(request["entry"]), model.build_spec(live, request["example_batch"],
                                                         int8_scheme=request.get("int8_scheme")))
    prepared = engine.prepare(inputs)
    t_first = time.perf_counter()
    engine.run(prepared)
    t_second = time.perf_counter()
    print(FIRST, flush=True)
    engine.run(prepared)
    t_done = time.perf_counter()
    return {"import_s": t_harness - t_import, "harness_import_s": t_load - t_harness, "load_s": t_first - t_load,
            "first_inference_s": t_second - t_first, "second_inference_s": t_done - t_second}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    result = child(json.loads(argv[0]))
    print(READY + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
