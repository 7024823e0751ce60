"""The modules an ``hf:`` directory's model is wrapped in, so every engine calls it the same way:
positional tensors in input_names order, named outputs (models/hf.py registers them)."""
from __future__ import annotations

from typing import Any

import torch


class EncoderOutputs(torch.nn.Module):
    """A transformers encoder or classifier taking positional tensors in input_names order.

    Returns the logits, or (``pooled``) the last hidden state averaged over the positions the
    attention mask keeps -- padding must not move a sentence's embedding.
    """

    def __init__(self, inner: Any, pooled: bool) -> None:
        super().__init__()
        self.inner = inner
        self.pooled = pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra)
        if not self.pooled:
            return out.logits
        hidden = out.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class ImageLogits(torch.nn.Module):
    """A transformers image classifier taking ``pixel_values`` positionally, returning logits."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.inner(pixel_values=pixel_values).logits


class CausalLMStep(torch.nn.Module):
    """Any transformers causal LM as one decoder step with a flat KV cache (models/decoder.py's
    contract): ``(input_ids, past_key_0, past_value_0, ...) -> (last logits, present_key_0, ...)``.
    DecoderStep reaches into GPT-2's modules; this goes through the model's own forward."""

    def __init__(self, lm: Any, layers: int) -> None:
        super().__init__()
        self.lm = lm
        self.layers = layers

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers.cache_utils import DynamicCache
        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] + past[0].shape[2]
        out = self.lm(input_ids=input_ids, past_key_values=cache, position_ids=positions, use_cache=True)
        presents = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits[:, -1, :], *presents)
