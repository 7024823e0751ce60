"""What a fresh process (a memory child, the next run) pays to load a torch_compile entry: no
compile that the entry's inductor files already hold, and no vector-ISA probe of its own
(engines/torch_compile.py).

- An entry built after another batch size of the same model, in the same process (as the test
  process builds a matrix), loads from inductor's cache (``_compile``). Found on tiny-gpt2:
  dynamo's "automatic dynamic" memory of the batch-1 compile made the batch-8 build trace its
  graph with the symbols in another order, so every memory child's load missed inductor's FX
  graph cache and compiled anew.
- Inductor's check of which CPU vector ISAs work runs in the process's own inductor cache, never
  in an entry's scratch copy (``probe_cpu_isa``): in a scratch cache every fresh process, each
  memory child among them, compiled the probes again (12.3 s of a 19.6 s child on the machine
  that found it).

Both run in the same two processes: the first builds batch 1 then batch 8, the second loads batch 8."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from torch._dynamo.utils import counters
    from torch._inductor import cpu_vec_isa
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    seen = []
    check = cpu_vec_isa.VecISA.check_build
    def recording(self, code):
        seen.append(cache_dir())
        return check(self, code)
    cpu_vec_isa.VecISA.check_build = recording
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
    step = model.inputs(batch, seed=0)
    engine.run(engine.prepare(step))
    engine.close()
    print(json.dumps({"built": built, "inductor": dict(counters["inductor"]), "checked_in": seen}))
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch-compile-reuse")
    own = root / "process-inductor"
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(own))
    out = []
    for batches in ("1,8", "8"):  # the first process builds both entries, the second only loads batch 8
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(root / "cache"), batches], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert out[0]["built"] == [True, True] and out[1]["built"] == [False]
    return own, out


def test_an_entry_built_after_another_batch_loads_from_inductors_cache_in_a_fresh_process(runs):
    _, (_, fresh) = runs
    assert fresh["inductor"].get("fxgraph_cache_hit", 0) >= 1, fresh
    assert fresh["inductor"].get("fxgraph_cache_miss", 0) == 0, f"the load compiled again: {fresh}"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="inductor probes vector ISAs on x86 only")
def test_the_isa_probes_run_in_the_process_cache_and_only_once_per_host(runs):
    own, both = runs
    for run in both:
        assert run["checked_in"], "inductor checked no vector ISA: the test no longer exercises the probe"
        assert set(run["checked_in"]) == {str(own)}, f"ISA probes compiled outside the process cache: {run}"
    # the probes' files are in the process cache: a later process finds them built and loaded once
    assert list(own.rglob("*.load_ok")), f"no probe load markers under {own}"
