"""torch -> ONNX export with an explicit exporter choice and a logged fallback.

The dynamo exporter imports inductor's code cache, which reads its precompiled-header folder from
``tempfile.gettempdir()`` once, at import (on purpose: host-wide, not the process's inductor
cache). An export runs inside its build's folder, where tempfile points (onnx_shapes.build_folder):
imported there, the folder was a removed build folder for the rest of the process, so its first
torch.compile compiled the 150 MB header again (5 s here) and recreated that folder inside the
engine cache (a 152 MB orphan ``.build-*`` folder after a run). So the code cache is imported with
tempfile's own folder first; the TorchScript exporter does not import it (measured), so its exports
pay nothing for it.
"""
from __future__ import annotations

import importlib
import logging
import tempfile
import warnings
from pathlib import Path

from .base import BuildSpec

log = logging.getLogger("infermatrix.engines")
EXPORTERS = ("dynamo", "torchscript")


def _import_with_the_system_temp_dir(module: str) -> None:
    """Import ``module`` while tempfile's folder is its default one, not the build's (see above)."""
    folder, tempfile.tempdir = tempfile.tempdir, None
    try:
        importlib.import_module(module)
    finally:
        tempfile.tempdir = folder


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
        if exporter == "dynamo":
            _import_with_the_system_temp_dir("torch._inductor.codecache")
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
