"""PyTorch int8 with torchao, the quantizer PyTorch maintains (``torch.ao.quantization`` is
deprecated upstream in its favour).

``torchao.quantization.quantize_`` with ``Int8DynamicActivationInt8WeightConfig`` on every
``nn.Linear``: int8 weights (one scale per output channel for ``dynamic_per_channel``, its
``PerRow`` default; one per tensor for ``dynamic``), activations quantized symmetrically on each
call. ``set_inductor_config=False``: the eager engine compiles nothing, and the default would
change torch.compile's global settings for every other engine in the process.

Measured on CPU (AMD EPYC, 1 thread, shared machine, eager; ms per call): tiny-bert bs8 fp32
1.10, torch.ao quantize_dynamic per-channel 1.40, torchao PerRow 7.32, PerTensor 4.71;
distilbert bs1 fp32 136, quantize_dynamic 43, torchao 77. torchao's eager int8 path quantizes
activations with ordinary tensor ops around an int8 matmul, so it pays off only where the
matmuls dominate (and it is built for torch.compile, which fuses those ops): the torch int8
rows measure what a PyTorch user gets today, slower on CPU than the deprecated quantize_dynamic.
"""
from __future__ import annotations

import copy
from typing import Any

from .base import EngineError, EngineUnavailable

#: scheme -> the torchao granularity of the weight (and activation) scales
GRANULARITY = {"dynamic": "PerTensor", "dynamic_per_channel": "PerRow"}
SCHEMES = frozenset(GRANULARITY)
#: every setting the recipe fixes
RECIPE: dict[str, Any] = {"api": "torchao.quantization.quantize_", "config": "Int8DynamicActivationInt8WeightConfig",
                          "granularity": GRANULARITY, "act_mapping_type": "SYMMETRIC", "set_inductor_config": False,
                          "modules": "nn.Linear"}
#: below this share of compute layers quantized, an "int8" case would be an fp32 model
MIN_INT8_SHARE = 0.5
INSTALL = "pip install torchao==0.18.0 (a dependency of infermatrix)"


def label(scheme: str) -> str:
    """The recipe as a record shows it (``int8_recipe``)."""
    return f"torchao quantize_ Int8DynamicActivationInt8WeightConfig(granularity={GRANULARITY[scheme]}())"


def missing() -> str | None:
    """Why torchao cannot be used here (None when it can)."""
    import importlib.util
    if importlib.util.find_spec("torchao") is None:
        return f"torch int8 is built with torchao, which is not installed ({INSTALL})"
    return None


def count_linear(module: Any) -> tuple[int, int]:
    """(nn.Linear layers, compute layers: Linear, convolutions, transformers' GPT-2 Conv1D)."""
    import torch
    compute = [m for m in module.modules() if isinstance(m, torch.nn.Linear | torch.nn.modules.conv._ConvNd)
               or type(m).__name__ == "Conv1D"]
    return sum(isinstance(m, torch.nn.Linear) for m in compute), len(compute)


def quantize(module: Any, scheme: str) -> tuple[Any, str]:
    """A copy of ``module`` with every nn.Linear quantized by torchao, and "int8/compute layers"
    (int8 counted from the weights torchao replaced).

    Only nn.Linear is quantized: a model that is mostly convolutions (or GPT-2's Conv1D) is
    refused rather than measured as "int8" (EngineUnavailable: a skip with the reason)."""
    if scheme not in SCHEMES:
        raise EngineError(f"torch int8 (torchao) builds schemes {sorted(SCHEMES)}; got {scheme!r}")
    linear, compute = count_linear(module)
    if not compute or linear / compute < MIN_INT8_SHARE:
        raise EngineUnavailable(f"torch int8 (torchao) quantizes nn.Linear only: {linear} of {compute} compute layers "
                          "here; the rest (convolutions, Conv1D) would stay fp32")
    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    from torchao.quantization import granularity as g
    from torchao.utils import TorchAOBaseTensor
    quantized = copy.deepcopy(module).eval()
    config = Int8DynamicActivationInt8WeightConfig(granularity=getattr(g, GRANULARITY[scheme])(),
                                                   set_inductor_config=False)
    quantize_(quantized, config)
    done = sum(isinstance(m, torch.nn.Linear) and isinstance(m.weight, TorchAOBaseTensor) for m in quantized.modules())
    return quantized, f"{done}/{compute}"
