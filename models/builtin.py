"""The built-in models and pipelines, registered when a front end asks for them.

Nothing registers as a side effect of an import: the pytest plugin, the memory child, the CLI's
commands and the tools call :func:`register_builtin_models` once, and a user's own models
(``hf:``/``onnx:`` sources, code that calls ``register_model``) are registered beside them.
"""
from __future__ import annotations

_done = False


def register_builtin_models() -> None:
    """Register the zoo (torchvision CNNs, BERT-family encoders, the trained digits models), the
    decoders and the vision-language pipelines; a second call does nothing."""
    global _done
    if _done:
        return
    from . import decoder, vlm, zoo
    zoo.register_builtin()
    decoder.register_builtin()
    vlm.register_builtin()
    _done = True
