"""torch -> ONNX export with an explicit exporter choice and a logged fallback."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from .base import BuildSpec

log = logging.getLogger("infermatrix.engines")
EXPORTERS = ("dynamo", "torchscript")


def export_onnx(spec: BuildSpec, path: Path, prefer: str = "dynamo", opset: int = 18) -> str:
    """Export ``spec.module`` to ``path`` with a dynamic batch axis (and the spec's other
    dynamic axes); return the exporter used.

    ``prefer`` is tried first with ``dynamo=`` passed explicitly; when it raises, the other
    exporter is tried and the reason is logged. Both failing raises with both reasons.
    """
    if prefer not in EXPORTERS:
        raise ValueError(f"exporter {prefer!r}; expected one of {EXPORTERS}")
    import torch
    order = [prefer] + [e for e in EXPORTERS if e != prefer]
    args = spec.positional(spec.example_inputs)
    axes = {n: {0: "batch", **spec.dynamic_axes.get(n, {})} for n in (*spec.input_names, *spec.output_names)}
    errors: list[str] = []
    for exporter in order:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # exporter chatter (TracerWarning, deprecations)
                torch.onnx.export(
                    spec.module, args, str(path),
                    input_names=list(spec.input_names), output_names=list(spec.output_names),
                    dynamic_axes=axes, opset_version=opset if exporter == "dynamo" else 17,
                    dynamo=(exporter == "dynamo"), external_data=False, verbose=False,
                )
            if errors:
                log.warning("ONNX export of %s: %s; used the %s exporter instead",
                            spec.name, errors[-1], exporter)
            return exporter
        except Exception as exc:  # noqa: BLE001 - recorded and re-raised below if all fail
            errors.append(f"{exporter} exporter failed: {type(exc).__name__}: {str(exc)[:300]}")
            for leftover in path.parent.glob(path.name + "*"):
                leftover.unlink()
    raise RuntimeError(f"ONNX export of {spec.name} failed with every exporter: " + " | ".join(errors))
