"""int8 schemes side by side: torchao's dynamic int8 as the torch engine's int8,
scheme-aware ids, and the summary's verdict (fastest passing scheme, failed ones with figures)."""
from __future__ import annotations

import json

import pytest
import torch

from infermatrix.engines import ENGINES, get_engine
from infermatrix.engines.base import EngineUnavailable
from infermatrix.engines.cache import EngineCache
from infermatrix.runner.session import RunSession
from infermatrix.commands.main import main as reports_main
from infermatrix.core.schema import Case
from infermatrix.models.registry import MODELS, ModelSpec
from infermatrix.models.zoo import IMAGE, image_inputs

from tests.runs import bench, write_run


def test_scheme_capabilities_are_engine_data():
    assert get_engine("torch").scheme_problem("dynamic_per_channel") is None
    why = get_engine("torch").scheme_problem("static")
    assert "torch has no int8 scheme 'static'" in why and "dynamic" in why
    assert get_engine("onnxruntime").scheme_problem("static") is None
    assert all(not cls.int8_schemes or "int8" in set().union(*cls.capabilities.values()) for cls in ENGINES.values())


def test_case_ids_name_the_scheme_of_int8_cases_only():
    assert Case("m", "onnxruntime", "int8", 1, "cpu", "dynamic").id == "m-onnxruntime-int8-dynamic-bs1-cpu"
    assert Case("m", "torch", "fp32", 1, "cpu").id == "m-torch-fp32-bs1-cpu"
    with pytest.raises(ValueError, match="int8 cases only"):
        Case("m", "torch", "fp32", 1, "cpu", "dynamic")


@pytest.mark.parametrize("scheme", ["dynamic", "dynamic_per_channel"])
def test_torch_int8_is_torchao_and_agrees_with_eager(tmp_path, scheme):
    from torchao.utils import TorchAOBaseTensor
    session = RunSession(EngineCache(tmp_path / "cache"))
    case = Case("tiny-bert", "torch", "int8", 2, "cpu", scheme)
    try:
        loaded = session.engine(case)
        linear = [m for m in loaded.engine._module.modules() if isinstance(m, __import__("torch").nn.Linear)]
        assert linear and all(isinstance(m.weight, TorchAOBaseTensor) for m in linear)  # torchao int8 weights
        details = loaded.engine.details()
        assert details["int8_layers"] == "14/14"  # tiny-bert: every compute layer is a Linear
        assert details["int8_recipe"].startswith("torchao quantize_ Int8DynamicActivationInt8WeightConfig")
        assert "deprecated" in loaded.engine.notice_text() and "torchao" in loaded.engine.notice_text()
        report = session.equivalence(case)
        assert report.reference == "torch fp32 on cpu"
        assert report.figures()["cosine_min"] > 0.9, report.render()
        assert any(r["int8_scheme"] == scheme for r in session.equivalence_records())
    finally:
        session.close()


def test_torch_int8_refuses_a_model_it_would_leave_fp32(tmp_path):
    session = RunSession(EngineCache(tmp_path / "cache"))
    try:
        # the runner raises EngineUnavailable; the pytest front end makes it a skip with this reason
        with pytest.raises(EngineUnavailable, match="quantizes nn.Linear only: 1 of 3 compute layers"):
            session.engine(Case("tiny-cnn", "torch", "int8", 1, "cpu", "dynamic"))
    finally:
        session.close()


def _check(model, engine, scheme, status, cosine, sqnr, bs=1):
    # what runner/equivalence.py records for a check below the int8 row's floors (none when it passed)
    below = [f"cosine {cosine} < 0.99", f"SQNR {sqnr} dB < 20.0 dB"]
    return {"id": f"{model}-{engine}-int8-{scheme}-bs{bs}-cpu", "model": model, "engine": engine, "precision": "int8",
            "int8_scheme": scheme, "batch_size": bs, "device": "cpu", "equivalence": status,
            "equivalence_row": "int8", "reference": "torch fp32 on cpu", "cosine_min": cosine,
            "sqnr_db_min": sqnr, "top1_min": None, "top1_gated": False,
            "failures": below if status != "pass" else []}


def _int8(model, engine, scheme, median):
    b = bench(model=model, engine=engine, precision="int8", median=median)
    b["extra_info"]["int8_scheme"] = scheme
    case = f"{model}-{engine}-int8-{scheme}-bs1-cpu"
    b["name"], b["fullname"] = f"test_latency[{case}]", f"perf_tests/test_latency.py::test_latency[{case}]"
    return b


def test_summary_names_the_fastest_passing_scheme_and_shows_failed_ones(tmp_path):
    run = write_run(tmp_path / "runs" / "0001_a.json", [
        bench(model="enc", median=10e-3),
        _int8("enc", "onnxruntime", "static_per_channel", 3e-3), _int8("enc", "torch", "dynamic", 5e-3),
        bench(model="cnn", median=10e-3)])
    data = json.loads(run.read_text())
    data["infermatrix_equivalence"] = [
        _check("enc", "onnxruntime", "dynamic", "fail", 0.90, 6.8),
        _check("enc", "onnxruntime", "static_per_channel", "pass", 0.995, 22.0),
        _check("enc", "torch", "dynamic", "pass", 0.999, 30.0),
        _check("cnn", "onnxruntime", "static", "fail", 0.95, 12.0)]
    run.write_text(json.dumps(data))
    assert reports_main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    section = summary.split("## int8 schemes", 1)[1]
    assert "| onnxruntime | dynamic | n/a | 1 | 0.90000 | 6.8 dB | n/a | **fail** | n/a | n/a |" in section
    assert "Fastest passing int8 scheme for **enc** at batch 1: onnxruntime `static_per_channel`" in section
    assert "3.33×" in section  # 10 ms eager / 3 ms, both from the one run file
    assert "No int8 scheme passes the equivalence policy for **cnn**" in section
    assert "enc-onnxruntime-int8-static_per_channel-bs1-cpu" in summary  # distinct cases in the tables


class AllConv(torch.nn.Module):
    """Convolutions only, no Linear head: the per-channel flag of ONNX Runtime's dynamic quantizer
    changes nothing (ConvInteger has one weight zero point)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 10, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                                        torch.nn.Flatten())

    def forward(self, pixel_values):
        return self.body(pixel_values)


def test_schemes_that_built_the_same_artifact_are_said_to_be_one_result(tmp_path, monkeypatch):
    """dynamic and dynamic_per_channel on a convolutional model build the same graph (issue 16 item 7)."""
    monkeypatch.setitem(MODELS, "allconv", ModelSpec("allconv", AllConv, image_inputs(16), IMAGE))
    session = RunSession(EngineCache(tmp_path / "cache"))
    try:
        checks = {s: session.equivalence(Case("allconv", "onnxruntime", "int8", 1, "cpu", s))
                  for s in ("dynamic", "dynamic_per_channel", "static_per_channel")}
        records = {r["int8_scheme"]: r for r in session.equivalence_records()}
    finally:
        session.close()
    assert all(c.passed for c in checks.values())
    digests = {s: r["artifact_sha256"] for s, r in records.items()}
    assert digests["dynamic"] == digests["dynamic_per_channel"] != digests["static_per_channel"]
    assert records["dynamic"]["int8_recipe"] == "ONNX Runtime quantizer, shared ONNX graph (dynamic)"

    run = write_run(tmp_path / "runs" / "0001_a.json", [bench(model="allconv", median=10e-3)])
    data = json.loads(run.read_text())
    data["infermatrix_equivalence"] = [
        {**_check("allconv", "onnxruntime", s, "pass", 0.9999, 40.0), "artifact_sha256": digests[s],
         "int8_recipe": records[s]["int8_recipe"]} for s in digests]
    run.write_text(json.dumps(data))
    assert reports_main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    section = (tmp_path / "out" / "summary.md").read_text().split("## int8 schemes", 1)[1]
    assert ("Same graph: `dynamic` and `dynamic_per_channel` built byte-identical onnxruntime artifacts at batch 1 "
            "on cpu; one result, listed under each scheme.") in section
    assert "static_per_channel` built" not in section
    assert "| onnxruntime | dynamic | ONNX Runtime quantizer, shared ONNX graph (dynamic) | 1 |" in section
