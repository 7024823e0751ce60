"""torch_compile's load checks inductor's CPU vector ISAs in the process's own inductor cache,
never in an entry's scratch copy (engines/torch_compile.py ``probe_cpu_isa``): in a scratch
cache every fresh process, each memory child among them, compiled the probes again (12.3 s of
a 19.6 s child on the machine that found it)."""
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
    from infermatrix.models.builtin import register_builtin_models
    register_builtin_models()
    from infermatrix.models.registry import get_model
    model = get_model("tiny-cnn")
    module = model.build_module()
    spec = model.build_spec(module, 1)
    cache = EngineCache(Path(sys.argv[1]))
    builder = TorchCompileEngine("fp32", "cpu")
    entry = cache.get_or_build("torch_compile", {"model": "tiny-cnn", "test": "isa"}, lambda s: builder.build(spec, s))
    engine = TorchCompileEngine("fp32", "cpu")
    engine.load(entry.path, spec)
    engine.run(engine.prepare(model.inputs(1, seed=0)))
    engine.close()
    print(json.dumps({"checked_in": seen, "built": entry.built}))
""")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="inductor probes vector ISAs on x86 only")
def test_the_isa_probes_run_in_the_process_cache_and_only_once_per_host(tmp_path):
    own = tmp_path / "process-inductor"
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(own))
    runs = []
    for _ in range(2):  # the first process builds the entry, the second only loads it
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "cache")], env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["built"] and not runs[1]["built"]
    for run in runs:
        assert run["checked_in"], "inductor checked no vector ISA: the test no longer exercises the probe"
        assert set(run["checked_in"]) == {str(own)}, f"ISA probes compiled outside the process cache: {run}"
    # the probes' files are in the process cache: a later process finds them built and loaded once
    assert list(own.rglob("*.load_ok")), f"no probe load markers under {own}"
