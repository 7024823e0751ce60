"""The torch engine's int8 is torchao's Int8DynamicActivationInt8Weight (engines/torch_int8.py):
it quantizes a small seeded Linear stack written here, runs close to fp32, says its recipe,
leaves the registry's module alone, and refuses a model it would leave mostly fp32."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from infermatrix.engines import ENGINES
from infermatrix.engines.base import BuildSpec, EngineError, EngineUnavailable

torch = pytest.importorskip("torch")
pytest.importorskip("torchao", reason="torchao is a dependency of infermatrix; this install lacks it")

TORCH = ENGINES["torch"]


class LinearStack(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 128),
                                       torch.nn.GELU(), torch.nn.Linear(128, 16))

    def forward(self, x):
        return self.net(x)


def spec_of(module, shape, scheme):
    return BuildSpec(name="t", module=module.eval(), input_names=("x",), output_names=("y",),
                     example_inputs={"x": torch.randn(2, *shape)}, int8_scheme=scheme)


def run(engine, spec, tmp_path, x):
    engine.build(spec, tmp_path)
    engine.load(tmp_path, spec)
    return engine.to_host(engine.run(engine.prepare({"x": x})))["y"]


@pytest.mark.parametrize("scheme,granularity", [("dynamic_per_channel", "PerRow"), ("dynamic", "PerTensor")])
def test_torchao_quantizes_every_linear_and_stays_close_to_fp32(tmp_path, scheme, granularity):
    from torchao.utils import TorchAOBaseTensor
    torch.manual_seed(0)
    module = LinearStack()
    spec = spec_of(module, (64,), scheme)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(3))
    engine = TORCH("int8", "cpu")
    out = run(engine, spec, tmp_path, x)
    with torch.inference_mode():
        ref = module(x).numpy()
    a, r = out.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    cosine = a @ r / np.linalg.norm(a) / np.linalg.norm(r)
    assert 0.999 < cosine and not np.array_equal(out, ref), cosine  # int8 ran: close, not identical
    weights = [m.weight for m in engine._module.modules() if isinstance(m, torch.nn.Linear)]
    assert len(weights) == 3 and all(isinstance(w, TorchAOBaseTensor) for w in weights)
    assert all(type(m.weight) is torch.nn.Parameter for m in module.net if isinstance(m, torch.nn.Linear))  # a copy
    details = engine.details()
    assert details["int8_layers"] == "3/3"
    assert details["int8_recipe"] == f"torchao quantize_ Int8DynamicActivationInt8WeightConfig(granularity={granularity}())"
    assert "torchao" in engine.notice_text() and "torchao" in TORCH.library_versions()
    engine.close()


def test_torchao_leaves_the_global_inductor_config_alone(tmp_path):
    import torch._inductor.config as inductor
    before = {k: getattr(inductor, k) for k in ("coordinate_descent_tuning", "force_fuse_int_mm_with_mul", "fx_graph_cache")
              if hasattr(inductor, k)}
    torch.manual_seed(0)
    run(TORCH("int8", "cpu"), spec_of(LinearStack(), (64,), "dynamic_per_channel"), tmp_path, torch.randn(1, 64))
    assert before and {k: getattr(inductor, k) for k in before} == before


def test_a_convolutional_model_is_refused_not_measured_as_int8(tmp_path):
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3), torch.nn.Flatten(),
                              torch.nn.LazyLinear(4))
    cnn(torch.randn(1, 3, 8, 8))
    with pytest.raises(EngineUnavailable, match="quantizes nn.Linear only: 1 of 3 compute layers"):
        run(TORCH("int8", "cpu"), spec_of(cnn, (3, 8, 8), "dynamic"), tmp_path, torch.randn(1, 3, 8, 8))


def test_a_static_scheme_is_not_torchs(tmp_path):
    from infermatrix.engines import torch_int8
    with pytest.raises(EngineError, match=r"builds schemes \['dynamic', 'dynamic_per_channel'\]; got 'static'"):
        torch_int8.quantize(LinearStack(), "static")


def test_without_torchao_int8_is_unavailable_and_fp32_is_not(monkeypatch):
    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else find(name, *a))
    assert "built with torchao, which is not installed" in TORCH("int8", "cpu").availability_problem()
    assert TORCH("fp32", "cpu").availability_problem() is None
