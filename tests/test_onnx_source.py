"""``onnx:FILE`` models: registered from the graph, run by the ONNX engines, refused by the torch ones."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from infermatrix.engines import ENGINES
from infermatrix.engines.cache import EngineCache
from infermatrix.fixtures.matrix import Case, plan_cases
from infermatrix.fixtures.options import MatrixOptions
from infermatrix.runner.session import RunSession
from infermatrix.models.onnx_file import register_onnx_file
from infermatrix.models.registry import get_model
from infermatrix.models.sources import SourceError, resolve


class Cnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, image):
        return self.fc(torch.relu(self.conv(image)).mean((2, 3)))


class TokenModel(torch.nn.Module):
    """Embedding, masked mean pool, linear: a token model with a symbolic sequence length."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(100, 16)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        return self.fc((self.emb(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0))


def export(module: torch.nn.Module, path: Path, args: tuple, inputs: list[str], outputs: list[str],
           axes: dict | None) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx-files")
    torch.manual_seed(0)
    ids, mask = torch.randint(0, 100, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    return {
        "cnn": export(Cnn(), d / "src-cnn.onnx", (torch.randn(2, 3, 16, 16),), ["image"], ["scores"],
                      {"image": {0: "N"}, "scores": {0: "N"}}),
        "tok": export(TokenModel(), d / "src-tok.onnx", (ids, mask), ["input_ids", "attention_mask"], ["logits"],
                      {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                       "logits": {0: "batch"}}),
        "batch1": export(Cnn(), d / "src-batch1.onnx", (torch.randn(1, 3, 16, 16),), ["image"], ["scores"], None),
    }


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = RunSession(EngineCache(tmp_path_factory.mktemp("cache")))
    yield s
    s.close()


def test_a_file_registers_from_its_graph(files):
    cnn, tok = get_model(resolve(f"onnx:{files['cnn']}")), get_model(resolve(f"onnx:{files['tok']}", dims={"seq": 12}))
    assert (cnn.name, cnn.input_names, cnn.output_names, cnn.source) == ("src-cnn", ("image",), ("scores",), "onnx")
    assert cnn.factory is None and cnn.onnx_file == files["cnn"] and cnn.transformer is None
    assert (cnn.int8_scheme, tok.int8_scheme) == ("static_per_channel", "dynamic")   # Conv or not
    x = tok.inputs(3, seed=5)
    assert x["input_ids"].shape == (3, 12) and x["input_ids"].dtype == torch.int64
    assert 0 <= int(x["input_ids"].min()) and int(x["input_ids"].max()) < 100 and len(x["input_ids"].unique()) > 5
    assert bool((x["attention_mask"] == 1).all())
    assert torch.equal(tok.inputs(3, seed=5)["input_ids"], x["input_ids"])     # seeded
    assert not torch.equal(tok.inputs(3, seed=6)["input_ids"], x["input_ids"])
    image = cnn.inputs(2, seed=1)["image"]
    assert image.shape == (2, 3, 16, 16) and image.dtype == torch.float32 and abs(float(image.std()) - 1) < 0.2
    batches = cnn.calibration()()
    assert len(batches) == 8 and batches[0]["image"].shape == (4, 3, 16, 16)


@pytest.mark.parametrize("model_file,dims", [("cnn", {}), ("tok", {"seq": 12})])
def test_a_file_runs_on_the_onnx_engines_against_onnxruntime_fp32(files, session, model_file, dims):
    name = resolve(f"onnx:{files[model_file]}", dims=dims)
    runs = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32")]
    if get_model(name).int8_scheme in ENGINES["openvino"].int8_schemes:
        runs.append(("openvino", "int8"))
    for engine, precision in runs:
        if not ENGINES[engine].is_installed():
            continue
        case = Case(name, engine, precision, 3, "cpu")
        report = session.equivalence(case)
        assert report.passed, report.render()
        assert report.reference == "onnxruntime fp32 on cpu"
        details = session.engine(case).engine.details()
        assert details["onnx_file"] == files[model_file].name
        # ONNX Runtime quantizes the file in the ONNX stage; OpenVINO's NNCF quantizes the converted fp32 file
        stage_int8 = precision == "int8" and engine == "onnxruntime"
        assert details["onnx_steps"] == (["onnx-file", "quantize"] if stage_int8 else ["onnx-file"])


def test_a_batch_one_file_runs_at_batch_one_only(files, session):
    name = resolve(f"onnx:{files['batch1']}")
    spec = get_model(name)
    with pytest.raises(ValueError, match=r"batch size 2: inputs \['image'\] have a fixed batch axis of 1"):
        spec.inputs(2)
    for engine in ("onnxruntime", "openvino"):
        if ENGINES[engine].is_installed():
            report = session.equivalence(Case(name, engine, "fp32", 1, "cpu"))
            assert report.passed, report.render()


def test_the_torch_engines_are_skipped_with_the_reason(files):
    name = resolve(f"onnx:{files['cnn']}")
    opts = MatrixOptions(models=(name,), engines=tuple(sorted(ENGINES)), precisions=("fp32",), batch_sizes=(1,),
                         devices=("cpu",), explicit=frozenset(), overhead_model="tiny-cnn", latency_time=1.0,
                         latency_rounds=None)
    reasons = {p.case.engine: p.skip_reason for p in plan_cases(opts)}
    torch_engines = [n for n, cls in ENGINES.items() if "onnx" not in cls.consumes and "cpu" in cls.capabilities]
    assert torch_engines
    for engine in torch_engines:
        assert "needs a torch module" in reasons[engine] and "onnx" in reasons[engine]
    assert reasons["onnxruntime"] is None


def test_a_missing_dim_is_an_error_listing_the_graphs_symbolic_dims(files, tmp_path):
    copy = shutil.copyfile(files["tok"], tmp_path / "src-tok-nodims.onnx")
    with pytest.raises(SourceError, match=r"no value for symbolic dim\(s\) seq; give each as NAME=VALUE") as err:
        resolve(f"onnx:{copy}", dims={"sequence": 8})          # a typo is not the graph's dim
    assert "seq (used by input_ids[1], attention_mask[1])" in str(err.value)
    assert "batch axis: batch" in str(err.value)
    with pytest.raises(ValueError, match=r"dims \{'seq': 0\}: each value must be a positive integer"):
        register_onnx_file(copy, name="src-tok-zero", dims={"seq": 0})


def test_a_missing_or_foreign_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "missing.onnx"
    with pytest.raises(SourceError, match=r"ONNX file not found: .*missing\.onnx"):
        resolve(f"onnx:{missing}")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        register_onnx_file(missing, name="missing", dims={})
    for content in (b"hello, not a graph\n", b""):
        text = tmp_path / "notes.onnx"
        text.write_bytes(content)
        with pytest.raises(ValueError, match=r"notes\.onnx is not an ONNX model"):
            register_onnx_file(text, name="notes", dims={})


def test_a_fixed_batch_other_than_one_and_typed_inputs(tmp_path):
    def graph_file(name: str, inputs: list, nodes: list, outputs: list) -> Path:
        path = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(helper.make_graph(nodes, name, inputs, outputs),
                                    opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
        return path

    relu = [helper.make_node("Relu", ["x"], ["y"])]
    four = graph_file("fixed4", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])], relu,
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])])
    with pytest.raises(ValueError, match=r"input 'x' has a fixed first \(batch\) axis of 4"):
        register_onnx_file(four, name="fixed4", dims={})

    typed = graph_file("typed", [helper.make_tensor_value_info("flags", TensorProto.BOOL, ["b", 4]),
                                 helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["b", None]),
                                 helper.make_tensor_value_info("position_ids", TensorProto.INT32, ["b", 4])],
                       [helper.make_node("Identity", ["flags"], ["f"]), helper.make_node("Identity", ["x"], ["y"]),
                        helper.make_node("Identity", ["position_ids"], ["p"])],
                       [helper.make_tensor_value_info(n, t, None)
                        for n, t in (("f", TensorProto.BOOL), ("y", TensorProto.FLOAT16), ("p", TensorProto.INT32))])
    with pytest.raises(ValueError, match=r"x_dim1 \(used by x\[1\]\)"):          # an unnamed dynamic dim
        register_onnx_file(typed, name="typed", dims={})
    spec = register_onnx_file(typed, name="typed", dims={"x_dim1": 6})
    x = spec.inputs(2, seed=0)
    assert x["flags"].dtype == torch.bool and 0 < int(x["flags"].sum()) < 8
    assert x["x"].dtype == torch.float16 and x["x"].shape == (2, 6)
    assert x["position_ids"].dtype == torch.int32 and x["position_ids"].tolist() == [[0, 1, 2, 3]] * 2
    engine = ENGINES["onnxruntime"]("fp32", "cpu")                # bool and fp16 inputs bind
    engine.build(spec.build_spec(None, 2), tmp_path)
    engine.load(tmp_path, spec.build_spec(None, 2))
    out = engine.to_host(engine.run(engine.prepare(x)))
    assert out["p"].tolist() == [[0, 1, 2, 3]] * 2 and out["f"].tolist() == x["flags"].float().tolist()


def test_an_ir3_file_whose_weights_are_inputs_too_runs_on_the_onnx_engines(session):
    # the ONNX model zoo's older files (IR 3) list every weight as a graph input as well: the onnx
    # wheel ships one, light_densenet121 (848 weights beside its one input). ONNX Runtime's
    # optimized copy dropped weights it folded but kept them as graph inputs, then required 770 of
    # them at run ("Required inputs ... conv2_1/x2/bn_b_0__SHAPE"): every engine of the file failed
    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_densenet121.onnx"
    if not path.is_file():
        pytest.skip(f"this onnx wheel does not ship {path.name} (looked for {path})")
    assert onnx.load(str(path), load_external_data=False).ir_version == 3
    name = resolve(f"onnx:{path}")
    assert get_model(name).input_names == ("data_0",)
    case = Case(name, "onnxruntime", "fp32", 1, "cpu")
    engine = session.engine(case).engine
    assert engine.details()["onnx_steps"] == ["onnx-file", "weights-not-inputs"]
    got = engine.to_host(engine.run(engine.prepare(session.inputs(case))))
    assert [v.shape for v in got.values()] == [(1, 1000, 1, 1)]
