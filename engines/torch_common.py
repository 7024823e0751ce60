"""Shared pieces of the PyTorch-based engines (eager, TorchScript, torch.compile)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import BuildSpec, Engine, Outputs

#: the dtype of a precision's floating tensors (int8 models take and return float32)
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "float32"}


def torch_dtype(precision: str) -> Any:
    import torch
    return getattr(torch, TORCH_DTYPES[precision])


def module_for(spec: BuildSpec, precision: str, device: str) -> Any:
    """The spec's module moved to ``device`` and cast to ``precision`` (a copy when cast)."""
    import copy
    module = spec.module
    if precision != "fp32" or device != "cpu":
        module = copy.deepcopy(module)
    return module.to(device=device, dtype=torch_dtype(precision)).eval()


def prepare_tensors(inputs: Mapping[str, Any], names: tuple[str, ...], precision: str,
                    device: str) -> tuple[Any, ...]:
    """Positional device tensors; floating inputs are cast to the engine's precision."""
    import torch
    dtype = torch_dtype(precision)
    out = []
    for n in names:
        t = torch.as_tensor(inputs[n])
        t = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
        out.append(t.contiguous())
    return tuple(out)


def as_outputs(result: Any, names: tuple[str, ...]) -> Outputs:
    """Name a module's tensor / tuple result by ``names``."""
    if not isinstance(result, (tuple, list)):
        result = (result,)
    if len(result) != len(names):
        raise ValueError(f"model returned {len(result)} outputs; expected {len(names)} ({list(names)})")
    return dict(zip(names, result))


class TorchModuleEngine(Engine):
    """Shared run path of the engines that call a torch module (eager, TorchScript, compiled).

    A subclass's ``_load_impl`` sets ``self._module`` (callable on positional device tensors)
    and ``self._names`` (the input order).
    """

    _module: Any = None
    _names: tuple[str, ...] = ()

    def _prepare_impl(self, inputs: Mapping[str, Any]) -> Any:
        return prepare_tensors(inputs, self._names, self.precision, self.device)

    def _run_impl(self, prepared: Any) -> Outputs:
        import torch
        with torch.inference_mode():
            return as_outputs(self._module(*prepared), self._output_names)

    def _step_impl(self, inputs: Mapping[str, Any]) -> Outputs:
        import torch
        # prepared under inference mode too: a KV cache fed back is the last step's outputs (inference
        # tensors), and a copy made outside it (.contiguous() of a strided one) is a normal tensor.
        # Mixed, they alternate the inputs' dispatch keys from step to step, and torch.compile guards on
        # them: measured on tiny-gpt2, 6 graphs compiled for one bs1 generation instead of 3, near
        # dynamo's recompile limit (8), past which it runs the step eagerly without an error
        with torch.inference_mode():
            return self._run_impl(self._prepare_impl(inputs))

    def _close_impl(self) -> None:
        self._module = None
