"""Review fixes around model sources: hf:/onnx: models in the memory subprocess, batch-1 onnx:
files in the matrix, calibration text kept apart from evaluation text, config edge cases
(quoted tolerances, --overhead-model sources, INFERMATRIX_CACHE precedence, --dim merging, a
source named twice, unknown per-model dims) and input shapes in a latency case's extra_info."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from infermatrix.engines import ENGINES
from infermatrix.engines.cache import EngineCache
from infermatrix.fixtures.config import build_run_config
from infermatrix.fixtures.matrix import Case, plan_cases
from infermatrix.fixtures.option_table import BY_KEY
from infermatrix.runner.session import RunSession
from infermatrix.models.hf_inputs import SentencePrompts, TokenizedSentences, calibration_sentences, sentences
from infermatrix.models.registry import CALIBRATION_SEED, EVAL_SEED, ModelSpec, get_model
from infermatrix.models.sources import SourceError, registered_source, resolve
from infermatrix.runner.memory import engine_memory


class TokenModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(100, 8)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        return self.fc((self.emb(input_ids) * attention_mask.unsqueeze(-1).float()).mean(1))


def export(module, path: Path, args: tuple, names: list[str], axes: dict | None) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def wordpiece(texts):
    """A BERT-style tokenizer trained offline on ``texts`` (every word in its vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=900, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(s, tok.token_to_id(s)) for s in ("[CLS]", "[SEP]")])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fix-onnx")
    ids, mask = torch.randint(0, 100, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}}
    tok = export(TokenModel(), d / "fix-tok.onnx", (ids, mask), ["input_ids", "attention_mask"], axes)
    return {"tok": tok, "b1": export(TokenModel(), d / "fix-b1.onnx", (ids[:1], mask[:1]),
                                     ["input_ids", "attention_mask"], None)}


def copy(src: Path, stem: str, tmp_path: Path) -> Path:
    return Path(shutil.copyfile(src, tmp_path / f"{stem}.onnx"))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    import transformers as tf
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("fix-hf") / "fix-bert"
    tok = wordpiece(sentences())
    tf.BertForSequenceClassification(tf.BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=3)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = RunSession(EngineCache(tmp_path_factory.mktemp("fix-cache")))
    yield s
    s.close()


def build(tmp_path: Path, env: dict | None = None, **cli):
    return build_run_config(cli, rootdir=tmp_path, env=env or {})


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


# ---- A: hf:/onnx: models in the per-engine memory subprocess ----
def test_a_registered_source_gives_its_entry_and_settings(files):
    name = resolve(f"onnx:{files['tok']}", dims={"seq": 12, "other": 3})
    assert registered_source(name) == (f"onnx:{files['tok']}", 128, {"seq": 12})   # the graph's own dims
    assert registered_source("tiny-cnn") is None


@pytest.mark.parametrize("source,engine", [("onnx", "onnxruntime"), ("hf", "torch")])
def test_memory_of_a_source_model_is_measured_in_the_subprocess(files, hf_dir, session, source, engine):
    if not ENGINES[engine].is_installed():
        pytest.skip(f"{engine} is not installed")
    name = resolve(f"onnx:{files['tok']}", dims={"seq": 12}) if source == "onnx" else resolve(f"hf:{hf_dir}", seq_len=32)
    case = Case(name, engine, "fp32", 2, "cpu")
    info = engine_memory(case, session.engine(case).entry.path, session.threads)
    assert "memory_error" not in info, info["memory_error"]
    assert info["load_rss_bytes"] is not None and info["run_peak_rss_bytes"] is not None


def test_the_source_shim_scenarios_import_pulls_in_nothing_else():
    """runner/memory.py imports core/source_shim.py: it must stay free of report and engine code."""
    code = ("import sys, infermatrix.core.source_shim; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('infermatrix', 'torch', 'numpy', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['infermatrix', 'infermatrix.core', 'infermatrix.core.source_shim']"


# ---- B: a batch-1 onnx: file ----
def test_a_batch_one_file_skips_other_batch_sizes_and_caps_the_offline_batch(files, tmp_path):
    run = build(tmp_path, models=f"onnx:{files['b1']}", engines="onnxruntime", precisions="fp32", batch_sizes="1,8",
                devices="cpu")
    reasons = {p.case.batch_size: p.skip_reason for p in plan_cases(run.matrix)}
    assert reasons[1] is None and "the ONNX file fixes the batch axis at 1" in reasons[8]
    assert get_model("fix-b1").fixed_batch == 1 and run.load.offline_batch == 1
    assert build(tmp_path, models="tiny-cnn", batch_sizes="1,8").load.offline_batch == 8


# ---- C: calibration text apart from evaluation text ----
def squeezed(text: str) -> str:
    return text.lower().replace(" ", "")


def test_the_sentence_pools_are_disjoint_ascii_and_big_enough():
    evaluation, calibration = sentences(), calibration_sentences()
    assert len(evaluation) >= 32 and len(calibration) >= 32
    assert not {squeezed(s) for s in evaluation} & {squeezed(s) for s in calibration}
    assert all(s.isascii() for s in evaluation + calibration)


def test_calibration_batches_hold_no_evaluation_sentence():
    tok = wordpiece(sentences() + calibration_sentences())
    names = ("input_ids", "attention_mask")
    spec = ModelSpec("fix-calibration-probe", torch.nn.Identity, TokenizedSentences(tok, 64, names), names)

    def decoded(batch) -> set[str]:
        return {squeezed(tok.decode(ids[mask.astype(bool)], skip_special_tokens=True))
                for ids, mask in zip(batch["input_ids"], batch["attention_mask"])}
    calibrated = set().union(*(decoded(b) for b in spec.calibration()()))
    evaluated = set().union(*(decoded({k: v.numpy() for k, v in spec.inputs(bs, seed=seed).items()})
                              for bs in (1, 8, len(sentences())) for seed in (0, EVAL_SEED)))
    assert calibrated and evaluated and not calibrated & evaluated
    assert calibrated <= {squeezed(s) for s in calibration_sentences()}


class CharTokenizer:
    """One id per character: decoded text is exact."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}


def test_decoder_inputs_for_calibration_seeds_come_from_the_calibration_text():
    prompts = SentencePrompts(CharTokenizer(), None, 1, 1, 4, ("past_key", "past_value"))
    for seed, own, other in ((CALIBRATION_SEED, calibration_sentences(), sentences()),
                             (EVAL_SEED, sentences(), calibration_sentences())):
        rows = ["".join(map(chr, row)) for row in prompts.prompt(4, 12, seed).tolist()]
        assert all(any(s.startswith(r) for s in own) and not any(s.startswith(r) for s in other) for r in rows), rows
        assert torch.equal(prompts.step_inputs(4, seed)["input_ids"], prompts.prompt(4, 12, seed)[:, :2])


# ---- D: config edge cases ----
def test_a_quoted_tolerance_is_a_usage_error_naming_the_key_and_file(tmp_path):
    path = toml(tmp_path, 'models = [{ source = "tiny-cnn", tolerances = { int8 = { min_cosine = "0.98", '
                          'reason = "x" } } }]\n')
    with pytest.raises(pytest.UsageError, match=r"run\.toml: models\[0\]\.tolerances\.int8\.min_cosine = '0\.98': "
                                                r"expected a number >= 0 and <= 1, not a string"):
        build(tmp_path, config=str(path))


def test_the_overhead_model_may_be_a_source(files, tmp_path):
    source = copy(files["tok"], "fix-overhead", tmp_path)
    run = build(tmp_path, models="tiny-cnn", overhead_model=f"onnx:{source}", dims=["seq=6"])
    assert run.matrix.overhead_model == "fix-overhead" and get_model("fix-overhead").inputs(1)["input_ids"].shape == (1, 6)
    # the same source in models with its own table: resolved with that table's settings, not a conflict
    path = toml(tmp_path, f'models = [{{ source = "onnx:{source}", dims = {{ seq = 6 }} }}]\n')
    assert build(tmp_path, config=str(path), overhead_model=f"onnx:{source}").matrix.overhead_model == "fix-overhead"
    with pytest.raises(pytest.UsageError, match=r"--overhead-model = 'nope': unknown model; valid values: .*tiny-cnn"):
        build(tmp_path, overhead_model="nope")


def test_the_environment_cache_beats_the_config_file_and_the_flag_beats_both(tmp_path):
    path = toml(tmp_path, 'engine_cache = "from-file"\n')
    env = {"INFERMATRIX_CACHE": str(tmp_path / "from-env")}
    assert build(tmp_path, config=str(path)).engine_cache == tmp_path / "from-file"
    run = build(tmp_path, env=env, config=str(path))
    assert run.engine_cache == tmp_path / "from-env" and run.origins["engine_cache"] == "INFERMATRIX_CACHE"
    assert build(tmp_path, env=env, config=str(path), engine_cache=str(tmp_path / "flag")).engine_cache == tmp_path / "flag"
    assert "then $INFERMATRIX_CACHE, then engine_cache in the config file" in BY_KEY["engine_cache"].help


def test_command_line_dims_merge_into_a_models_own_table(tmp_path, monkeypatch):
    calls = {}

    def fake(entry, *, seq_len, dims, strict_dims=()):
        calls[entry] = (dict(dims), tuple(strict_dims))
        return "tiny-cnn"
    monkeypatch.setattr("infermatrix.fixtures.config.resolve", fake)
    path = toml(tmp_path, 'models = [{ source = "onnx:m.onnx", dims = { seq = 8, h = 3 } }, "onnx:n.onnx"]\n')
    build(tmp_path, config=str(path), dims=["h=2", "w=5"])
    assert calls[f"onnx:{tmp_path / 'm.onnx'}"] == ({"seq": 8, "h": 2, "w": 5}, ("seq", "h"))
    assert calls[f"onnx:{tmp_path / 'n.onnx'}"] == ({"h": 2, "w": 5}, ())   # the run's dims: not checked


def test_a_source_named_twice_with_other_settings_is_an_error(files, hf_dir, tmp_path):
    twice = copy(files["tok"], "fix-twice", tmp_path)
    assert resolve(f"onnx:{twice}", dims={"seq": 12}) == resolve(f"onnx:{twice}", dims={"seq": 12, "x": 1})
    with pytest.raises(SourceError, match=r"named twice with different settings: dims \{'seq': 12\} and dims "
                                          r"\{'seq': 16\}"):
        resolve(f"onnx:{twice}", dims={"seq": 16})
    path = toml(tmp_path, f'models = [{{ source = "onnx:{copy(files["tok"], "fix-twice-file", tmp_path)}", '
                          'dims = { seq = 4 } }, { source = "onnx:fix-twice-file.onnx", dims = { seq = 5 } }]\n')
    with pytest.raises(pytest.UsageError, match=r"models\[1\]: .*dims \{'seq': 4\} and dims \{'seq': 5\}"):
        build(tmp_path, config=str(path))
    resolve(f"hf:{hf_dir}", seq_len=32)
    with pytest.raises(SourceError, match="seq_len=32 and seq_len=64"):
        resolve(f"hf:{hf_dir}", seq_len=64)


def test_an_unknown_name_in_a_models_own_dims_table_is_an_error(files, tmp_path):
    source = copy(files["tok"], "fix-strict", tmp_path)
    path = toml(tmp_path, f'models = [{{ source = "onnx:{source}", dims = {{ seq = 8, sequence = 4 }} }}]\n')
    with pytest.raises(pytest.UsageError, match=r"models\[0\]: .*dims 'sequence' of this model's own table is no "
                                                r"symbolic dim of the graph\. The graph's symbolic dims: seq \(used by "
                                                r"input_ids\[1\], attention_mask\[1\]\); batch axis: batch"):
        build(tmp_path, config=str(path))
    # a run-wide --dim must name a dim of one of the run's files (issue 16 item 20)
    with pytest.raises(pytest.UsageError, match=r"'height' names no symbolic dim of the run's onnx: models"):
        build(tmp_path, models=f"onnx:{source}", dims=["seq=8", "height=3"])


# ---- E: input shapes in extra_info ----
def test_a_latency_case_records_its_input_shapes(pytester, repo_root, files, tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    result = pytester.runpytest_subprocess(
        str(repo_root / "perf_tests" / "test_latency.py"), "--models", f"onnx:{files['tok']}", "--dim", "seq=12",
        "--engines", "onnxruntime", "--precisions", "fp32", "--batch-sizes", "2", "--devices", "cpu",
        "--latency-rounds", "3", "--no-engine-memory", "--engine-cache", str(tmp_path / "c"),
        "--benchmark-json", str(tmp_path / "run.json"), "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    [bench] = json.loads((tmp_path / "run.json").read_text())["benchmarks"]
    assert bench["extra_info"]["input_shapes"] == {"input_ids": [2, 12], "attention_mask": [2, 12]}
