"""The VL pipeline's stages, its export, and a user's checkpoint in place of the built-in config."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from infermatrix.scenarios import export
from infermatrix.commands.main import main as cli_main
from infermatrix.scenarios.pipeline import CaptionRun, make_test_image, original_runner, pipeline_figures
from infermatrix.models.export_scripts.preprocess import preprocess
from infermatrix.models.vlm import PIPELINES, VisionLanguageModel, load_lm, load_vision, save_checkpoint


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private engine cache, passed explicitly (nothing reads it from the environment)."""
    return tmp_path_factory.getbasetemp() / "cache"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_test_image(tmp_path_factory.mktemp("img") / "image.png", seed=3)


def run_scripts(directory, image, tmp_path) -> list[list[int]]:
    """The three exported stage scripts, each in its own interpreter, chained by files."""
    def run(script, *args):
        subprocess.run([sys.executable, str(directory / script), *map(str, args)], check=True, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    run("preprocess.py", image, "--out", tmp_path / "px.npy")
    run("vision.py", tmp_path / "px.npy", "--out", tmp_path / "emb.npy")
    done = subprocess.run([sys.executable, str(directory / "generate.py"), str(tmp_path / "emb.npy")], check=True,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens"]


def test_split_weights_rebuild_the_whole_model(cache):
    pipeline = PIPELINES["tiny-vl"]
    whole, root = pipeline.original(cache), pipeline.artifacts(cache)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(load_vision(pipeline.config, root / "vision.safetensors")(pixels), whole.vision(pixels))
        ids = torch.tensor([[5, 6, 7]])
        assert torch.equal(load_lm(pipeline.config, root / "lm.safetensors")(ids).logits, whole.lm(ids).logits)


def test_exported_scripts_reproduce_the_original_caption(image, tmp_path, cache):
    out = export.export_pipeline(PIPELINES["tiny-vl"], tmp_path / "export", cache_root=cache)
    assert sorted(p.name for p in out.iterdir()) == ["generate.py", "lm.safetensors", "manifest.json", "pipeline.json",
                                                      "preprocess.py", "vision.onnx", "vision.py"]
    expected = original_runner(PIPELINES["tiny-vl"], image, cache)().tokens.tolist()
    got = run_scripts(out, image, tmp_path)
    assert got == expected and len(got[0]) == PIPELINES["tiny-vl"].config.caption_tokens
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest) == {"generate.py", "lm.safetensors", "pipeline.json", "preprocess.py", "vision.onnx", "vision.py"}


def test_a_user_checkpoint_replaces_the_built_in_weights(image, tmp_path, capsys, cache):
    config = PIPELINES["tiny-vl"].config
    torch.manual_seed(123)
    mine = VisionLanguageModel(config).eval()
    checkpoint = save_checkpoint(mine, tmp_path / "my-vlm")
    assert cli_main(["export", "--pipeline", "tiny-vl", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                     "--engine-cache", str(cache)]) == 0
    got = run_scripts(tmp_path / "out", image, tmp_path)
    pixels = torch.from_numpy(preprocess(image, config.image_size, config.mean, config.std))
    assert got == mine.caption(pixels)[0].tolist()
    assert got != original_runner(PIPELINES["tiny-vl"], image, cache)().tokens.tolist()
    assert json.loads((tmp_path / "out" / "pipeline.json").read_text())["source"] == str(checkpoint.resolve())


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch, cache):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")
    monkeypatch.setattr(export, "export_onnx", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export.export_pipeline(PIPELINES["tiny-vl"], tmp_path / "out", cache_root=cache)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_export_is_replaced_only_with_force(tmp_path, capsys, cache):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli_main(["export", "--pipeline", "tiny-vl", "--out", str(out), "--engine-cache", str(cache)]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert cli_main(["export", "--pipeline", "tiny-vl", "--out", str(out), "--force", "--engine-cache", str(cache)]) == 0
    assert not (out / "keep.txt").exists() and (out / "vision.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bad_pipeline_and_checkpoint_are_named(tmp_path, capsys):
    assert cli_main(["export", "--pipeline", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "'nope' is not registered; valid values:" in capsys.readouterr().err
    (tmp_path / "ckpt").mkdir()
    args = ["export", "--pipeline", "tiny-vl", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "o")]
    assert cli_main(args) == 2
    assert "no config.json" in capsys.readouterr().err


def test_pipeline_figures_report_no_p99_from_few_runs():
    import numpy as np
    stages = ("preprocess", "vision", "prefill", "decode")
    runs = [CaptionRun(np.zeros((1, 4)), np.zeros(3), {s: 0.001 * (i + 1) for s in stages}) for i in range(12)]
    fig = pipeline_figures(runs)
    assert fig["e2e_p50_s"] == pytest.approx(0.026) and fig["e2e_p90_s"] is not None
    assert fig["e2e_p99_s"] is None
    assert fig["percentile_notes"] == {"e2e_p99_s": "p99 needs >= 100 samples; 12 were taken"}
