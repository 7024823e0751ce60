"""The cache key covers the model's code, not only its class name and weights (issue 16, item 1).

A model file is written to a temp folder and imported as a module; between two "commits" it gains
a branch of 20 ``sin`` ops multiplied by 0: same weights, same outputs, ten times the work. The
second commit must get a new key and a new ONNX Runtime build that holds the new graph.
"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from infermatrix.core.schema import Case
from infermatrix.engines import get_engine
from infermatrix.engines.cache import EngineCache, cache_key
from infermatrix.models.code_digest import code_digest, code_files
from infermatrix.models.handoff import model_handoff
from infermatrix.models.registry import MODELS, ModelSpec, get_model, register_model, weights_digest
from infermatrix.runner.session import RunSession

PLAIN = """
import torch

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(x)
"""

# the same weights and outputs; twenty sin ops whose result is multiplied by 0
WITH_SIN = """
import torch

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = x
        for _ in range(20):
            y = torch.sin(y)
        return self.fc(x) + 0.0 * y[:, :4]
"""


class Commits:
    """A model module in a temp folder, rewritten and re-imported like a checkout of another commit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = f"codekey_{uuid.uuid4().hex[:8]}"
        self.model = f"codekey-{self.name[-8:]}"
        sys.path.insert(0, str(folder))
        register_model(ModelSpec(self.model, self.factory, self.inputs, ("x",), ("logits",), int8_scheme="dynamic"))

    def factory(self) -> torch.nn.Module:
        return importlib.import_module(self.name).Tiny()

    @staticmethod
    def inputs(batch: int, seed: int) -> dict:
        return {"x": torch.randn(batch, 8, generator=torch.Generator().manual_seed(seed))}

    def checkout(self, source: str, name: str | None = None) -> None:
        (self.folder / f"{name or self.name}.py").write_text(textwrap.dedent(source))
        for mod in (self.name, name):
            sys.modules.pop(mod or "", None)
        importlib.invalidate_caches()

    def close(self) -> None:
        sys.path.remove(str(self.folder))
        sys.modules.pop(self.name, None)


@pytest.fixture
def commits(tmp_path):
    c = Commits(tmp_path / "src")
    c.folder.mkdir()
    yield c
    c.close()


def run(cache_root: Path, case: Case) -> tuple[str, bool, Path, RunSession]:
    """One session on ``case``: (its key, whether it built the engine, the entry, the session)."""
    session = RunSession(EngineCache(cache_root))
    loaded = session.engine(case)
    key = cache_key(session.cache_fields(case, get_engine(case.engine)))
    return key, loaded.entry.built, loaded.entry.path, session


def sin_nodes(entry: Path) -> int:
    import onnx
    return sum(node.op_type == "Sin" for f in entry.glob("*.onnx")
               for node in onnx.load(str(f), load_external_data=False).graph.node)


def test_a_code_change_with_the_same_weights_is_a_new_key_and_a_rebuild(commits, tmp_path):
    pytest.importorskip("onnxruntime")
    case = Case(commits.model, "onnxruntime", "fp32", 1, "cpu")
    commits.checkout(PLAIN)
    key1, built1, entry1, s1 = run(tmp_path / "cache", case)
    state1 = {k: v.clone() for k, v in s1.module(commits.model).state_dict().items()}
    s1.close()
    assert built1 and sin_nodes(entry1) == 0

    commits.checkout(PLAIN)  # the same code checked out again (a new mtime): the entry is reused
    key_same, built_same, _, s = run(tmp_path / "cache", case)
    s.close()
    assert key_same == key1 and not built_same

    commits.checkout(WITH_SIN)
    key2, built2, entry2, s2 = run(tmp_path / "cache", case)
    state2 = s2.module(commits.model).state_dict()
    out = s2.engine(case).engine
    s2.close()
    assert all(torch.equal(state1[k], state2[k]) for k in state1) and state1.keys() == state2.keys()
    assert key2 != key1, "a model that computes something else kept its key"
    assert built2, "the engine built before the change was reused"
    assert entry2 != entry1 and sin_nodes(entry2) >= 20, "ONNX Runtime's entry does not hold the new graph"
    assert out is not None


def test_a_helper_imported_from_another_file_is_covered(commits):
    helper = f"{commits.name}_act"
    model_src = f"""
import torch
from {helper} import act

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return act(self.fc(x))
"""
    commits.checkout("import torch\n\ndef act(x):\n    return torch.relu(x)\n", name=helper)
    commits.checkout(model_src)
    module = commits.factory()
    assert any(Path(f).name == f"{helper}.py" for f in code_files(module))
    before = code_digest(module)
    commits.checkout("import torch\n\ndef act(x):\n    return torch.tanh(x)\n", name=helper)
    commits.checkout(model_src)
    assert code_digest(commits.factory()) != before
    sys.modules.pop(helper, None)


def test_a_hyperparameter_that_changes_no_weight_changes_the_digest():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=1), torch.nn.Dropout(0.1))
    torch.manual_seed(0)
    b = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.Dropout(0.1))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert code_digest(a) != code_digest(b)
    torch.manual_seed(0)
    assert code_digest(a) == code_digest(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Dropout(0.1)))


def test_torch_own_files_are_not_read():
    import os
    torch_dir = os.path.dirname(torch.__file__)
    spec = get_model("tiny-cnn")  # an nn.Sequential of torch layers: only its factory's file is its own
    files = code_files(spec.build_module(), extra=(spec.factory,))
    assert any(f.endswith("zoo.py") for f in files), files
    assert not [f for f in files if f.startswith(torch_dir)]


class Doubler(torch.nn.Module):
    """A model defined in this (pytest-rewritten) test module, as a user's conftest would."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return 2 * self.fc(x)


if "codekey-doubler" not in MODELS:
    register_model(ModelSpec("codekey-doubler", Doubler, Commits.inputs, ("x",), ("logits",), int8_scheme="dynamic"))


@pytest.mark.parametrize("model", ["tiny-cnn", "codekey-doubler"])
def test_the_digest_is_the_same_in_a_fresh_interpreter(model):
    """The memory child (runner/memory.py) registers the model as handed off, digests its own
    module and compares with the entry's key: pytest's assertion rewriting of the module that
    defines the model (names it adds to the module's globals) must not change the digest."""
    here = weights_digest(model)
    code = ("import json, sys; from infermatrix.models.handoff import register_handed_off; "
            "register_handed_off(json.loads(sys.argv[1])); "
            "from infermatrix.models.registry import weights_digest; print(json.dumps(weights_digest(sys.argv[2])))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(model_handoff(model)), model],
                         capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here
