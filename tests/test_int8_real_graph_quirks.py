"""int8 of graphs ONNX Runtime's quantizer was not written for (issue 16, item 16).

A paddle2onnx text detector (PP-OCRv4, opset 12) built 'static' int8 but not the other
schemes: every weight sits in a Constant node, so ``quantize_dynamic`` raised "Expected
<w> to be an initializer" on the first Conv with a bias, and per-channel Q/DQ wrote a
DequantizeLinear ``axis``, which opset 12 does not have ("Unrecognized attribute: axis").

The graph here has each property, seeded: opset 12; a Conv + BatchNormalization (ORT's
pre-processing fuses them into a Conv with a bias, whose bias gets a per-channel scale); a
Conv weight in a Constant node; one behind an Identity chain; one computed (Mul of two
initializers), which no folding of Constants turns into an initializer; a MatMul whose
weight is a Constant.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from infermatrix.core.schema import Case
from infermatrix.engines import onnx_quantize
from infermatrix.engines.cache import EngineCache
from infermatrix.engines.onnx_prepare import prepare
from infermatrix.engines.onnx_quantize import RECIPES, quantize
from infermatrix.models.registry import get_model
from infermatrix.models.sources import resolve
from infermatrix.runner.session import RunSession

SCHEMES = ("static", "static_per_channel", "dynamic", "dynamic_per_channel")
COMPUTED_CONV = "p2o.Conv.computed"


def quirky_net(path: Path, opset: int = 12) -> Path:
    """Conv(Constant w) -> BN -> Relu -> Conv(Identity(Identity(w))) -> Relu -> Conv(Mul(a, b))
    -> GlobalAveragePool -> Flatten -> MatMul(Constant W) -> Softmax, written to ``path``."""
    rng = np.random.default_rng(0)

    def he(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * (2.0 / np.prod(shape[1:])) ** 0.5).astype(np.float32)

    def constant(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], name=f"p2o.Constant.{name}",
                                value=numpy_helper.from_array(value, name))

    inits = [numpy_helper.from_array(v, n) for n, v in {
        "bn.scale": rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn.bias": rng.normal(0, 0.1, 8).astype(np.float32),
        "bn.mean": rng.normal(0, 0.1, 8).astype(np.float32), "bn.var": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "c2.w.raw": he(16, 8, 3, 3), "c2.b": np.zeros(16, np.float32),
        "c3.w.a": he(32, 16, 3, 3), "c3.w.b": np.full((32, 1, 1, 1), 1.5, np.float32),
        "c3.b": rng.normal(0, 0.05, 32).astype(np.float32)}.items()]
    nodes = [
        constant("c1.w", he(8, 3, 3, 3)),
        helper.make_node("Conv", ["x", "c1.w"], ["c1"], name="p2o.Conv.constant", pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["bn"],
                         name="p2o.BatchNormalization.0"),
        helper.make_node("Relu", ["bn"], ["r1"], name="p2o.Relu.0"),
        helper.make_node("Identity", ["c2.w.raw"], ["c2.w.id"], name="p2o.Identity.0"),
        helper.make_node("Identity", ["c2.w.id"], ["c2.w"], name="p2o.Identity.1"),
        helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], name="p2o.Conv.identity", pads=[1] * 4, strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="p2o.Relu.1"),
        helper.make_node("Mul", ["c3.w.a", "c3.w.b"], ["c3.w"], name="p2o.Mul.weight"),
        helper.make_node("Conv", ["r2", "c3.w", "c3.b"], ["c3"], name=COMPUTED_CONV, pads=[1] * 4),
        helper.make_node("GlobalAveragePool", ["c3"], ["pool"], name="p2o.GlobalAveragePool.0"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="p2o.Flatten.0"),
        constant("fc.w", he(32, 10) * 4),
        helper.make_node("MatMul", ["flat", "fc.w"], ["logits"], name="p2o.MatMul.0"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="p2o.Softmax.0", axis=1),
    ]
    graph = helper.make_graph(nodes, "quirky", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7,
                              producer_name="PaddlePaddle")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Path:
    return quirky_net(tmp_path_factory.mktemp("quirky") / "quirky-opset12.onnx")


def _batches(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.uniform(0, 1, (2, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _quantize(scheme: str, src: Path, tmp_path: Path) -> tuple[dict, Path]:
    work, dst = tmp_path / f"{scheme}.tmp", tmp_path / f"{scheme}.onnx"
    work.mkdir(parents=True)
    return quantize(scheme, src, dst, work, _batches(4) if scheme.startswith("static") else None), dst


def test_without_the_fixes_the_old_failures_come_back(net, tmp_path, monkeypatch):
    """The graph has the properties: ORT's quantizer fails on it the way it failed on the detector."""
    dynamic = RECIPES["dynamic"]
    monkeypatch.setitem(RECIPES, "dynamic", {**dynamic, "fold_weights": False, "exclude_computed_weights": False})
    with pytest.raises(ValueError, match="Expected c2.w to be an initializer"):      # the Identity chain's
        _quantize("dynamic", net, tmp_path / "a")
    monkeypatch.setitem(RECIPES, "dynamic", {**dynamic, "exclude_computed_weights": False})
    with pytest.raises(ValueError, match="Expected c3.w to be an initializer"):      # folded, but computed
        _quantize("dynamic", net, tmp_path / "b")
    monkeypatch.setitem(RECIPES, "static_per_channel", {**RECIPES["static_per_channel"], "min_opset": 0})
    _, dst = _quantize("static_per_channel", net, tmp_path / "c")
    with pytest.raises(Exception, match="Unrecognized attribute: axis for operator DequantizeLinear"):
        _run(dst, _batches(1)[0]["x"])


def test_prepare_folds_what_is_constant_and_names_what_is_computed(net, tmp_path):
    done = prepare(net, tmp_path / "prepared.onnx", min_opset=13, exclude_computed=True)
    assert done.record["weights_folded"] == {"constant_nodes": 2, "identity_nodes": 2}
    assert done.exclude == (COMPUTED_CONV,)
    assert done.record["nodes_excluded"]["count"] == 1
    assert done.record["nodes_excluded"]["why"][COMPUTED_CONV].startswith("weight 'c3.w' is computed by Mul 'p2o.Mul.weight'")
    assert done.record["opset"]["converted"] == [12, 13]
    prepared = onnx.load(str(tmp_path / "prepared.onnx"))
    onnx.checker.check_model(prepared, full_check=True)
    inits = {t.name for t in prepared.graph.initializer}
    ops = [n.op_type for n in prepared.graph.node]
    assert {"c1.w", "fc.w", "c2.w.raw"} <= inits and "Constant" not in ops and "Identity" not in ops
    assert prepared.opset_import[0].version == 13
    x = _batches(1, seed=5)[0]["x"]
    np.testing.assert_array_equal(_run(tmp_path / "prepared.onnx", x), _run(net, x))   # the same function
    kept = prepare(net, tmp_path / "kept.onnx")                 # a recipe without min_opset keeps 12
    assert kept.record["opset"] == {"kept": 12} and "nodes_excluded" not in kept.record


def test_an_identity_another_node_reads_stays(tmp_path):
    """Folding renames the weight input only: an Identity whose output a graph output needs stays."""
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["w.id"]),
                               helper.make_node("Conv", ["x", "w.id"], ["y"], name="conv")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2]),
                               helper.make_tensor_value_info("w.id", TensorProto.FLOAT, [2, 1, 1, 1])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)]), str(tmp_path / "g.onnx"))
    done = prepare(tmp_path / "g.onnx", tmp_path / "out.onnx")
    assert done.record["weights_folded"] == {"constant_nodes": 0, "identity_nodes": 0}
    out = onnx.load(str(tmp_path / "out.onnx")).graph
    assert [n.op_type for n in out.node] == ["Identity", "Conv"] and out.node[1].input[1] == "w"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_builds_loads_and_stays_close_to_fp32(net, tmp_path, scheme):
    record, dst = _quantize(scheme, net, tmp_path)
    assert record["weights_folded"] == {"constant_nodes": 2, "identity_nodes": 2}
    graph = onnx.load(str(dst)).graph
    opset = next(o.version for o in onnx.load(str(dst)).opset_import if o.domain == "")
    if scheme == "static_per_channel":
        assert record["opset"]["converted"] == [12, 13] and opset == 13
        assert record["int8_weight_scales"]["per_channel"] >= 3           # the three Conv weights at least
    else:
        assert record["opset"] == {"kept": 12} and opset == 12
    if scheme.startswith("dynamic"):
        assert record["nodes_excluded"]["count"] == 1 and COMPUTED_CONV in record["nodes_excluded"]["why"]
        assert [n.op_type for n in graph.node if n.name == COMPUTED_CONV] == ["Conv"]     # left in float
        assert record["int8_ops"]["ConvInteger"] == 2 and record["int8_ops"]["MatMulInteger"] == 1
        # ORT's dynamic quantizer honours per_channel for MatMul only: the record shows it
        per_channel_mm = 1 if scheme == "dynamic_per_channel" else 0
        assert record["int8_weight_scales"] == {"per_channel": per_channel_mm, "per_tensor": 3 - per_channel_mm}
    else:
        assert "nodes_excluded" not in record and record["int8_ops"]["QuantizeLinear"] > 0
    x = _batches(1, seed=9)[0]["x"]
    got, want = _run(dst, x), _run(net, x)
    assert got.shape == want.shape == (2, 10)
    cos = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
    assert cos > 0.99, (scheme, cos)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = RunSession(EngineCache(tmp_path_factory.mktemp("cache")))
    yield s
    s.close()


@pytest.mark.parametrize("scheme", ["dynamic", "static_per_channel"])
def test_the_engine_builds_them_and_the_equivalence_measures_them(net, session, scheme):
    """Through the engine and the cache, as a run builds it: a verdict against ONNX Runtime
    fp32 with finite figures, and what the stage folded, excluded and converted in details()."""
    name = resolve(f"onnx:{net}")
    assert get_model(name).onnx_file
    case = Case(name, "onnxruntime", "int8", 2, "cpu", scheme=scheme)
    report = session.equivalence(case)
    assert report.reference == "onnxruntime fp32 on cpu"
    figures = report.figures()
    assert np.isfinite([v for v in figures.values() if isinstance(v, float)]).all(), figures
    details = session.engine(case).engine.details()
    assert details["onnx_weights_folded"] == {"constant_nodes": 2, "identity_nodes": 2}
    if scheme == "dynamic":
        assert details["onnx_nodes_excluded"]["count"] == 1
    else:
        assert details["onnx_opset"]["converted"] == [12, 13]
    assert report.passed, report.render()            # a seeded net int8 keeps close: a real comparison


def test_a_graph_the_converter_cannot_take_is_named(tmp_path, monkeypatch):
    """A failed opset conversion names the file, both opsets and the schemes that need none."""
    def refuse(model, version):
        raise RuntimeError("No Adapter For Op")
    monkeypatch.setattr("onnx.version_converter.convert_version", refuse)
    path = quirky_net(tmp_path / "refused.onnx")
    with pytest.raises(RuntimeError, match=r"converting refused.onnx from opset 12 failed: RuntimeError: "
                                           r"No Adapter For Op\. Schemes without per-channel scales keep opset 12"):
        prepare(path, tmp_path / "out.onnx", min_opset=13)
    assert onnx_quantize.PER_CHANNEL_OPSET == 13


def test_an_unnamed_conv_with_a_computed_weight_is_named_and_left_in_float(tmp_path):
    """nodes_to_exclude matches names: an unnamed Conv gets one, or ORT would still raise on it."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "a"),
             numpy_helper.from_array(np.full((4, 1, 1, 1), 0.5, np.float32), "b"),
             numpy_helper.from_array(np.zeros(4, np.float32), "bias")]
    graph = helper.make_graph([helper.make_node("Mul", ["a", "b"], ["w"]),
                               helper.make_node("Conv", ["x", "w", "bias"], ["y"], pads=[1] * 4)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    src = tmp_path / "unnamed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=8), str(src))
    record, dst = _quantize("dynamic", src, tmp_path)
    assert list(record["nodes_excluded"]["why"]) == ["Conv#1"]
    assert "computed by Mul ''" in record["nodes_excluded"]["why"]["Conv#1"]
    assert [n.op_type for n in onnx.load(str(dst)).graph.node] == ["Mul", "Conv"]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(dst, x), _run(src, x), rtol=1e-5, atol=1e-5)   # nothing quantized


@pytest.mark.parametrize("scheme", ["static", "static_per_channel"])
def test_tensorrts_symmetric_graph_is_prepared_the_same_way(net, tmp_path, scheme):
    """TensorRT's Q/DQ graph (built here with ONNX Runtime's quantizer; TensorRT itself never ran) takes
    the stage's preparation too: an opset-12 Conv+BN graph with Constant weights used to end in
    'Unrecognized attribute: axis' / 'Expected ... to be an initializer'."""
    from infermatrix.engines.onnx_steps import OnnxFile
    from infermatrix.engines.tensorrt_build import SymmetricQuantize
    step = SymmetricQuantize(OnnxFile(net), scheme, lambda: _batches(4))
    work, dst = tmp_path / "work", tmp_path / "int8.onnx"
    work.mkdir()
    record = step.build(net, dst, work)
    assert record["weights_folded"]
    assert (record["opset"]["converted"] == [12, 13]) if scheme == "static_per_channel" else ("kept" in record["opset"])
    x = _batches(1, seed=7)[0]["x"]
    got, ref = _run(dst, x), _run(net, x)
    cos = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
    assert cos > 0.99, cos
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "work"]
