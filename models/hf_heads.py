"""Which kind of model an ``hf:`` directory holds, read from config.json, and the head it runs as.

A directory runs as the model it is: ``architectures[0]``'s suffix picks the kind (a
``BertForMaskedLM`` is a masked LM, never silently the bare encoder under it), and the kind
names the transformers Auto class that loads it, the outputs it gives and the preprocessing
it needs. Only a config without ``architectures`` falls back to the bare model of its type.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Kind:
    """One kind of directory models/hf.py serves."""
    label: str          # shown in errors
    task: str           # ModelSpec.task
    auto: str           # the transformers Auto class that loads it
    mapping: str        # transformers.models.auto.modeling_auto mapping: config class -> model class
    modality: str       # "text" or "image": which preprocessing files it needs
    suffixes: tuple[str, ...] = ()          # architecture name endings that select it
    outputs: tuple[str, ...] = ("logits",)  # the model output's fields, in output_names order


KINDS = {
    "sequence-classification": Kind("*ForSequenceClassification (text classification)", "classification",
                                    "AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING",
                                    "text", ("ForSequenceClassification",)),
    "masked-lm": Kind("*ForMaskedLM (token logits over the vocabulary)", "classification", "AutoModelForMaskedLM",
                      "MODEL_FOR_MASKED_LM_MAPPING", "text", ("ForMaskedLM",)),
    "token-classification": Kind("*ForTokenClassification (per-token labels)", "classification",
                                 "AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING", "text",
                                 ("ForTokenClassification",)),
    "question-answering": Kind("*ForQuestionAnswering (start and end logits)", "classification",
                               "AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING", "text",
                               ("ForQuestionAnswering",), ("start_logits", "end_logits")),
    "next-sentence": Kind("*ForNextSentencePrediction", "classification", "AutoModelForNextSentencePrediction",
                          "MODEL_FOR_NEXT_SENTENCE_PREDICTION_MAPPING", "text", ("ForNextSentencePrediction",)),
    "image-classification": Kind("*ForImageClassification (image classification)", "classification",
                                 "AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING", "image",
                                 ("ForImageClassification",)),
    "causal-lm": Kind("*ForCausalLM / *LMHeadModel (generation)", "generation", "AutoModelForCausalLM",
                      "MODEL_FOR_CAUSAL_LM_MAPPING", "text", ("ForCausalLM", "LMHeadModel")),
    # last: "Model" ends every architecture name, so the heads above are tried first
    "embedding": Kind("a bare text encoder such as BertModel (embedding)", "embedding", "AutoModel", "MODEL_MAPPING",
                      "text", ("Model",), ("embeddings",)),
}
SUPPORTED = "; ".join(k.label for k in KINDS.values())
#: the kinds models/hf_modules.EncoderOutputs wraps (logits, or the pooled last hidden state);
#: the other text heads go through HeadOutputs, which returns every field the kind names
ENCODER_OUTPUTS = frozenset({"sequence-classification", "embedding"})


def kind_of(config: dict[str, Any], path: Path) -> str:
    """Which KINDS entry the config describes; a ValueError naming it otherwise."""
    architectures = config.get("architectures") or []
    arch = architectures[0] if architectures else None
    if arch is None:
        if not config.get("model_type"):
            raise ValueError(f"{path / 'config.json'} names neither architectures nor model_type")
        return "embedding"  # only a config is known: the bare model of its type
    for key, kind in KINDS.items():
        if arch.endswith(kind.suffixes):
            return key
    raise ValueError(f"{path.name}: architecture {arch} is not one infermatrix can serve; supported: {SUPPORTED}")


def model_class(config: Any, kind: Kind, path: Path) -> Any:
    """The transformers class the kind's Auto class would load (read from its mapping, so the
    input names are known without loading any weights)."""
    from transformers.models.auto import modeling_auto
    try:
        return getattr(modeling_auto, kind.mapping)[type(config)]
    except KeyError:
        raise ValueError(f"{path.name}: model_type {config.model_type!r} has no {kind.auto} class in transformers; "
                         f"supported: {SUPPORTED}") from None


class HeadOutputs(torch.nn.Module):
    """A transformers text head taking positional tensors in input_names order and returning the
    output fields its kind names (one tensor, or a tuple in that order)."""

    def __init__(self, inner: Any, fields: tuple[str, ...]) -> None:
        super().__init__()
        self.inner = inner  # the same attribute EncoderOutputs uses: state-dict keys match
        self.fields = fields

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> Any:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra)
        values = tuple(getattr(out, f) for f in self.fields)
        return values[0] if len(values) == 1 else values
