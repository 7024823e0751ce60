"""Every registered engine honours the same contract: lifecycle, input checks, outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infermatrix.engines import ENGINES, EngineError
from infermatrix.models.registry import get_model


def contract_cases():
    for name, cls in sorted(ENGINES.items()):
        for precision in sorted(cls.capabilities.get("cpu", ())):
            if ("cpu", precision) in cls.slow:
                continue
            if precision == "int8" and "static_per_channel" not in cls.int8_schemes:
                continue  # tiny-cnn's int8 is static per channel; the torch engine's is Linear-only (test_int8_schemes)
            yield pytest.param((name, precision), id=f"{name}-{precision}")


@pytest.fixture
def loaded(request, tmp_path):
    name, precision = request.param
    cls = ENGINES[name]
    if not cls.is_installed():
        pytest.skip(f"{name} needs {cls.missing_requirements()}, which are not installed")
    model = get_model("tiny-cnn")
    batch = 2 if cls.dynamic_batch else 3
    spec = model.build_spec(model.build_module(), batch)
    engine = cls(precision, "cpu")
    with pytest.raises(EngineError, match="before load"):
        engine.run(None)
    engine.build(spec, tmp_path)
    engine.load(tmp_path, spec)
    yield engine, model, batch
    engine.close()


@pytest.mark.parametrize("loaded", list(contract_cases()), indirect=True)
def test_engine_contract(loaded):
    engine, model, batch = loaded
    sizes = (1, 3) if engine.dynamic_batch else (batch,)
    for bs in sizes:
        outputs = engine.to_host(engine.run(engine.prepare(model.inputs(bs))))
        assert list(outputs) == list(model.output_names)
        assert outputs["logits"].shape == (bs, 10)
        assert outputs["logits"].dtype == np.float32 and np.isfinite(outputs["logits"]).all()

    good = model.inputs(batch)
    with pytest.raises(EngineError, match=r"got inputs \['image'\]; expected \['pixel_values'\]"):
        engine.prepare({"image": good["pixel_values"]})
    with pytest.raises(EngineError, match=r"'pixel_values' is float32\[B,3,16,16\]; expected float32\[B,3,32,32\]"):
        engine.prepare({"pixel_values": torch.zeros(batch, 3, 16, 16)})
    with pytest.raises(EngineError, match=r"is float64.*expected float32"):
        engine.prepare({"pixel_values": good["pixel_values"].double()})

    prepared = engine.prepare(good)
    first = engine.to_host(engine.run(prepared))["logits"]
    second = engine.to_host(engine.run(prepared))["logits"]
    np.testing.assert_array_equal(first, second)  # to_host copies; a rerun does not alias
    engine.close()
    with pytest.raises(EngineError, match="after close"):
        engine.run(prepared)


def test_unsupported_precision_names_the_choices():
    with pytest.raises(EngineError, match=r"onnxruntime does not support 'bf16' on cpu; supported there: \['fp32', 'int8'\]"):
        ENGINES["onnxruntime"]("bf16", "cpu")
    with pytest.raises(EngineError, match=r"openvino does not run on 'cuda'"):
        ENGINES["openvino"]("fp32", "cuda")


def test_capabilities_are_declared_data():
    for name, cls in ENGINES.items():
        assert cls.name == name
        assert cls.capabilities and all(isinstance(v, frozenset) and v for v in cls.capabilities.values())
        assert set(cls.devices()) <= {"cpu", "cuda"}
        assert cls.precisions() <= {"fp32", "fp16", "bf16", "int8"}
        assert all(p in cls.capabilities.get(d, ()) for d, p in cls.slow)
