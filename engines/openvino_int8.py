"""OpenVINO int8 built the way OpenVINO's users build it: NNCF post-training quantization.

``nncf.quantize`` runs on the fp32 ``ov.Model`` (the shared ONNX stage's unfused source graph,
converted), calibrated on the model's seeded calibration batches, with
``model_type=TRANSFORMER`` when the model has transformer hints. Everything else is NNCF's
documented default: its preset (PERFORMANCE, or MIXED for transformers), its range estimators,
fast bias correction, and SmoothQuant for transformers. The scheme picks only the weights'
granularity: ``static_per_channel`` is NNCF's default (one scale per output channel),
``static`` forces one scale per tensor.

Why not the shared Q/DQ graph: that graph is ONNX Runtime's quantization of the unfused
export, which OpenVINO runs but no OpenVINO user builds; on a real 8-layer BERT it kept cosine
0.18 (ONNX Runtime, on its fused graph, 0.9987). On this suite's random-weight models it often
did better than NNCF's defaults (docs/models.md has both sets of figures), but the row is meant
to measure what an OpenVINO user gets.

NNCF sends usage telemetry unless it runs under pytest (it checks ``sys.modules``), where every
build of this suite happens; outside it, NNCF_CI=1 or openvino-telemetry's opt-out stops it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

#: every setting the NNCF recipe fixes (part of the engine's cache key): the rest is NNCF's default
RECIPE: dict[str, Any] = {
    "api": "nncf.quantize", "preset": "NNCF default (PERFORMANCE; MIXED for transformers)",
    "model_type": "TRANSFORMER when the model has transformer hints, else None",
    "calibration": "the model's seeded calibration batches, one sample per item",
    "weights_per_channel": {"static": False, "static_per_channel": True},
}
SCHEMES = frozenset(RECIPE["weights_per_channel"])


def label(scheme: str, transformer: bool) -> str:
    """The recipe as a record shows it (``int8_recipe``)."""
    weights = "per-channel" if RECIPE["weights_per_channel"][scheme] else "per-tensor"
    return f"NNCF nncf.quantize ({'model_type=TRANSFORMER, ' if transformer else ''}{weights} weights)"


def samples(batches: Iterable[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
    """The calibration batches split into single samples, as NNCF's examples feed it (a
    DataLoader of batch size 1): its statistics are then per sample, whatever the batches were."""
    out = []
    for batch in batches:
        arrays = {n: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for n, v in batch.items()}
        rows = {len(a) for a in arrays.values()}
        if len(rows) != 1:
            raise ValueError(f"calibration batch inputs disagree on batch size: { {n: a.shape for n, a in arrays.items()} }")
        out += [{n: np.ascontiguousarray(a[i:i + 1]) for n, a in arrays.items()} for i in range(rows.pop())]
    return out


def digest(items: list[Mapping[str, np.ndarray]]) -> str:
    """sha256 of the calibration data, so new calibration inputs rebuild the IR."""
    h = hashlib.sha256()
    for item in items:
        for n, a in sorted(item.items()):
            h.update(f"{n}:{a.dtype}:{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def quantize(model: Any, scheme: str, items: list[Mapping[str, np.ndarray]], transformer: bool) -> Any:
    """``model`` (an fp32 ov.Model) quantized to int8 by NNCF, calibrated on ``items``."""
    if scheme not in SCHEMES:
        raise ValueError(f"OpenVINO's NNCF int8 builds schemes {sorted(SCHEMES)}; got {scheme!r}")
    if not items:
        raise ValueError("NNCF int8 calibrates activations and needs calibration batches; the spec has none")
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    names = [p.get_any_name() for p in model.inputs]
    # by name: a user's ONNX file need not list its inputs in the spec's order
    dataset = nncf.Dataset(items, lambda item: {n: item[n] for n in names})
    advanced = None if RECIPE["weights_per_channel"][scheme] else AdvancedQuantizationParameters(
        weights_quantization_params=QuantizationParameters(per_channel=False))
    # a clone: the fp32 model stays as it was, for the collapse check after
    return nncf.quantize(model.clone(), dataset, subset_size=len(items),
                         model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                         advanced_parameters=advanced)


def collapse_problem(fp32: Any, int8: Any, items: list[Mapping[str, np.ndarray]], probes: int = 4) -> str | None:
    """Why the int8 model carries nothing of its input (None when it does): each output is the
    same for every probe while the fp32 model's differ.

    NNCF floors a quantizer's scale at float32's eps (1.2e-7, nncf/quantization/fake_quantize.py),
    so activations that have faded below it round to zero. The seeded random-weight mobilenet_v2
    does that: its activations shrink about tenfold per stage to ~2e-8, and its int8 logits are
    all zero. Measuring such a model would time a constant, so the case is refused with this reason."""
    import openvino as ov
    core, config = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}
    outs = []
    for model in (fp32, int8):
        compiled = core.compile_model(model, "CPU", config)
        names = [p.get_any_name() for p in compiled.inputs]
        results = [compiled({n: item[n] for n in names}) for item in items[:probes]]
        outs.append([np.stack([r[i] for r in results]) for i in range(len(compiled.outputs))])
    for i, (ref, got) in enumerate(zip(*outs)):
        if np.ptp(ref, axis=0).max() > 0 and np.ptp(got, axis=0).max() == 0:
            return (f"NNCF int8 output {i} is the same ({float(got.ravel()[0]):.3g}) for every input, where fp32's varies "
                    f"(largest |fp32| {float(np.abs(ref).max()):.3g}): the model's activations fall below NNCF's smallest "
                    "quantizer scale (float32 eps, 1.2e-7) and round to zero; a trained model's activations do not")
    return None
