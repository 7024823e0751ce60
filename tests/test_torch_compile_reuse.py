"""A torch_compile entry built after another batch size of the same model, in the same process (as
the test process builds a matrix), is one a fresh process loads from inductor's cache without
compiling again (engines/torch_compile.py ``_compile``). Found on tiny-gpt2: dynamo's "automatic
dynamic" memory of the batch-1 compile made the batch-8 build trace its graph with the symbols in
another order, so every memory child's load missed inductor's FX graph cache and compiled anew."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from torch._dynamo.utils import counters
    from infermatrix.engines.cache import EngineCache
    from infermatrix.engines.torch_compile import TorchCompileEngine
    from infermatrix.models.decoder import DecoderConfig, decoder_model
    model = decoder_model("tiny-decoder-test", DecoderConfig(n_layer=1, n_embd=32, n_head=2, vocab_size=64,
                                                             n_positions=64))
    module = model.build_module(None)
    cache = EngineCache(Path(sys.argv[1]))
    built = []
    for batch in map(int, sys.argv[2].split(",")):
        spec = model.build_spec(module, batch)
        builder = TorchCompileEngine("fp32", "cpu")
        entry = cache.get_or_build("torch_compile", {"model": model.name, "batch": batch},
                                   lambda stage: builder.build(spec, stage))
        built.append(entry.built)
    counters.clear()  # what the load below does, alone
    engine = TorchCompileEngine("fp32", "cpu")
    engine.load(entry.path, spec)
    engine.close()
    print(json.dumps({"built": built, "inductor": dict(counters["inductor"])}))
""")


def _run(cache, batches, env):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(cache), batches], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_entry_built_after_another_batch_loads_from_inductors_cache_in_a_fresh_process(tmp_path):
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "process-inductor"))
    first = _run(tmp_path / "cache", "1,8", env)  # builds batch 1, then batch 8 in the same process
    assert first["built"] == [True, True]
    fresh = _run(tmp_path / "cache", "8", env)  # a fresh process (a memory child) loads batch 8
    assert fresh["built"] == [False]
    assert fresh["inductor"].get("fxgraph_cache_hit", 0) >= 1, fresh
    assert fresh["inductor"].get("fxgraph_cache_miss", 0) == 0, f"the load compiled again: {fresh}"
