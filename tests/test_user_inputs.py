"""The user's own inputs (--inputs, a model table's inputs): an .npz for any model, a text file
for hf: text models, a folder of images for vision models; evaluation and calibration from
disjoint parts; the trained flag; --dim and TOML dim names. Every model, file and image is
made here in tmp_path (nothing downloaded)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infermatrix.fixtures.config import build_run_config
from infermatrix.models.registry import CALIBRATION_SEED, MODELS, get_model, weights_digest
from infermatrix.models.sources import resolve
from infermatrix.models.user_inputs import attach_inputs
from tests.test_hf_heads import SEQ_LEN, bert_dir

PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLEDPVDAFQ", "MVLSPADKTNVKAAW", "MNIFEMLRIDEGLRLKIYKDTEG",
            "MADEEKLPPGWEKRMSRSSGRVYYFNHITNASQW", "MSKGEELFTGVVPILVELDGDVNGHKF"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("INFERMATRIX_CACHE", raising=False)


@pytest.fixture
def registry(monkeypatch):
    """Inputs and the trained flag re-register a model: put every entry back afterwards."""
    for name in list(MODELS):
        monkeypatch.setitem(MODELS, name, MODELS[name])


def build(tmp_path, **cli):
    return build_run_config(cli, rootdir=tmp_path, env={})


def onnx_file(path, inputs, dtype=np.float32):
    """A one-node graph: Identity of a conv-free image input, or ReduceSum over token ids."""
    import onnx
    from onnx import helper
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    x = helper.make_tensor_value_info("x", elem, inputs)
    y = helper.make_tensor_value_info("y", elem, None)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def conv_file(path):
    """A 3->4 channel Conv (static int8 calibrates it) on [batch, 3, 8, 8]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_english_sentences_are_unk_to_a_protein_model_and_its_own_lines_are_not(tmp_path, registry):
    model = bert_dir(tmp_path, "ForMaskedLM")
    unk = 1  # the amino-acid tokenizer's [UNK] id
    default = get_model(build(tmp_path, models=f"hf:{model}", seq_len=str(SEQ_LEN)).matrix.models[0]).inputs(4, 1)
    real = default["input_ids"][default["attention_mask"].bool()]
    assert (real == unk).float().mean() > 0.5, "the fault: English sample sentences are mostly [UNK] to it"
    lines = tmp_path / "proteins.txt"
    lines.write_text("\n".join(PROTEINS[:2] + [""] + PROTEINS[2:]) + "\n")  # a blank line is skipped
    name = build(tmp_path, models=f"hf:{model}", seq_len=str(SEQ_LEN), inputs=str(lines)).matrix.models[0]
    spec = get_model(name)
    assert spec.inputs_file == lines and "proteins.txt" in spec.note
    batch = spec.inputs(2, seed=1)
    assert not (batch["input_ids"] == unk).any(), "every residue is a token of its vocabulary"
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
    decoded = [tok.decode(r, skip_special_tokens=True).replace(" ", "") for r in batch["input_ids"]]
    assert decoded == PROTEINS[:2], "the first lines of the file, in order"
    # 6 lines: the last 3 calibrate, the first 3 evaluate; never the same line in both
    calibration = np.concatenate([b["input_ids"] for b in spec.calibration(batches=3, batch_size=1)()])
    evaluation = spec.inputs(3, seed=1)["input_ids"]
    assert {tuple(r) for r in calibration.tolist()}.isdisjoint({tuple(r) for r in evaluation.tolist()})
    assert len({tuple(r) for r in calibration.tolist()}) == 3


def test_too_few_samples_to_split_and_a_batch_beyond_them(tmp_path, registry):
    model = bert_dir(tmp_path, "ForMaskedLM")
    one = tmp_path / "one.txt"
    one.write_text(PROTEINS[0] + "\n")
    with pytest.raises(pytest.UsageError, match=r"one.txt: 1 sample\(s\); at least 2 are needed"):
        build(tmp_path, models=f"hf:{model}", seq_len=str(SEQ_LEN), inputs=str(one))
    four = tmp_path / "four.txt"
    four.write_text("\n".join(PROTEINS[:4]))
    spec = get_model(build(tmp_path, models=f"hf:{model}", seq_len=str(SEQ_LEN), inputs=str(four)).matrix.models[0])
    assert "repeated in order when B > 2" in spec.note
    with pytest.warns(UserWarning, match="a batch of 5 repeats its 2 evaluation samples in order"):
        ids = spec.inputs(5, seed=1)["input_ids"]
    assert torch.equal(ids[0], ids[2]) and torch.equal(ids[1], ids[3]) and not torch.equal(ids[0], ids[1])


def test_an_npz_feeds_an_onnx_file_and_mismatches_name_the_input(tmp_path, registry):
    model = onnx_file(tmp_path / "ids.onnx", ["batch", 5], np.int64)
    data = np.arange(40, dtype=np.int64).reshape(8, 5)
    good = tmp_path / "good.npz"
    np.savez(good, x=data)
    spec = get_model(build(tmp_path, models=f"onnx:{model}", inputs=str(good)).matrix.models[0])
    assert torch.equal(spec.inputs(3, seed=1)["x"], torch.from_numpy(data[:3])), "the first B evaluation samples"
    batches = spec.calibration(batches=2, batch_size=2)()
    assert [b["x"].tolist() for b in batches] == [data[4:6].tolist(), data[6:8].tolist()], "the last 4 calibrate"
    cases = [({"y": data}, r"takes the inputs \['x'\]; missing \['x'\]; not inputs of it: \['y'\]"),
             ({"x": data.astype(np.int32)}, r"input 'x' is int32 \[8, 5\]; 'ids' takes int64 \[N, 5\]"),
             ({"x": data.reshape(8, 5, 1)}, r"input 'x' is int64 \[8, 5, 1\]; 'ids' takes int64 \[N, 5\]")]
    for i, (arrays, message) in enumerate(cases):
        bad = tmp_path / f"bad{i}.npz"
        np.savez(bad, **arrays)
        other = onnx_file(tmp_path / f"ids{i}.onnx", ["batch", 5], np.int64)  # one set of inputs per model
        with pytest.raises(pytest.UsageError, match=message.replace("'ids'", f"'ids{i}'")):
            build(tmp_path, models=f"onnx:{other}", inputs=str(bad))
    with pytest.raises(pytest.UsageError, match=r"is given two input sets, .*good.npz and .*bad0.npz"):
        build(tmp_path, models=f"onnx:{model}", inputs=str(tmp_path / "bad0.npz"))


def test_text_for_a_non_text_model_and_images_for_a_text_model_are_usage_errors(tmp_path, registry):
    from PIL import Image
    text = tmp_path / "lines.txt"
    text.write_text("a\nb\n")
    with pytest.raises(pytest.UsageError, match=r"a text file feeds hf: text models.*'tiny-cnn' takes \['pixel_values'\]: "
                                                r"give an .npz of them or a folder of images"):
        build(tmp_path, models="tiny-cnn", inputs=str(text))
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (9, 7), (i * 90, 10, 200)).save(folder / f"{i}.png")
    model = bert_dir(tmp_path, "ForMaskedLM")
    with pytest.raises(pytest.UsageError, match=r"a folder of images feeds hf: image models and models with one image"):
        build(tmp_path, models=f"hf:{model}", seq_len=str(SEQ_LEN), inputs=str(folder))
    with pytest.raises(pytest.UsageError, match=r"suffix '.csv'; expected an .npz"):
        (tmp_path / "t.csv").write_text("1,2\n")
        build(tmp_path, models="tiny-cnn", inputs=str(tmp_path / "t.csv"))


def test_images_for_an_onnx_vision_model_are_resized_and_normalised_as_it_says(tmp_path, registry):
    from PIL import Image

    from infermatrix.models.user_inputs import IMAGENET_MEAN, IMAGENET_STD
    folder = tmp_path / "images"
    folder.mkdir()
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    for i, colour in enumerate(colours):
        Image.new("RGB", (20, 10), colour).save(folder / f"img{i}.png")
    (folder / "notes.md").write_text("not an image: ignored")
    model = onnx_file(tmp_path / "vision.onnx", ["batch", 3, 6, 4])
    spec = get_model(build(tmp_path, models=f"onnx:{model}", inputs=str(folder)).matrix.models[0])
    assert "resized to 6x4, scaled to [0, 1], normalised by the ImageNet mean and std" in spec.note
    x = spec.inputs(2, seed=1)["x"]
    assert x.shape == (2, 3, 6, 4)
    red = (np.array([1.0, 0, 0]) - IMAGENET_MEAN) / IMAGENET_STD
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor(red, dtype=torch.float32))
    nhwc = onnx_file(tmp_path / "nhwc.onnx", ["batch", 6, 4, 3])
    x = get_model(build(tmp_path, models=f"onnx:{nhwc}", inputs=str(folder)).matrix.models[0]).inputs(1, 1)["x"]
    assert x.shape == (1, 6, 4, 3)
    torch.testing.assert_close(x[0, 0, 0], torch.tensor(red, dtype=torch.float32))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(pytest.UsageError, match="broken.png is not a readable image"):
        build(tmp_path, models=f"onnx:{onnx_file(tmp_path / 'other.onnx', ['batch', 3, 6, 4])}", inputs=str(folder))


def test_images_for_an_hf_vision_model_go_through_its_own_processor(tmp_path, registry):
    import transformers as tf
    from PIL import Image
    torch.manual_seed(0)
    vit = tmp_path / "vit-user"
    tf.ViTForImageClassification(tf.ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                              num_attention_heads=2, intermediate_size=32)).save_pretrained(vit)
    processor = tf.ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.2] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(vit)
    folder = tmp_path / "photos"
    folder.mkdir()
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8)) for i in range(3)]
    for i, image in enumerate(images):
        image.save(folder / f"{i}.png")
    spec = get_model(build(tmp_path, models=f"hf:{vit}", inputs=str(folder)).matrix.models[0])
    assert "its image processor" in spec.note
    want = processor(images=images[:2], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(spec.inputs(2, seed=1)["pixel_values"], want)


def test_static_int8_calibrates_on_the_users_samples_and_only_int8_is_rekeyed(tmp_path, registry):
    from infermatrix.engines.onnx_steps import Quantize
    model = conv_file(tmp_path / "conv.onnx")
    rng = np.random.default_rng(0)
    keys, digests = [], []
    generated = get_model(resolve(f"onnx:{model}"))
    for i, scale in enumerate((1.0, 50.0)):
        data = tmp_path / f"data{i}.npz"
        np.savez(data, x=(rng.normal(size=(10, 3, 8, 8)) * scale).astype(np.float32))
        MODELS["conv"] = generated  # the same file, fed other inputs
        spec = attach_inputs("conv", data)
        build_spec = spec.build_spec(None, 2)
        step = Quantize(None, "static_per_channel", build_spec.calibration)
        batches = build_spec.calibration()
        assert np.array_equal(np.concatenate([b["x"] for b in batches])[:5], np.load(data)["x"][5:]), "the last 5"
        keys.append(step.params()["calibration"]["sha256"])
        digests.append(weights_digest("conv"))
    assert keys[0] != keys[1], "other calibration samples: another static int8 artifact"
    assert digests[0] == digests[1], "fp32 engines are not rebuilt for new input values"


def test_an_npz_feeds_a_builtin_model_and_the_trained_flag_gates_top1(tmp_path, registry):
    shape = get_model("tiny-cnn").inputs(1, 0)["pixel_values"].shape[1:]
    data = tmp_path / "cnn.npz"
    np.savez(data, pixel_values=np.random.default_rng(1).normal(size=(6, *shape)).astype(np.float32))
    config = tmp_path / "run.toml"
    config.write_text(f'models = [{{ source = "tiny-cnn", inputs = "{data.name}", trained = true }}]\n')
    run = build(tmp_path, config=str(config))
    spec = get_model(run.matrix.models[0])
    assert spec.trained and spec.inputs_file == data
    evaluation = torch.from_numpy(np.load(data)["pixel_values"][:2])  # a load sample's seed is past the calibration ones
    assert torch.equal(spec.inputs(2, CALIBRATION_SEED + 10_000)["pixel_values"], evaluation)
    assert not get_model("tiny-bert").trained
    run = build(tmp_path, models="tiny-bert", trained=True)
    assert get_model("tiny-bert").trained and run.origins["trained"] == "command line"


def test_a_dim_that_names_no_dim_of_the_file_is_a_usage_error(tmp_path, registry):
    model = onnx_file(tmp_path / "seq.onnx", ["batch", "seq"], np.int64)
    run = build(tmp_path, models=f"onnx:{model}", dims=["seq=4"])
    assert get_model(run.matrix.models[0]).inputs(1, 1)["x"].shape == (1, 4)
    with pytest.raises(pytest.UsageError, match=r"--dim = 'seq=4,heigth=3': 'heigth' names no symbolic dim of the "
                                                r"run's onnx: models.*seq.onnx: seq \(used by x\[1\]\); batch axis: batch"):
        build(tmp_path, models=f"onnx:{model}", dims=["seq=4,heigth=3"])
    with pytest.raises(pytest.UsageError, match="'batch' names no symbolic dim"):
        build(tmp_path, models=f"onnx:{model}", dims=["seq=4", "batch=2"])


def test_a_dotted_dim_name_in_toml_is_told_to_be_quoted(tmp_path):
    dotted = tmp_path / "dotted.toml"
    dotted.write_text("dims = { p2o.DynamicDimension.0 = 640 }\n")
    with pytest.raises(pytest.UsageError, match=r"'p2o.DynamicDimension.0' is read as a dotted key .*quote the dim's "
                                                r"name: \{ \"p2o.DynamicDimension.0\" = 640 \}"):
        build(tmp_path, config=str(dotted))
    colon = tmp_path / "colon.toml"
    colon.write_text("dims = { input:0 = 3 }\n")
    with pytest.raises(pytest.UsageError, match=r"not valid TOML: .*must be quoted: dims = \{ \"input:0\" = 3 \}"):
        build(tmp_path, config=str(colon))
    quoted = tmp_path / "quoted.toml"
    quoted.write_text('dims = { "p2o.DynamicDimension.0" = 640 }\n')
    assert dict(build(tmp_path, config=str(quoted)).settings["dims"]) == {"p2o.DynamicDimension.0": 640}


def test_a_child_process_measures_on_the_users_inputs_too(tmp_path, registry):
    """The per-engine memory child and a cold start register the model again from its handoff:
    the user's inputs go with it, so the child runs the same data."""
    from infermatrix.models.handoff import model_handoff, register_handed_off
    fresh = get_model("tiny-cnn")   # what a fresh interpreter registers: the built-in model, no inputs
    shape = get_model("tiny-cnn").inputs(1, 0)["pixel_values"].shape[1:]
    data = tmp_path / "cnn.npz"
    np.savez(data, pixel_values=np.random.default_rng(2).normal(size=(4, *shape)).astype(np.float32))
    attach_inputs("tiny-cnn", data)
    handoff = model_handoff("tiny-cnn")
    assert handoff["inputs"] == str(data.resolve())
    MODELS["tiny-cnn"] = fresh
    register_handed_off(handoff)
    assert get_model("tiny-cnn").inputs_file == data.resolve()
    assert torch.equal(get_model("tiny-cnn").inputs(1, 0)["pixel_values"],
                       torch.from_numpy(np.load(data)["pixel_values"][:1]))
