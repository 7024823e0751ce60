"""What a fresh process (a memory child, the next run) pays to load a torch_compile entry: no
compile that the entry's inductor files already hold, and no vector-ISA probe of its own
(engines/torch_compile.py).

- An entry built after another batch size of the same model, in the same process (as the test
  process builds a matrix), loads from inductor's cache (``_compile``). Found on tiny-gpt2:
  dynamo's "automatic dynamic" memory of the batch-1 compile made the batch-8 build trace its
  graph with the symbols in another order, so every memory child's load missed inductor's FX
  graph cache and compiled anew.
- Inductor's check of which CPU vector ISAs work runs once per host, in inductor's default cache
  folder, never in an entry's scratch copy nor in the process's cache (``probe_cpu_isa``): in a
  scratch cache every fresh process, each memory child among them, compiled the probes again
  (12.3 s of a 19.6 s child on the machine that found it); in the process's cache every fresh
  engine cache did (8 s of CPU each).

- A load that compiles anyway (here: its kernel binaries removed from the scratch copy) says so, in the
  record (``compile_warm_graphs_compiled``, ``compile_warm_kernels_compiled``) and as a warning.

The first two run in the same two processes: the first builds batch 1 then batch 8, the second loads batch 8
with an inductor cache of its own (as a process with another engine cache has)."""
from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

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
    import warnings

    def load(entry, spec):
        # (details, WarmCompileWarning messages) of one load and run of the entry
        engine = TorchCompileEngine("fp32", "cpu")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine.load(entry.path, spec)
        engine.run(engine.prepare(model.inputs(spec.example_inputs["input_ids"].shape[0], seed=0)))
        details = engine.details()
        engine.close()
        return details, [str(w.message) for w in caught if type(w.message).__name__ == "WarmCompileWarning"]

    counters.clear()  # what the load below does, alone
    details, warned = load(entry, spec)
    out = {"built": built, "inductor": dict(counters["inductor"]), "checked_in": list(seen), "details": details,
           "warned": warned}
    if sys.argv[3:] == ["then-drop-kernels"]:
        # again, the scratch copy without its kernel binaries: the load compiles them
        import infermatrix.engines.torch_compile as tc
        copy = tc.copy_verified
        def without_kernels(entry, dest):
            n = copy(entry, dest)
            for so in dest.rglob("*.so"):
                so.unlink()
            return n
        tc.copy_verified = without_kernels
        out["dropped"], out["dropped_warned"] = load(entry, spec)
    print(json.dumps(out))
""")


def _process(root, inductor, batches, *how):
    # inductor's default cache folder is the host's real one (under the temp dir), as in a run: a
    # private one cost this module 14 s of compiling the probes and inductor's precompiled header
    # again, which every other compile on the machine shares
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(root / "cache"), batches, *how],
                          env=dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(root / inductor)),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch-compile-reuse")
    # the first process builds both entries, the second only loads batch 8
    out = [_process(root, "process-inductor", "1,8"), _process(root, "other-inductor", "8", "then-drop-kernels")]
    assert out[0]["built"] == [True, True] and out[1]["built"] == [False]
    return root, out


def test_an_entry_built_after_another_batch_loads_from_inductors_cache_in_a_fresh_process(runs):
    _, (_, fresh) = runs
    assert fresh["inductor"].get("fxgraph_cache_hit", 0) >= 1, fresh
    assert fresh["inductor"].get("fxgraph_cache_miss", 0) == 0, f"the load compiled again: {fresh}"
    # and the record says so: nothing compiled at load, no warning
    assert fresh["details"]["compile_warm_graphs_compiled"] == 0
    assert fresh["details"]["compile_warm_kernels_compiled"] == 0 and fresh["warned"] == []
    assert fresh["details"]["compile_seconds_warm"] > 0


def test_a_load_that_compiles_what_its_entry_should_hold_says_so(runs):
    # the kernels missing from the scratch copy, as when their keys differ from the build's (a
    # torch installed elsewhere, another compiler): the graph comes from the cache, the kernels do not
    _, (_, other) = runs
    assert other["dropped"]["compile_warm_kernels_compiled"] > 0, other["dropped"]
    assert len(other["dropped_warned"]) == 1 and "compile_seconds_warm" in other["dropped_warned"][0], other


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="inductor probes vector ISAs on x86 only")
def test_the_isa_probes_run_once_per_host_in_inductors_default_folder(runs):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    root, both = runs
    host = Path(default_cache_dir())
    for run in both:
        assert run["checked_in"], "inductor checked no vector ISA: the test no longer exercises the probe"
        assert set(run["checked_in"]) == {str(host)}, f"ISA probes compiled outside the host's folder: {run}"
    # the probes' files are there, built and loaded once: none in either process's own cache
    assert list(host.rglob("*.load_ok")), f"no probe load markers under {host}"
    for own in ("process-inductor", "other-inductor"):
        assert not list((root / own).rglob("*.load_ok")), f"probe markers in {own}"


class _Probe:
    """Stands in for inductor's ``valid_vec_isa_list``: records the cache folder each probe ran in."""

    def __init__(self):
        self.ran_in = []

    def __call__(self):
        self.ran_in.append(os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
        return []

    def cache_info(self):
        return functools.namedtuple("CacheInfo", "currsize")(len(self.ran_in))


@pytest.mark.parametrize("writable", [True, False])
def test_the_probe_runs_in_the_host_folder_when_it_can_and_leaves_the_process_cache_setting(monkeypatch, tmp_path,
                                                                                          writable):
    from torch._inductor import cpu_vec_isa
    from torch._inductor.runtime import cache_dir_utils

    from infermatrix.engines.torch_compile import probe_cpu_isa
    host, own = tmp_path / "host", tmp_path / "own"
    probe = _Probe()
    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", probe)
    monkeypatch.setattr(cache_dir_utils, "default_cache_dir", lambda: str(host))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(own))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: writable and real_access(p, mode))
    probe_cpu_isa()
    probe_cpu_isa()  # probed already: not again
    # where the host's folder cannot be written, the process's own cache serves
    assert probe.ran_in == [str(host if writable else own)]
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(own)
