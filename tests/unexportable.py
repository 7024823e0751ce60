"""A model that runs eagerly but that no exporter can take, shared by the session and fault tests."""
from __future__ import annotations

import torch


class Unexportable(torch.nn.Module):
    """Runs eagerly, raises under every exporter (an op with no ONNX support)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        if torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.compiler.is_compiling():
            raise RuntimeError("custom op has no export support")
        return self.fc(x.flatten(1))
