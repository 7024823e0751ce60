"""The results schema (core/schema.py, core/records.py): the case id both ways, typed records that
refuse what does not fit, versions, the version-0 converter, and the readers that used to guess
(the speedup reference, ab's case key)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infermatrix.core.records import GenerationRecord, LatencyRecord, LoadRecord
from infermatrix.core.schema import (INT8_SCHEMES, PRECISIONS, RECORD_KEY, SCHEMA_KEY, SCHEMA_VERSION, Case, Reference,
                                     SchemaError, read_record)
from infermatrix.reports.history import InputError, latest_per_machine, load_frame
from infermatrix.runner.ab import merge_blocks
from tests.runs import bench, write_run

names = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-zA-Z0-9]{1,5}){0,3}", fullmatch=True)
engines = st.from_regex(r"[a-z]{2,8}(_[a-z]{2,8}){0,2}", fullmatch=True)


@given(names, engines, st.sampled_from(PRECISIONS), st.sampled_from((None, *INT8_SCHEMES)),
       st.integers(1, 512), st.sampled_from(("cpu", "cuda")))
def test_a_case_id_parses_back_to_its_case(model, engine, precision, scheme, batch, device):
    case = Case(model, engine, precision, batch, device, scheme if precision == "int8" else None)
    assert Case.parse(case.id) == case


@pytest.mark.parametrize("bad", ["resnet50", "resnet50-torch-fp32-8-cpu", "resnet50-torch-fp64-bs8-cpu",
                                 "torch-fp32-bs1-cpu", "resnet50-torch-fp32-bs1-tpu"])
def test_what_is_not_a_case_id_is_refused_saying_the_form(bad):
    with pytest.raises(SchemaError, match="is not a case id"):
        Case.parse(bad)


def latency(**figures) -> LatencyRecord:
    case = Case("tiny-cnn", "onnxruntime", "int8", 8, "cpu", "dynamic")
    return LatencyRecord.of(case, Reference("torch", "fp32", "cpu"), p50_s=1e-3, onnx_ops=12, **figures)


def test_a_record_round_trips_through_extra_info_and_keeps_what_the_schema_does_not_know():
    rec = latency(gpu_compute_p50_s=None, rounds=40)
    info = json.loads(json.dumps(rec.to_extra_info()))  # as pytest-benchmark saves it
    assert info[SCHEMA_KEY] == SCHEMA_VERSION and info[RECORD_KEY] == "latency"
    assert info["int8_scheme"] == "dynamic" and info["baseline_engine"] == "torch"
    back = read_record(info)
    assert back == rec and back.details == {"onnx_ops": 12} and back.label() == "tiny-cnn-onnxruntime-int8-dynamic-bs8-cpu"


def test_a_figure_of_the_wrong_type_names_the_field_and_what_was_expected():
    with pytest.raises(SchemaError, match=r"latency record: field 'p90_s' is 'fast' \(str\); expected float \| None"):
        latency(p90_s="fast")
    with pytest.raises(SchemaError, match="field 'rounds' is True"):
        latency(rounds=True)  # a bool is no count
    with pytest.raises(SchemaError, match=r"\['engine'\] belong to the case key"):
        latency(engine="torch")  # the case is the key: never a loose figure beside it


def test_versions_newer_than_this_code_are_refused_with_both_numbers():
    info = {**latency().to_extra_info(), SCHEMA_KEY: SCHEMA_VERSION + 1}
    with pytest.raises(SchemaError, match=f"written with results schema {SCHEMA_VERSION + 1}; this infermatrix reads"):
        read_record(info)
    with pytest.raises(SchemaError, match="record kind 'magic' is unknown"):
        read_record({**latency().to_extra_info(), RECORD_KEY: "magic"})


def test_version_zero_records_are_upgraded_with_their_kind_loadgen_name_and_reference():
    v0 = {"model": "tiny-cnn", "engine": "torch", "precision": "fp32", "device": "cpu", "scenario": "Server",
          "latency_bound_s": 0.01, "max_valid_qps": 90.0}
    rec = read_record(v0, "test_server[tiny-cnn-torch-fp32-cpu]")
    assert isinstance(rec, LoadRecord) and rec.loadgen_scenario == "Server" and rec.max_valid_qps == 90.0
    assert rec.reference == Reference("torch", "fp32", "cpu") and rec.case.batch_size == 1
    with pytest.raises(SchemaError, match="version 0 is read for the tests"):
        read_record({"model": "m", "engine": "e", "precision": "fp32", "device": "cpu"}, "test_something_else[x]")


def test_a_scenarios_axes_are_part_of_its_key():
    case = Case("tiny-gpt2", "torch", "fp32", 1, "cpu")
    a, b = (GenerationRecord.of(case, prompt_length=n, new_tokens=32) for n in (32, 128))
    assert a.key() != b.key() and a.label() == "tiny-gpt2-torch-fp32-bs1-cpu-prompt_length32-new_tokens32"
    with pytest.raises(SchemaError, match=r"generation record: lacks the field\(s\) \['prompt_length'\]"):
        read_record({k: v for k, v in a.to_extra_info().items() if k != "prompt_length"})


# ---- readers that used to guess ----
def v1(model, engine, precision, median, reference=("torch", "fp32", "cpu"), scheme=None, bs=1):
    b = bench(model=model, engine=engine, precision=precision, median=median, bs=bs)
    rec = LatencyRecord.of(Case(model, engine, precision, bs, "cpu", scheme), Reference(*reference),
                           p50_s=b["stats"]["median"])
    b["extra_info"] = rec.to_extra_info()
    b["name"] = f"test_latency[{rec.case.id}]"
    return b


def test_an_onnx_models_speedups_divide_by_its_own_reference_not_eager_torch(tmp_path):
    ort = ("onnxruntime", "fp32", "cpu")
    run = write_run(tmp_path / "r.json", [v1("detector", "onnxruntime", "fp32", 4e-3, reference=ort),
                                          v1("detector", "openvino", "fp32", 2e-3, reference=ort)])
    latest = latest_per_machine(load_frame([run])).set_index("engine")
    assert latest.loc["openvino", "baseline_p50_s"] == pytest.approx(latest.loc["onnxruntime", "p50_s"])
    assert latest.loc["onnxruntime", "baseline_p50_s"] / latest.loc["openvino", "p50_s"] == pytest.approx(2.0, rel=0.05)


def test_two_int8_schemes_stay_two_cases_in_ab(tmp_path):
    blocks = []
    for scheme, median in (("static", 1e-3), ("dynamic", 3e-3)):
        for block in range(3):
            b = v1("tiny-cnn", "onnxruntime", "int8", median, scheme=scheme)
            b["extra_info"]["ab_block"] = block
            b["name"] = b["name"][:-1] + f"-ab{block}]"
            b["fullname"] = "perf_tests/test_latency.py::" + b["name"]
            blocks.append(b)
    worker = write_run(tmp_path / "w.json", blocks)
    merged = merge_blocks(worker, "NEW")["benchmarks"]
    by_scheme = {b["extra_info"]["int8_scheme"]: b for b in merged}
    assert sorted(by_scheme) == ["dynamic", "static"]  # not pooled into one "int8" case
    assert by_scheme["static"]["extra_info"]["p50_s"] < by_scheme["dynamic"]["extra_info"]["p50_s"]
    assert by_scheme["static"]["stats"]["rounds"] == 3 * 200


@pytest.mark.parametrize("bad, field", [({"benchmarks": [1]}, "a benchmark is a int"),
                                        ({"benchmarks": [], "machine_info": "x"}, "machine_info is a str")])
def test_structurally_wrong_runs_are_input_errors_naming_the_file(tmp_path, bad, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError, match=f"{path.name}.*{field}"):
        load_frame([path])
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(InputError, match="not UTF-8"):
        load_frame([path])
