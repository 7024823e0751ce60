"""hf: directories run as the model they are: a masked LM, a token classifier, a question-answering
head are served with their own outputs, config.json untouched. The models are seeded tiny BERTs
saved with save_pretrained, with a 25-token amino-acid tokenizer built here (nothing downloaded)."""
from __future__ import annotations

import json

import pytest
import torch

from infermatrix.core.schema import Case
from infermatrix.engines.cache import EngineCache
from infermatrix.models.registry import get_model
from infermatrix.models.sources import SourceError, resolve
from infermatrix.runner.session import RunSession

AMINO = "ACDEFGHIKLMNPQRSTVWY"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SEQ_LEN = 24


def amino_tokenizer():
    """One token per amino-acid letter (25 in all with the specials), as protein models tokenize."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {t: i for i, t in enumerate(SPECIAL + list(AMINO))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(Regex("."), "isolated")])
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def bert_dir(root, head: str, **config):
    """A seeded tiny ``Bert{head}`` directory with the amino-acid tokenizer."""
    import transformers as tf
    torch.manual_seed(0)
    tok = amino_tokenizer()
    cfg = tf.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, **config)
    path = root / f"bert-{head.lower()}-{root.name}"
    getattr(tf, f"Bert{head}")(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    return {head: bert_dir(root, head, **({"num_labels": 4} if head == "ForTokenClassification" else {}))
            for head in ("ForMaskedLM", "ForTokenClassification", "ForQuestionAnswering", "ForMultipleChoice")}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = RunSession(EngineCache(tmp_path_factory.mktemp("cache")))
    yield s
    s.close()


@pytest.mark.parametrize("head,outputs,auto", [
    ("ForMaskedLM", ("logits",), "AutoModelForMaskedLM"),
    ("ForTokenClassification", ("logits",), "AutoModelForTokenClassification"),
    ("ForQuestionAnswering", ("start_logits", "end_logits"), "AutoModelForQuestionAnswering"),
])
def test_a_task_head_runs_as_the_model_it_is(heads, head, outputs, auto):
    import transformers
    config_before = (heads[head] / "config.json").read_bytes()
    spec = get_model(resolve(f"hf:{heads[head]}", seq_len=SEQ_LEN))
    assert (spec.task, spec.output_names) == ("classification", outputs)
    assert f"Bert{head}" in spec.note
    batch = spec.inputs(3, seed=1)
    model = getattr(transformers, auto).from_pretrained(str(heads[head]), local_files_only=True,
                                                        attn_implementation="eager").eval()
    with torch.inference_mode():
        got = spec.build_module()(*(batch[n] for n in spec.input_names))
        want = model(**batch)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(outputs)
    for name, tensor in zip(outputs, got):  # the head's own output, not the encoder's hidden state
        torch.testing.assert_close(tensor, getattr(want, name))
    if head == "ForMaskedLM":
        assert got[0].shape == (3, SEQ_LEN, 25), "logits over the 25-token vocabulary at every position"
    assert (heads[head] / "config.json").read_bytes() == config_before, "config.json is read, never edited"


def test_a_masked_lm_exports_and_runs_on_onnxruntime_like_eager(heads, session):
    name = resolve(f"hf:{heads['ForMaskedLM']}", seq_len=SEQ_LEN)
    report = session.equivalence(Case(name, "onnxruntime", "fp32", 2, "cpu"))
    assert report.passed, report.render()
    assert report.outputs[0].top1 == 1.0, "argmax over the vocabulary at every position"


def test_question_answering_exports_both_outputs(heads, session):
    name = resolve(f"hf:{heads['ForQuestionAnswering']}", seq_len=SEQ_LEN)
    report = session.equivalence(Case(name, "onnxruntime", "fp32", 2, "cpu"))
    assert report.passed and sorted(o.name for o in report.outputs) == ["end_logits", "start_logits"], report.render()


def test_a_head_it_cannot_serve_is_named_with_the_supported_ones(heads):
    with pytest.raises(SourceError, match=r"BertForMultipleChoice is not one infermatrix can serve; supported: "
                                          r".*\*ForMaskedLM.*\*ForQuestionAnswering"):
        resolve(f"hf:{heads['ForMultipleChoice']}", seq_len=SEQ_LEN)


def test_an_architecture_list_picks_the_head_not_the_bare_encoder(heads, tmp_path):
    """``architectures`` wins over ``model_type``: a BertForMaskedLM directory is never the bare BertModel."""
    import shutil
    copy = shutil.copytree(heads["ForMaskedLM"], tmp_path / "mlm-copy")
    config = json.loads((copy / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"] and config["model_type"] == "bert"
    spec = get_model(resolve(f"hf:{copy}", seq_len=SEQ_LEN))
    assert spec.output_names == ("logits",) and spec.task == "classification"
