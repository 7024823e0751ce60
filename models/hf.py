"""``hf:DIR``: a local Hugging Face model directory as a registered ModelSpec (DESIGN.md section 8).

What the directory holds decides what is measured (config.json's ``architectures``, else
its ``model_type``):

- ``*ForSequenceClassification``: text classification, output ``logits``;
- the other standard text heads run as the model they are (models/hf_heads.py):
  ``*ForMaskedLM`` and ``*ForTokenClassification`` give per-token ``logits``,
  ``*ForQuestionAnswering`` ``start_logits`` and ``end_logits``, ``*ForNextSentencePrediction``
  ``logits``;
- ``*ForImageClassification``: image classification on ``pixel_values``, output ``logits``;
- a bare encoder (``BertModel``, or no ``architectures``): task ``embedding``, output
  ``embeddings`` = the last hidden state mean-pooled over the attention mask;
- ``*ForCausalLM`` / ``*LMHeadModel``: token generation through a decoder step with an explicit
  KV cache, the contract of models/decoder.py, so the generation scenario runs it.

Inputs come from the directory's own tokenizer or image processor on real sample inputs
(models/hf_inputs.py), or on the user's own (models/user_inputs.py). Everything loads with
``local_files_only=True``; code shipped in the directory is never run (no ``trust_remote_code``);
weights load in float32 (the baseline).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch

from infermatrix.engines import TransformerHints

from .decoder import PAST, PRESENT, kv_names
from .hf_heads import ENCODER_OUTPUTS, KINDS, SUPPORTED, HeadOutputs, Kind, kind_of, model_class
from .hf_inputs import ProcessedImages, SentencePrompts, TokenizedSentences, sentences
from .hf_modules import CausalLMStep, EncoderOutputs, ImageLogits
from .registry import ModelSpec, register_model

#: (single file, sharded index) pairs save_pretrained writes, in the order transformers prefers them
WEIGHTS = (("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json"))
#: a slow tokenizer's vocabulary files: WordPiece, byte-level BPE (both files), SentencePiece
#: weight files: hashed through the module's state dict, not byte by byte
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".gguf"})
SLOW_VOCABS = (("vocab.txt",), ("vocab.json", "merges.txt"), ("spiece.model",), ("sentencepiece.bpe.model",),
               ("tokenizer.model",))
#: config model types whose ONNX graph ONNX Runtime's optimizer fuses as "bert" (BertOnnxModel
#: matches their embedding + attention subgraphs), and the vision transformer it knows as "vit"
BERT_LIKE = frozenset({"bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra"})
VIT_LIKE = frozenset({"vit"})
EMBEDDING_NOTE = "embeddings: mean-pooled last hidden state over the attention mask"


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict, after checking the directory and its weights are there."""
    if not path.is_dir():
        raise FileNotFoundError(f"Hugging Face model directory {path} does not exist (or is not a directory)")
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"config.json is missing in {path}")
    check_weights(path)
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config} is not valid JSON: {exc}") from exc


def check_weights(path: Path) -> None:
    """A single weights file, or a sharded index with every shard it names."""
    for single, index in WEIGHTS:
        if (path / single).is_file():
            return
        if (path / index).is_file():
            try:
                shards = sorted(set(json.loads((path / index).read_text(encoding="utf-8"))["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError) as exc:
                raise ValueError(f"{path / index} is not a sharded-weights index (no weight_map): {exc}") from exc
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise FileNotFoundError(f"weight shard {missing[0]} (of {len(shards)} named by {index}) is missing in "
                                        f"{path}" + (f"; also missing: {missing[1:]}" if missing[1:] else ""))
            return
    raise FileNotFoundError(f"{WEIGHTS[0][0]} (the weights) is missing in {path}, and so are a sharded {WEIGHTS[0][1]} "
                            f"and {WEIGHTS[1][0]}")


def check_preprocessing(path: Path, modality: str) -> None:
    """The tokenizer (fast tokenizer.json or a slow one's vocabulary) or the image processor."""
    if modality == "image":
        if not (path / "preprocessor_config.json").is_file():
            raise FileNotFoundError(f"preprocessor_config.json (the image processor) is missing in {path}")
        return
    if (path / "tokenizer.json").is_file() or any(all((path / f).is_file() for f in files) for files in SLOW_VOCABS):
        return
    raise FileNotFoundError(f"tokenizer.json is missing in {path}, and no slow tokenizer's vocabulary is there either "
                            f"(one of {[' + '.join(files) for files in SLOW_VOCABS]})")


def transformer_hints(config: Any) -> tuple[TransformerHints | None, str]:
    """ONNX Runtime fusion hints and the exporter to try first, by model type. BERT-family
    graphs get their Attention fused only from the TorchScript-based exporter (models/zoo.py)."""
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if config.model_type in BERT_LIKE and heads and hidden:
        return TransformerHints("bert", num_heads=heads, hidden_size=hidden), "torchscript"
    if config.model_type in VIT_LIKE and heads and hidden:
        # measured (tiny ViT, transformers 5.23 eager attention, ORT 1.31): SkipLayerNormalization
        # and BiasGelu fuse, Attention does not, with either exporter -- so the default one
        return TransformerHints("vit", num_heads=heads, hidden_size=hidden), "dynamo"
    return None, "dynamo"


def kv_layout(config: Any) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) of a causal LM's cache, from its config."""
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return layers, kv_heads, head_dim


def loaded(what: str, path: Path, auto: Any) -> Any:
    """``auto.from_pretrained(path)``, offline; a file that is there but unreadable (a truncated
    tokenizer.json gives a bare KeyError or JSONDecodeError) becomes a ValueError naming it."""
    try:
        return auto.from_pretrained(str(path), local_files_only=True)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{what} in {path} could not be loaded: {type(exc).__name__}: {exc}") from exc


def load_model(path: Path, kind: Kind) -> Any:
    import transformers
    return getattr(transformers, kind.auto).from_pretrained(
        str(path), local_files_only=True, attn_implementation="eager",  # exportable; what ORT's fusions recognise
        dtype=torch.float32).eval()


def register_hf_directory(path: Path, *, name: str, seq_len: int) -> ModelSpec:
    """Register the Hugging Face model in ``path`` under ``name``; inputs padded/truncated to
    ``seq_len`` tokens (text classifiers and encoders). FileNotFoundError for a missing or
    incomplete directory, ValueError for a model it cannot serve."""
    from transformers import AutoConfig
    path = Path(path).expanduser().resolve()
    raw = read_config(path)
    key = kind_of(raw, path)
    kind = KINDS[key]
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len}; expected >= 1")
    config = loaded("config.json", path, AutoConfig)
    cls = model_class(config, kind, path)
    takes = set(inspect.signature(cls.forward).parameters)
    arch = (raw.get("architectures") or [cls.__name__])[0]
    if kind.modality == "text" and "input_ids" not in takes:  # e.g. a bare ViTModel
        raise ValueError(f"{path.name}: {arch} takes no input_ids, so it is no text model; supported: {SUPPORTED}")
    check_preprocessing(path, kind.modality)
    hints, exporter = transformer_hints(config)
    common = {"transformer": hints, "onnx_exporter": exporter, "task": kind.task,
              # config and preprocessing change the model without changing a weight: keyed too
              "source_files": tuple(sorted(p for p in path.iterdir() if p.is_file() and p.suffix not in WEIGHT_SUFFIXES))}
    if kind.modality == "image":
        from transformers import AutoImageProcessor
        images = ProcessedImages(loaded("the image processor", path, AutoImageProcessor))
        spec = ModelSpec(name, lambda: ImageLogits(load_model(path, kind)), images, ("pixel_values",),
                         int8_scheme="static_per_channel",
                         note=f"hf {arch}: seeded synthetic {images.height}x{images.width} images through its "
                              "image processor", **common)
        return register_model(spec)

    from transformers import AutoTokenizer
    tokenizer = loaded("the tokenizer", path, AutoTokenizer)
    if kind.task == "generation":
        return register_model(_causal_spec(name, path, kind, config, tokenizer, arch))
    if getattr(config, "is_encoder_decoder", False) or not {"input_ids", "attention_mask"} <= takes:
        raise ValueError(f"{path.name}: {arch} does not take input_ids and attention_mask as an encoder does; "
                         f"supported: {SUPPORTED}")
    # the tokenizer's limit counts too: RoBERTa has 514 positions but takes 512 tokens
    limits = [v for v in (getattr(config, "max_position_embeddings", None), tokenizer.model_max_length)
              if isinstance(v, int) and v < 10**9]  # tokenizers without a limit say 1e30
    if limits and seq_len > min(limits):
        raise ValueError(f"seq_len={seq_len} exceeds the {min(limits)} tokens {arch} and its tokenizer take")
    names = ("input_ids", "attention_mask")
    if "token_type_ids" in takes and "token_type_ids" in tokenizer.model_input_names:
        names += ("token_type_ids",)
    pooled = kind.task == "embedding"
    inputs = TokenizedSentences(tokenizer, seq_len, names)
    text = f"{len(sentences())} sample sentences through its tokenizer at {seq_len} tokens"

    def factory() -> Any:
        model = load_model(path, kind)
        return EncoderOutputs(model, pooled) if key in ENCODER_OUTPUTS else HeadOutputs(model, kind.outputs)
    spec = ModelSpec(name, factory, inputs, names, kind.outputs, int8_scheme="dynamic",
                     note=f"hf {arch}: " + (f"{EMBEDDING_NOTE}; " if pooled else "") + text,
                     score_outputs=() if pooled else None, **common)
    return register_model(spec)


def _causal_spec(name: str, path: Path, kind: Kind, config: Any, tokenizer: Any, arch: str) -> ModelSpec:
    """A causal LM as a decoder step: KV-cache lengths are dynamic axes, int8 is weight-only
    and the TorchScript-based exporter goes first (models/decoder.py says why)."""
    layers, kv_heads, head_dim = kv_layout(config)
    past, present = kv_names(layers, PAST), kv_names(layers, PRESENT)
    prompts = SentencePrompts(tokenizer, getattr(config, "max_position_embeddings", None), layers, kv_heads,
                              head_dim, past)

    def factory() -> Any:
        step = CausalLMStep(load_model(path, kind), layers)
        check_cache_layout(step, prompts, past, arch)
        return step
    axes = {"input_ids": {1: "tokens"}, **{n: {2: "past"} for n in past}, **{n: {2: "total"} for n in present}}
    return ModelSpec(name, factory, prompts.step_inputs, ("input_ids", *past), ("logits", *present),
                     task="generation", int8_scheme="weight_only", onnx_exporter="torchscript", dynamic_axes=axes,
                     make_prompt=prompts.prompt, score_outputs=("logits",),
                     note=f"hf {arch}: greedy decoding; prompts are the sample sentences as running text through "
                          "its tokenizer")


def check_cache_layout(step: CausalLMStep, prompts: SentencePrompts, past: tuple[str, ...], arch: str) -> None:
    """One step on example inputs: the presents must be [B, KV heads, P+T, head dim] per layer,
    the layout the config promised; a model that caches otherwise is refused here, not
    mid-benchmark."""
    inputs = prompts.step_inputs(1, 0)
    with torch.inference_mode():
        out = step(*(inputs[n] for n in ("input_ids", *past)))
    want = (1, *prompts.kv_shape)
    got = [tuple(t.shape) for t in out[1:]]
    total = inputs["input_ids"].shape[1] + inputs[past[0]].shape[2]
    if len(got) != len(past) or any(g[:2] + g[3:] != want or g[2] != total for g in got):
        raise ValueError(f"{arch}'s KV cache is {got[:2]}... for {len(past) // 2} layers; expected "
                         f"[1, {want[1]}, {total}, {want[2]}] per key/value (DynamicCache layout)")
