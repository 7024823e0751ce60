"""The shared ONNX stage: steps keyed and cached once, shared by engines, failures leave nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import onnx
import pytest

from infermatrix.engines import ENGINES, INT8_SCHEMES
from infermatrix.engines import onnx_stage, onnx_steps
from infermatrix.engines.cache import STAGE_PREFIX, EngineCache
from infermatrix.engines.onnx_quantize import RECIPES
from infermatrix.engines.onnx_stage import Export, Float16, Quantize, Step, materialize, plan
from infermatrix.models.registry import get_model


@pytest.fixture(scope="module")
def tiny_cnn():
    model = get_model("tiny-cnn")
    return model, model.build_module()


def entries(cache: EngineCache) -> list[Path]:
    """Finished stage entries (not lock files, not build dirs)."""
    root = cache.root / onnx_stage.KIND
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(STAGE_PREFIX)) if root.exists() else []


def counting(monkeypatch, name: str) -> list[int]:
    """Count calls of onnx_steps.<name> (the export / quantize that steps build with)."""
    calls: list[int] = []
    real = getattr(onnx_steps, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(onnx_steps, name, wrapper)
    return calls


def test_a_step_is_built_once_and_shared_by_two_engines_and_two_precisions(tiny_cnn, tmp_path, monkeypatch):
    model, module = tiny_cnn
    cache = EngineCache(tmp_path)
    exports, quantizations = counting(monkeypatch, "export_onnx"), counting(monkeypatch, "quantize")
    names = [n for n in ("onnxruntime", "openvino") if ENGINES[n].is_installed()]
    details = {}
    for name in names:
        for precision in ("fp32", "int8"):
            spec = model.build_spec(module, 2, store=cache.store)
            engine = ENGINES[name](precision, "cpu")
            entry = cache.get_or_build(name, {"engine": name, "precision": precision},
                                       lambda d, e=engine, s=spec: e.build(s, d))
            engine.load(entry.path, spec)
            out = engine.to_host(engine.run(engine.prepare(model.inputs(3))))
            assert out["logits"].shape == (3, 10)
            details[name, precision] = engine.details()
            engine.close()
    assert len(exports) == 1 and len(quantizations) == 1      # one export, one int8 graph, for all of them
    stage = entries(cache)
    assert len(stage) == 2
    steps = sorted(json.loads((p / "meta.json").read_text())["fields"]["step"] for p in stage)
    assert steps == ["export", "quantize"]
    assert details["onnxruntime", "int8"]["onnx_steps"] == ["export", "quantize"]
    assert details["onnxruntime", "fp32"]["onnx_steps"] == ["export"]
    if "openvino" in names:   # OpenVINO starts from the same export; its int8 is NNCF's, on that fp32 graph
        for precision in ("fp32", "int8"):
            assert details["openvino", precision]["onnx_stage_key"] == details["onnxruntime", "fp32"]["onnx_stage_key"]
        assert details["openvino", "int8"]["int8_recipe"].startswith("NNCF nncf.quantize")
        assert details["openvino", "int8"]["openvino_int8_layers"] >= 2  # both convolutions ran as int8


@dataclass(frozen=True)
class Truncating(Step):
    """Writes half of its parent's graph, then fails: a build killed halfway."""

    parent: Step
    kind: ClassVar[str] = "truncating"

    def params(self) -> dict[str, Any]:
        return {}

    def build(self, src: Path | None, dst: Path, tmp: Path) -> dict[str, Any]:
        data = src.read_bytes()
        dst.write_bytes(data[: len(data) // 2])
        raise OSError("disk full while writing the graph")


def test_a_failed_step_leaves_no_half_written_entry(tiny_cnn, tmp_path):
    model, module = tiny_cnn
    cache = EngineCache(tmp_path / "cache")
    export = Export(model.build_spec(module, 2))
    with pytest.raises(OSError, match="disk full"):
        materialize(Truncating(export), cache.store)
    (entry,) = entries(cache)                                   # the export finished and stays
    meta, problem = cache.verify(entry)
    assert problem is None and meta.key == export.key
    assert not [p for p in (cache.root / onnx_stage.KIND).iterdir() if p.name.startswith(STAGE_PREFIX)]
    # the export is reused, not rebuilt, when the next step is asked for again
    assert materialize(export, cache.store).model == entry / onnx_stage.MODEL

    scratch = tmp_path / "scratch"                              # uncached: same promise
    scratch.mkdir()
    with pytest.raises(OSError, match="disk full"):
        materialize(Truncating(export), None, scratch)
    assert [p.name for p in scratch.iterdir()] == [f"export-{export.key[:16]}"]


def test_an_uncached_build_leaves_only_the_engines_artifact(tiny_cnn, tmp_path):
    model, module = tiny_cnn
    engine = ENGINES["onnxruntime"]("int8", "cpu")
    engine.build(model.build_spec(module, 2), tmp_path)        # store=None: the stage builds in scratch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.json", "model.onnx"]


def test_keys_follow_the_parent_the_parameters_and_the_versions(tiny_cnn):
    model, module = tiny_cnn
    spec = model.build_spec(module, 2)
    static, dynamic = plan(spec, "int8"), Quantize(Export(spec), "dynamic")
    assert static.parent.key == dynamic.parent.key == plan(spec, "fp32").key   # one export under all three
    assert static.key != dynamic.key
    fields = static.key_fields()
    assert fields["parent"] == static.parent.key and fields["params"]["recipe"] == RECIPES["static_per_channel"]
    assert fields["params"]["calibration"]["batches"] == 8
    assert {"onnx", "onnxruntime"} <= set(fields["versions"]) and "torch" in static.parent.key_fields()["versions"]
    other = get_model("tiny-cnn").build_module()
    with __import__("torch").no_grad():
        next(other.parameters()).add_(1.0)
    assert Export(model.build_spec(other, 2)).key != static.parent.key     # other weights, other graph
    assert set(RECIPES) == set(INT8_SCHEMES)
    with pytest.raises(ValueError, match=r"builds \('fp32', 'fp16', 'int8'\); got precision 'bf16'"):
        plan(spec, "bf16")
    with pytest.raises(ValueError, match="'static' calibrates activations and needs a calibration set"):
        Quantize(Export(spec), "static")
    with pytest.raises(ValueError, match=r"int8 scheme 'int4'; expected one of"):
        Quantize(Export(spec), "int4")


def test_the_record_says_what_each_step_did(tmp_path):
    cache = EngineCache(tmp_path)
    bert = get_model("tiny-bert")
    spec = bert.build_spec(bert.build_module(), 2, store=cache.store)
    built = materialize(plan(spec, "int8", fuse=True), cache.store)   # ONNX Runtime's int8 chain
    record = built.record
    assert record["steps"] == ["export", "fuse", "quantize"]
    assert record["exporter"] == "torchscript" and record["int8_scheme"] == "dynamic"
    assert record["fused_operators"].get("Attention", 0) >= 2           # one per layer
    assert record["int8_ops"].get("MatMulInteger", 0) + record["int8_ops"].get("DynamicQuantizeMatMul", 0) > 0

    cnn = get_model("tiny-cnn")
    fp16 = materialize(Float16(Export(cnn.build_spec(cnn.build_module(), 2))), cache.store)
    assert fp16.record["steps"] == ["export", "fp16"] and fp16.record["fp16_io"] == "float32"
    graph = onnx.load(str(fp16.model)).graph
    assert {i.type.tensor_type.elem_type for i in (*graph.input, *graph.output)} == {onnx.TensorProto.FLOAT}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    assert {t.data_type for t in graph.initializer if t.data_type in floats} == {onnx.TensorProto.FLOAT16}


HEADER_DIR_CHILD = """
import sys, tempfile
from pathlib import Path
import torch
from infermatrix.engines.onnx_stage import materialize, plan
from infermatrix.models.builtin import register_builtin_models
from infermatrix.models.registry import get_model
register_builtin_models()
model = get_model("tiny-cnn")
spec = model.build_spec(model.build_module(), 1)
scratch = Path(sys.argv[1])
materialize(plan(spec, "fp32"), None, scratch)  # torch's ONNX export, inside the build's folder
from torch._inductor import codecache
print(codecache._HEADER_DIR)
"""


def test_an_export_leaves_inductors_header_folder_where_it_is_outside_the_build(tmp_path):
    """torch's export imports inductor's code cache, whose precompiled-header folder is read from
    tempfile at import (engines/onnx_export.py): imported inside the build's folder, every later
    torch.compile of the process recreated that folder, 152 MB, inside the engine cache."""
    done = subprocess.run([sys.executable, "-c", HEADER_DIR_CHILD, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    header_dir = Path(done.stdout.strip().splitlines()[-1])
    assert tmp_path not in header_dir.parents, f"inductor's header folder {header_dir} is inside the build's folder"
