"""OpenVINO int8 is NNCF's (engines/openvino_int8.py): it builds and runs on small seeded models
written here, says its recipe, keeps outputs close to fp32, uses the transformer model type
where the model has transformer hints, and refuses a model whose int8 outputs collapse."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from infermatrix.engines import ENGINES
from infermatrix.engines.base import BuildSpec, EngineUnavailable, TransformerHints

pytest.importorskip("openvino", reason="OpenVINO is the optional extra 'openvino'")
pytest.importorskip("nncf", reason="NNCF comes with the optional extra 'openvino'")
torch = pytest.importorskip("torch")

OV = ENGINES["openvino"]


class TinyCnn(torch.nn.Module):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))
        with torch.no_grad():  # scale < 1 fades the activations like the random mobilenet_v2's
            for m in self.body:
                if isinstance(m, torch.nn.Conv2d):
                    m.weight.mul_(scale)
                    m.bias.mul_(scale)
            if scale != 1.0:  # no bias to hide the faded logits behind (fp32 adds ~1e-10 to it: no change)
                self.body[-1].bias.zero_()

    def forward(self, x):
        return self.body(x)


class TinyEncoder(torch.nn.Module):
    """A transformer-ish block: attention from Linear projections, a Linear MLP, LayerNorms."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.qkv, self.out = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(), torch.nn.Linear(2 * dim, dim))
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, 4)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        x = self.norm1(x + self.out(attn @ v))
        x = self.norm2(x + self.mlp(x))
        return self.head(x.mean(dim=1))


def make_spec(module, shape, scheme="static_per_channel", transformer=None, calib_seed=100):
    torch.manual_seed(0)
    module.eval()

    def calibration():
        g = torch.Generator().manual_seed(calib_seed)
        return [{"x": torch.randn(4, *shape, generator=g).numpy()} for _ in range(8)]
    return BuildSpec(name="t", module=module, input_names=("x",), output_names=("y",),
                     example_inputs={"x": torch.randn(2, *shape)}, int8_scheme=scheme, calibration=calibration,
                     transformer=transformer, onnx_exporter="torchscript")


def build_and_run(spec, tmp_path, precision="int8"):
    engine = OV(precision, "cpu")
    engine.build(spec, tmp_path)
    engine.load(tmp_path, spec)
    x = torch.randn(3, *spec.example_inputs["x"].shape[1:], generator=torch.Generator().manual_seed(7))
    out = engine.to_host(engine.run(engine.prepare({"x": x})))["y"]
    with torch.inference_mode():
        ref = spec.module(x).numpy()
    details = engine.details()
    engine.close()
    return out, ref, details


def cosine_sqnr(out, ref):
    a, r = out.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    return float(a @ r / np.linalg.norm(a) / np.linalg.norm(r)), float(10 * np.log10(r @ r / ((a - r) @ (a - r))))


@pytest.mark.parametrize("scheme,weights", [("static_per_channel", "per-channel"), ("static", "per-tensor")])
def test_nncf_builds_a_cnn_that_runs_in_int8_close_to_fp32(tmp_path, scheme, weights):
    torch.manual_seed(0)
    out, ref, details = build_and_run(make_spec(TinyCnn(), (3, 16, 16), scheme), tmp_path)
    cosine, sqnr = cosine_sqnr(out, ref)
    assert cosine > 0.999 and sqnr > 25, (cosine, sqnr)  # measured on tiny-cnn: 0.99995, 40 dB
    assert details["int8_recipe"] == f"NNCF nncf.quantize ({weights} weights)"
    # every convolution and the Linear ran as int8 kernels, not fp32 behind a Q/DQ pair
    assert details["openvino_int8_layers"] == details["openvino_compute_layers"] == 3
    assert details["onnx_steps"] == ["export"]  # NNCF quantized the fp32 graph, not ONNX Runtime's Q/DQ graph
    assert "onnx_int8_scheme" not in details


def test_a_transformer_is_quantized_with_nncf_transformer_model_type(tmp_path, monkeypatch):
    import nncf
    seen = []
    real = nncf.quantize
    monkeypatch.setattr(nncf, "quantize", lambda *a, **k: seen.append(k["model_type"]) or real(*a, **k))
    torch.manual_seed(0)
    hints = TransformerHints("bert", num_heads=1, hidden_size=32)
    out, ref, details = build_and_run(make_spec(TinyEncoder(), (8, 32), transformer=hints), tmp_path)
    assert seen == [nncf.ModelType.TRANSFORMER]
    assert details["int8_recipe"] == "NNCF nncf.quantize (model_type=TRANSFORMER, per-channel weights)"
    assert details["openvino_int8_layers"] >= 5  # qkv, out, two MLP layers, the head
    # measured 0.955 (10 dB): on random weights NNCF's transformer defaults (SmoothQuant, its
    # range estimators) lose more than ONNX Runtime's MinMax Q/DQ graph does (0.997); a wrong
    # quantization (inputs fed by the wrong name, a collapsed output) lands near 0
    cosine, sqnr = cosine_sqnr(out, ref)
    assert 0.9 < cosine < 1 and sqnr < 60, (cosine, sqnr)


def test_a_model_whose_int8_outputs_collapse_is_refused_with_the_reason(tmp_path):
    torch.manual_seed(0)
    # weights scaled by 1e-5 per conv: the pooled activations reach ~1e-10, below NNCF's
    # smallest scale (float32 eps), so the int8 logits are zero for every input
    spec = make_spec(TinyCnn(scale=1e-5), (3, 16, 16))
    with pytest.raises(EngineUnavailable, match=r"same .* for every input.*smallest quantizer scale"):
        OV("int8", "cpu").build(spec, tmp_path)
    assert not (tmp_path / "model.xml").exists()


def test_new_calibration_data_changes_the_key_and_fp32_ignores_it():
    torch.manual_seed(0)
    module = TinyCnn()
    a, b = make_spec(module, (3, 16, 16)), make_spec(module, (3, 16, 16), calib_seed=101)
    int8, fp32 = OV("int8", "cpu"), OV("fp32", "cpu")
    assert int8.upstream_key(a) != int8.upstream_key(b)
    assert int8.upstream_key(a) == int8.upstream_key(make_spec(module, (3, 16, 16)))
    assert fp32.upstream_key(a) == fp32.upstream_key(b)
    assert "nncf" in OV.library_versions() and OV.build_recipe()["int8"]["api"] == "nncf.quantize"


def test_without_nncf_int8_is_unavailable_and_fp32_is_not(monkeypatch):
    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else find(name, *a))
    assert "NNCF, which is not installed" in OV("int8", "cpu").availability_problem()
    assert OV("fp32", "cpu").availability_problem() is None


def test_the_default_run_includes_openvino_int8_for_a_cnn():
    from infermatrix.fixtures.matrix import plan_cases
    from infermatrix.fixtures.options import MatrixOptions
    from infermatrix.models.builtin import register_builtin_models
    register_builtin_models()
    opts = MatrixOptions(models=("tiny-cnn", "tiny-bert"), engines=("openvino",), precisions=("int8",),
                         batch_sizes=(1,), devices=("cpu",), explicit=frozenset(), overhead_model="tiny-cnn",
                         latency_time=1.0, latency_rounds=None)
    reasons = {p.case.model: p.skip_reason for p in plan_cases(opts)}
    assert OV.int8_only_when_asked is None
    assert reasons["tiny-cnn"] is None  # tiny-cnn's own scheme, static_per_channel, is NNCF's default
    assert "no int8 scheme 'dynamic'" in reasons["tiny-bert"]  # OpenVINO ran dynamic graphs in f32
