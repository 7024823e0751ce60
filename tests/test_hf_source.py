"""hf:DIR sources: local Hugging Face directories, built here from seeded tiny configs with
save_pretrained and tokenizers trained offline on the sample sentences (nothing downloaded)."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from infermatrix.engines import ENGINES
from infermatrix.engines.cache import EngineCache
from infermatrix.core.schema import Case
from infermatrix.runner.session import RunSession
from infermatrix.models.hf_inputs import sentences, synthetic_image
from infermatrix.models.registry import get_model
from infermatrix.models.sources import SourceError, resolve
from infermatrix.scenarios.generation import compare_generations, generate

SEQ_LEN = 32


def wordpiece_tokenizer():
    """A BERT-style WordPiece tokenizer trained on the sample sentences (every word in vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(sentences(), trainers.WordPieceTrainer(vocab_size=600, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(s, tok.token_to_id(s)) for s in ("[CLS]", "[SEP]")])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def bpe_tokenizer(bos: bool):
    """A byte-level BPE tokenizer (GPT-2 style; with ``bos`` a Llama-style <s> before every text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<s>"]
    tok.train_from_iterator(sentences(), trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|endoftext|>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def build_directories(root):
    """Seeded tiny models of each kind, saved the way the Hub ships them."""
    import transformers as tf
    torch.manual_seed(0)
    dirs = {k: root / f"{k}-{root.name}" for k in ("bert-cls", "bert-enc", "vit", "gpt2", "llama", "bert-mlm")}
    wp = wordpiece_tokenizer()
    bert = tf.BertConfig(vocab_size=len(wp), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, num_labels=3)
    for key, model in (("bert-cls", tf.BertForSequenceClassification(bert)), ("bert-enc", tf.BertModel(bert)),
                       ("bert-mlm", tf.BertForMaskedLM(bert))):
        model.save_pretrained(dirs[key])
        wp.save_pretrained(dirs[key])
    vit = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=5)
    tf.ViTForImageClassification(vit).save_pretrained(dirs["vit"])
    tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(dirs["vit"])
    for key, bos in (("gpt2", False), ("llama", True)):
        tok = bpe_tokenizer(bos)
        ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
        if key == "gpt2":  # 0.2, not GPT-2's 0.02: a random LM then varies its greedy tokens
            lm = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2,
                                                  n_head=2, initializer_range=0.2, **ids))
        else:  # grouped-query attention and a head_dim that is not hidden/heads: the cache layout from the config
            lm = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                    head_dim=12, max_position_embeddings=128, initializer_range=0.2,
                                                    **ids))
        lm.save_pretrained(dirs[key])
        tok.save_pretrained(dirs[key])
    return dirs


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return build_directories(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = RunSession(EngineCache(tmp_path_factory.mktemp("cache")))
    yield s
    s.close()


def register(path) -> str:
    return resolve(f"hf:{path}", seq_len=SEQ_LEN)


def squeezed(text: str) -> str:
    return text.lower().replace(" ", "")


def test_classifier_inputs_are_its_tokenizer_on_the_sample_sentences(dirs):
    from transformers import AutoTokenizer
    spec = get_model(register(dirs["bert-cls"]))
    assert (spec.task, spec.output_names, spec.int8_scheme, spec.onnx_exporter) == (
        "classification", ("logits",), "dynamic", "torchscript")
    assert spec.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert (spec.transformer.model_type, spec.transformer.num_heads, spec.transformer.hidden_size) == ("bert", 2, 32)
    tok = AutoTokenizer.from_pretrained(str(dirs["bert-cls"]), local_files_only=True)
    batch = spec.inputs(6, seed=3)
    assert all(t.shape == (6, SEQ_LEN) and t.dtype == torch.int64 for t in batch.values())
    known = {squeezed(s) for s in sentences()}
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
        text = squeezed(tok.decode(ids[mask.bool()], skip_special_tokens=True))
        full = mask.all()  # a sentence longer than SEQ_LEN tokens is truncated: then a prefix
        assert text in known if not full else any(s.startswith(text) for s in known), text
        assert (ids[~mask.bool()] == tok.pad_token_id).all()
    decoded = [tok.decode(r, skip_special_tokens=True) for r in batch["input_ids"]]
    assert len(set(decoded)) == 6, "a batch takes distinct sentences"
    assert all(torch.equal(batch[n], spec.inputs(6, seed=3)[n]) for n in batch), "seeded: the same batch again"
    assert not torch.equal(batch["input_ids"], spec.inputs(6, seed=4)["input_ids"])
    assert spec.inputs(50, seed=0)["input_ids"].shape == (50, SEQ_LEN)  # more rows than sentences: wraps
    lengths = spec.inputs(len(sentences()), seed=0)["attention_mask"].sum(1)
    assert lengths.min() < SEQ_LEN // 2 and (lengths == SEQ_LEN).sum() > 2, "padded and truncated sentences both"


# every shipped engine (not the test doubles other modules register) at every CPU precision but
# bf16, which CPUs without AVX512-BF16 emulate 6-50x slower; int8 where the engine builds the
# model's own scheme (dynamic). torch fp32 is the reference itself.
ENGINE_CASES = [(n, p) for n, cls in sorted(ENGINES.items()) if cls.__module__.startswith("infermatrix.engines.")
                for p in sorted(cls.capabilities.get("cpu", ())) if p != "bf16" and (n, p) != ("torch", "fp32")
                and (p != "int8" or cls.scheme_problem("dynamic") is None)]


@pytest.mark.parametrize("engine,precision", ENGINE_CASES, ids=[f"{e}-{p}" for e, p in ENGINE_CASES])
def test_classifier_runs_on_every_engine_like_eager_fp32(dirs, session, engine, precision):
    report = session.equivalence(Case(register(dirs["bert-cls"]), engine, precision, 2, "cpu"))
    assert report.passed, report.render()
    if precision == "int8":  # the policy's int8 row, with margin on these real-token inputs
        assert report.outputs[0].cosine > 0.999 and report.outputs[0].sqnr_db > 25, report.render()


def test_bare_encoder_embeds_by_masked_mean_pooling(dirs, session):
    from transformers import AutoModel
    name = register(dirs["bert-enc"])
    spec = get_model(name)
    assert (spec.task, spec.output_names) == ("embedding", ("embeddings",)) and "mean-pooled" in spec.note
    batch = spec.inputs(3, seed=1)
    with torch.inference_mode():
        got = spec.build_module()(*(batch[n] for n in spec.input_names))
        bert = AutoModel.from_pretrained(str(dirs["bert-enc"]), local_files_only=True, attn_implementation="eager")
        for row in range(3):  # the sentence alone, unpadded: padding must not move its embedding
            keep = batch["attention_mask"][row].bool()
            alone = bert(input_ids=batch["input_ids"][row, keep][None]).last_hidden_state.mean(1)[0]
            torch.testing.assert_close(got[row], alone, atol=1e-5, rtol=1e-4)
    for engine, precision in (("onnxruntime", "fp32"), ("onnxruntime", "int8")):
        report = session.equivalence(Case(name, engine, precision, 2, "cpu"))
        assert report.passed, report.render()


def test_image_classifier_runs_on_seeded_images_through_its_processor(dirs, session):
    from transformers import AutoImageProcessor
    name = register(dirs["vit"])
    spec = get_model(name)
    assert (spec.task, spec.input_names, spec.int8_scheme, spec.transformer.model_type) == (
        "classification", ("pixel_values",), "static_per_channel", "vit")
    pixels = spec.inputs(3, seed=2)["pixel_values"]
    processor = AutoImageProcessor.from_pretrained(str(dirs["vit"]), local_files_only=True)
    want = processor(images=[synthetic_image(2, i, 32, 32) for i in range(3)], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (3, 3, 32, 32) and torch.equal(pixels, want)
    assert not torch.equal(pixels[0], pixels[1]) and pixels.std() > 0.3, "varied pictures, not one flat colour"
    assert not torch.equal(pixels, spec.inputs(3, seed=3)["pixel_values"])
    for engine, precision in (("onnxruntime", "fp32"), ("onnxruntime", "int8")):
        report = session.equivalence(Case(name, engine, precision, 2, "cpu"))
        assert report.passed, report.render()


@pytest.mark.parametrize("key", ["gpt2", "llama"])
def test_causal_lm_step_decodes_like_the_model_without_a_cache(dirs, session, key):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    name = register(dirs[key])
    spec = get_model(name)
    heads, head_dim = {"gpt2": (2, 16), "llama": (2, 12)}[key]  # the KV cache's, from each config
    assert spec.task == "generation" and spec.int8_scheme == "weight_only" and spec.input_names[0] == "input_ids"
    assert spec.input_names[1:] == ("past_key_0", "past_value_0", "past_key_1", "past_value_1")
    assert spec.inputs(2, seed=0)["past_key_1"].shape == (2, heads, 3, head_dim)
    tok = AutoTokenizer.from_pretrained(str(dirs[key]), local_files_only=True)
    prompt = spec.make_prompt(2, 12, 5)
    running = [" ".join(sentences()[k:] + sentences()[:k]) for k in range(len(sentences()))]
    for row in prompt:
        if key == "llama":
            assert row[0] == tok.bos_token_id, "a Llama-style prompt starts with its BOS, as in training"
        text = tok.decode(row, skip_special_tokens=True)
        assert any(r.startswith(text) for r in running), f"{text!r} is not running sample text"
    eager = session.engine(Case(name, "torch", "fp32", 2, "cpu")).engine
    ref = generate(eager, spec, prompt, 8)
    lm = AutoModelForCausalLM.from_pretrained(str(dirs[key]), local_files_only=True, attn_implementation="eager")
    seq = prompt.clone()
    with torch.inference_mode():  # greedy without a cache: the whole sequence again for every token
        for _ in range(8):
            seq = torch.cat([seq, lm(input_ids=seq, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
    assert ref.tokens.tolist() == seq[:, 12:].tolist()
    assert len(set(ref.tokens.ravel().tolist())) > 2, "a decoder stuck on one token makes the check vacuous"
    if key == "gpt2":
        onnx = session.engine(Case(name, "onnxruntime", "fp32", 2, "cpu")).engine
        report = compare_generations("t", ref, generate(onnx, spec, prompt, 8), "fp32", trained=False)
        assert report.passed, report.render()
        weight_only = session.engine(Case(name, "onnxruntime", "int8", 2, "cpu")).engine
        int8 = compare_generations("t", ref, generate(weight_only, spec, prompt, 8), "int8", trained=False)
        assert int8.passed and int8.first_logits_cosine > 0.99, int8.render()


def damaged(source, tmp_path, *remove):
    """A copy of ``source`` (under a name of its own) without the files ``remove`` names."""
    target = tmp_path / f"{source.name}-{tmp_path.name}"
    shutil.copytree(source, target)
    for name in remove:
        (target / name).unlink()
    return target


@pytest.mark.parametrize("key,remove,missing", [
    ("bert-cls", ["config.json"], "config.json"),
    ("bert-cls", ["model.safetensors"], "model.safetensors"),
    ("bert-cls", ["tokenizer.json", "tokenizer_config.json"], "tokenizer.json"),
    ("vit", ["preprocessor_config.json"], "preprocessor_config.json"),
])
def test_incomplete_directory_names_the_missing_file(dirs, tmp_path, key, remove, missing):
    from infermatrix.models.hf import register_hf_directory
    target = damaged(dirs[key], tmp_path, *remove)
    with pytest.raises(FileNotFoundError, match=f"{missing}.* missing in {re.escape(str(target))}"):
        register_hf_directory(target, name=target.name, seq_len=SEQ_LEN)
    with pytest.raises(SourceError, match=f"hf:{re.escape(str(target))}: {missing}"):
        register(target)


def test_sharded_weights_load_and_a_missing_shard_is_named(dirs, tmp_path):
    from transformers import AutoModel
    sharded = tmp_path / f"sharded-{tmp_path.name}"
    AutoModel.from_pretrained(str(dirs["bert-enc"]), local_files_only=True).save_pretrained(sharded, max_shard_size="20KB")
    shutil.copy(dirs["bert-enc"] / "tokenizer.json", sharded)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (sharded / "model.safetensors").exists()
    spec = get_model(register(sharded))
    reference = get_model(register(dirs["bert-enc"])).build_module().state_dict()
    torch.testing.assert_close(spec.build_module().state_dict(), reference)
    broken = damaged(sharded, tmp_path, shards[1])
    with pytest.raises(SourceError, match=f"weight shard {shards[1]} .* missing in {re.escape(str(broken))}"):
        register(broken)


def test_pytorch_bin_weights_are_read_without_unpickling_code(dirs, tmp_path):
    target = damaged(dirs["bert-enc"], tmp_path, "model.safetensors")
    state = get_model(register(dirs["bert-enc"])).build_module().inner.state_dict()
    torch.save(state, target / "pytorch_model.bin")
    loaded = get_model(register(target)).build_module().inner.state_dict()
    assert all(np.array_equal(loaded[k].numpy(), v.numpy()) for k, v in state.items())


def test_unservable_architecture_names_it_and_the_supported_kinds(dirs, tmp_path):
    target = damaged(dirs["bert-mlm"], tmp_path)  # a masked LM is served (tests/test_hf_heads.py); multiple choice is not
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMultipleChoice"]}))
    with pytest.raises(SourceError, match=r"BertForMultipleChoice is not one infermatrix can serve; supported: "
                                          r"\*ForSequenceClassification.*ForCausalLM"):
        register(target)
    with pytest.raises(SourceError, match="does not exist"):
        register(tmp_path / "no-such-model")


def test_unreadable_tokenizer_is_named_not_a_bare_key_error(dirs, tmp_path):
    target = damaged(dirs["bert-cls"], tmp_path)
    (target / "tokenizer.json").write_text('{"truncated": true}')
    with pytest.raises(SourceError, match=f"the tokenizer in {re.escape(str(target))} could not be loaded: KeyError"):
        register(target)
