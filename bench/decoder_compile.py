"""What making every size symbolic costs a compiled decoder step, against making only its token and
KV-cache lengths symbolic (engines/torch_compile.py): cold compile in an empty inductor folder, the
warm compile a fresh process pays against that folder, and the step's median latency.

Each figure comes from a process of its own (dynamo and inductor keep state per process), on the
untrained ``tiny-gpt2`` architecture (compile times do not depend on the weights):

    python bench/decoder_compile.py [--batches 1,8] [--steps 300]

prints one line per (mode, batch, cold/warm) and a JSON summary. ``mode`` is ``all`` (dynamic=True,
the engine before 2026-12-07) or ``axes`` (dynamic=None and the spec's dynamic axes marked, the
engine now).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, statistics, sys, time, torch
from infermatrix.engines.torch_common import module_for, prepare_tensors
from infermatrix.engines.torch_compile import mark_dynamic_axes, probe_cpu_isa
probe_cpu_isa()  # once per host, in inductor's own folder, as the engine does: not part of a compile
from infermatrix.models.decoder import TINY_GPT2, decoder_model
mode, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = decoder_model("tiny-gpt2-untrained", TINY_GPT2)
torch.manual_seed(0)
spec = model.build_spec(model.build_module(None), batch)
args = prepare_tensors(spec.example_inputs, spec.input_names, "fp32", "cpu")
compiled = torch.compile(module_for(spec, "fp32", "cpu"), backend="inductor", dynamic=True if mode == "all" else None)
if mode == "axes":
    mark_dynamic_axes(spec, args)  # the engine's own marking
start = time.perf_counter()
with torch.inference_mode():
    compiled(*args)
    compile_s = time.perf_counter() - start
    for _ in range(20):
        compiled(*args)
    times = []
    for _ in range(steps):
        t = time.perf_counter(); compiled(*args); times.append(time.perf_counter() - t)
print(json.dumps({"compile_s": compile_s, "median_ms": statistics.median(times) * 1e3}))
"""


def run(mode: str, batch: int, steps: int, inductor: str) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=inductor, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(batch), str(steps)], env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise SystemExit(f"{mode} batch {batch}: the child failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--steps", type=int, default=300)
    opts = parser.parse_args()
    results = []
    for batch in (int(b) for b in opts.batches.split(",")):
        for mode in ("all", "axes"):
            with tempfile.TemporaryDirectory(prefix="decoder-compile-") as inductor:
                for phase in ("cold", "warm"):
                    started = time.perf_counter()
                    got = run(mode, batch, opts.steps, inductor)
                    row = {"mode": mode, "batch": batch, "phase": phase, **got,
                           "process_s": time.perf_counter() - started}
                    results.append(row)
                    print(f"{mode:4} batch {batch} {phase}: compile {got['compile_s']:.1f} s, "
                          f"step median {got['median_ms']:.3f} ms", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
