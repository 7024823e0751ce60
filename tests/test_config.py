"""The run configuration: a config file, pyproject.toml's [tool.infermatrix], the command line
over both, per-model tables, usage errors, and ``infermatrix config --print`` read back."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from infermatrix.commands.main import main as cli_main
from infermatrix.fixtures.config import build_run_config
from infermatrix.fixtures.config_file import read_config
from infermatrix.runner.equivalence import DEFAULT_POLICY
from infermatrix.fixtures.option_table import SETTINGS
from infermatrix.models.registry import MODELS

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "infermatrix.toml"
MATRIX_TOML = """
models = ["tiny-cnn", "tiny-bert"]
engines = "torch,onnxruntime"          # a comma string is a list too
precisions = ["fp32", "int8"]
batch_sizes = [2, 4]
devices = ["cpu"]
int8_schemes = ["dynamic", "static_per_channel"]
"""
MATRIX_ARGS = ["--models", "tiny-cnn,tiny-bert", "--engines", "torch,onnxruntime", "--precisions", "fp32,int8",
               "--batch-sizes", "2,4", "--devices", "cpu", "--int8-schemes", "dynamic,static_per_channel"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "INFERMATRIX_CACHE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def registry(monkeypatch):
    """Tolerance overrides re-register a model: put every entry back afterwards."""
    for name in list(MODELS):
        monkeypatch.setitem(MODELS, name, MODELS[name])


def collected(pytester, repo_root, *args) -> list[str]:
    result = pytester.runpytest_subprocess(str(repo_root / "perf_tests" / "test_latency.py"), "--collect-only", "-q",
                                           "-p", "no:cacheprovider", *args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    return [line.split("::", 1)[1] for line in result.stdout.lines if "::test_latency[" in line]


def build(tmp_path: Path, env: dict | None = None, **cli):
    return build_run_config(cli, rootdir=tmp_path, env=env or {})


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_config_file_gives_the_matrix_of_the_same_command_line(pytester, repo_root):
    toml = write(pytester.path / "matrix.toml", MATRIX_TOML)
    from_file = collected(pytester, repo_root, "--config", str(toml))
    from_cli = collected(pytester, repo_root, *MATRIX_ARGS)
    assert from_file == from_cli
    assert "test_latency[tiny-bert-onnxruntime-int8-dynamic-bs4-cpu]" in from_file
    assert "test_latency[tiny-cnn-torch-fp32-bs2-cpu]" in from_file


def test_pyproject_table_is_read_by_default_and_the_command_line_overrides_it(pytester, repo_root):
    # precisions pinned: the default adds bf16 where the CPU has it natively, and CPUs differ
    pytester.makepyprojecttoml('[tool.infermatrix]\nmodels = ["tiny-cnn"]\nengines = ["torch"]\nbatch_sizes = [3]\n'
                               'precisions = ["fp32"]\n')
    rootdir = ["--rootdir", str(pytester.path)]
    assert collected(pytester, repo_root, *rootdir) == ["test_latency[tiny-cnn-torch-fp32-bs3-cpu]"]
    assert collected(pytester, repo_root, *rootdir, "--batch-sizes", "5,6") == [
        "test_latency[tiny-cnn-torch-fp32-bs5-cpu]", "test_latency[tiny-cnn-torch-fp32-bs6-cpu]"]


@pytest.mark.parametrize("toml, message", [
    ("batch_size = [1]\n", "unknown key 'batch_size' (did you mean 'batch_sizes'?); valid keys: models, engines"),
    ('models = [{ source = "tiny-cnn", batchsizes = [1] }]\n',
     "models[0]: unknown key 'batchsizes' (did you mean 'batch_sizes'?); "
     "valid keys: source, batch_sizes, seq_len, dims, int8_schemes, tolerances"),
])
def test_usage_errors_stop_the_pytest_run(pytester, repo_root, toml, message):
    path = write(pytester.path / "bad.toml", toml)
    result = pytester.runpytest_inprocess(str(repo_root / "perf_tests" / "test_latency.py"), "--collect-only",
                                          "-p", "no:cacheprovider", "--config", str(path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"{path}: " in result.stderr.str() and message in result.stderr.str()


@pytest.mark.parametrize("toml, message", [
    ("devices = [\"cpu\", \"tpu\"]\n", "devices = ['cpu', 'tpu']: unknown value(s) 'tpu'; valid values: cpu, cuda"),
    ("batch_sizes = [1, 0]\n", "batch_sizes = [1, 0]: 0 is not a positive integer"),
    ("latency_time = \"fast\"\n", "latency_time = 'fast': expected a positive number of seconds"),
    ("engine_memory = 1\n", "engine_memory = 1: expected true or false"),
    ("models = [\"resnet51\"]\n", "models[0]: unknown model 'resnet51'; registered models:"),
    ('models = [{ batch_sizes = [1] }]\n', "models[0]: a model table needs source ="),
    ('models = [{ source = "tiny-cnn", seq_len = 64 }]\n', "only a hf: source takes seq_len"),
    ('models = [{ source = "tiny-cnn", int8_schemes = ["fast"] }]\n',
     "models[0].int8_schemes = ['fast']: unknown value(s) 'fast'; valid values: static, static_per_channel"),
    ('models = [{ source = "tiny-cnn", tolerances = { int8 = { min_cosine = 0.9 } } }]\n',
     "models[0].tolerances.int8: a tolerance override needs reason"),
    ('models = [{ source = "tiny-cnn", tolerances = { int4 = { min_cosine = 0.9, reason = "r" } } }]\n',
     "models[0].tolerances: unknown key 'int4' (did you mean 'int8'?); valid keys: fp32, fp32-tf32, fp16, bf16, int8"),
    ('models = [{ source = "tiny-cnn", tolerances = { int8 = { min_cos = 0.9, reason = "r" } } }]\n',
     "unknown key 'min_cos' (did you mean 'min_cosine'?); valid keys: atol, rtol, min_cosine"),
    ('models = [{ source = "tiny-cnn", tolerances = { fp16 = { atol = 0.1, rtol = 0.2, min_cosine = 2, reason = "r" } } }]\n',
     "models[0].tolerances.fp16.min_cosine = 2: expected a number >= 0 and <= 1"),
    ("load_seconds = 90\n", "expected 0 < min <= max"),
    ("dims = { seq = -1 }\n", "dim 'seq': -1 is not a positive integer"),
    ("batch_sizes = [1\n", "not valid TOML"),
])
def test_bad_file_values_are_usage_errors_naming_file_key_and_choices(tmp_path, registry, toml, message):
    path = write(tmp_path / "run.toml", toml)
    with pytest.raises(pytest.UsageError) as info:
        build(tmp_path, config=str(path))
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_missing_config_file_is_a_usage_error(tmp_path):
    with pytest.raises(pytest.UsageError, match=r"--config .*nope\.toml: no such file"):
        build(tmp_path, config=str(tmp_path / "nope.toml"))


def test_per_model_tables(tmp_path, registry):
    path = write(tmp_path / "run.toml", """
batch_sizes = [1, 8]

[[models]]
source = "tiny-bert"

[[models]]
source = "tiny-cnn"
batch_sizes = [3]
int8_schemes = ["dynamic"]
tolerances = { int8 = { min_cosine = 0.9, reason = "tested looser" } }
""")
    run = build(tmp_path, config=str(path))
    assert run.matrix.models == ("tiny-bert", "tiny-cnn")
    assert run.matrix.batch_sizes_for("tiny-cnn") == (3,) and run.matrix.batch_sizes_for("tiny-bert") == (1, 8)
    assert run.matrix.int8_schemes_for("tiny-cnn") == ("dynamic",) and run.matrix.int8_schemes_for("tiny-bert") is None
    row = MODELS["tiny-cnn"].tolerances["int8"]
    assert row.min_cosine == 0.9 and row.reason.startswith("tested looser (set in ") and ".tolerances.int8" in row.reason
    assert row.min_sqnr_db == DEFAULT_POLICY["int8"].min_sqnr_db   # unnamed fields keep the policy's numbers
    # --models narrows the selection and keeps the file's table; --batch-sizes overrides it for every model
    narrowed = build(tmp_path, config=str(path), models="tiny-cnn")
    assert narrowed.matrix.models == ("tiny-cnn",) and narrowed.matrix.batch_sizes_for("tiny-cnn") == (3,)
    assert build(tmp_path, config=str(path), batch_sizes="5").matrix.batch_sizes_for("tiny-cnn") == (5,)


def test_seq_len_and_dims_reach_the_source_resolver(tmp_path, monkeypatch):
    calls = {}

    def resolve(entry, *, seq_len, dims, strict_dims=()):
        calls[entry] = (seq_len, dict(dims))
        return "tiny-cnn"
    monkeypatch.setattr("infermatrix.fixtures.config.resolve", resolve)
    path = write(tmp_path / "run.toml", 'seq_len = 32\ndims = { seq = 16 }\nmodels = ["hf:enc", '
                 '{ source = "hf:./enc2", seq_len = 64 }, { source = "onnx:m.onnx", dims = { h = 8 } }]\n')
    build(tmp_path, config=str(path))
    assert calls == {f"hf:{tmp_path / 'enc'}": (32, {"seq": 16}), f"hf:{tmp_path / 'enc2'}": (64, {"seq": 16}),
                     f"onnx:{tmp_path / 'm.onnx'}": (32, {"h": 8})}
    calls.clear()   # the command line wins over a model's own table
    build(tmp_path, config=str(path), seq_len="8", dims=["h=2"])
    assert list(calls.values()) == [(8, {"h": 2})] * 3


def test_command_line_overrides_file_and_explicit_dimensions_follow_either(tmp_path):
    path = write(tmp_path / "run.toml", 'precisions = ["fp16"]\nlatency_time = 3.0\nthreads = 2\n')
    run = build(tmp_path, config=str(path), latency_time="0.5")
    assert run.matrix.latency_time == 0.5 and run.matrix.threads == 2 and run.matrix.precisions == ("fp16",)
    assert run.origins["latency_time"] == "command line" and run.origins["threads"] == str(path)
    assert run.matrix.explicit == frozenset({"precisions"})   # named in the file: skips are generated as asked


def test_engine_cache_resolution_and_relative_paths(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    before = dict(os.environ)
    env = {"INFERMATRIX_CACHE": str(tmp_path / "from-env")}
    assert build(tmp_path, env=env).engine_cache == tmp_path / "from-env"
    assert build(tmp_path).engine_cache == Path("~/.cache/infermatrix").expanduser()
    path = write(tmp_path / "run.toml", 'engine_cache = "cache"\nloadgen_logs = "logs"\n')
    run = build(tmp_path, config=str(path))
    assert run.engine_cache == tmp_path / "cache" and run.load.logs == tmp_path / "logs"   # beside the file
    assert build(tmp_path, env=env, config=str(path)).engine_cache == tmp_path / "from-env"   # env over the file
    assert build(tmp_path, env=env, config=str(path), engine_cache="mine").engine_cache == elsewhere / "mine"
    assert dict(os.environ) == before   # resolved into the RunConfig, never written to the environment
    write(tmp_path / "a-file", "")
    with pytest.raises(pytest.UsageError, match="--engine-cache = .*a-file exists and is not a directory"):
        build(tmp_path, engine_cache=str(tmp_path / "a-file"))


def test_dims_seq_len_and_comma_strings(tmp_path):
    run = build(tmp_path, dims=["seq=32,batch=2", "height=3"], seq_len="64")
    assert dict(run.settings["dims"]) == {"seq": 32, "batch": 2, "height": 3} and run.settings["seq_len"] == 64
    with pytest.raises(pytest.UsageError, match="--dim = .*'seq' is not NAME=VALUE"):
        build(tmp_path, dims=["seq"])
    path = write(tmp_path / "run.toml", 'batch_sizes = "1, 8"\ndims = ["seq=16"]\n')
    run = build(tmp_path, config=str(path))
    assert run.matrix.batch_sizes == (1, 8) and dict(run.settings["dims"]) == {"seq": 16}


def test_config_print_reads_back_to_the_same_settings(tmp_path, monkeypatch, capsys, registry):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "run.toml", MATRIX_TOML.replace(
        '"tiny-bert"]', '{ source = "tiny-bert", batch_sizes = [1], tolerances = { fp32 = { atol = 0.001, '
                        'rtol = 0.001, min_cosine = 0.999, reason = "an \\"odd\\" model" } } }]') + "server_bound_ms = 40\n")
    args = ["--config", str(path), "--latency-rounds", "9", "--dim", "seq=8", "--no-engine-memory",
            "--engine-cache", "cache"]
    assert cli_main(["config", "--print", *args]) == 0
    printed = capsys.readouterr().out
    assert "latency_rounds = 9   # command line" in printed and f"server_bound_ms = 40.0   # {path}" in printed
    assert "# load_seconds = 1.0   # default" in printed and "engine_memory = false   # command line" in printed
    again = write(tmp_path / "printed.toml", printed)
    assert cli_main(["config", "--print", "--config", str(again)]) == 0
    capsys.readouterr()
    first = build(tmp_path, config=str(path), latency_rounds="9", dims=["seq=8"], engine_memory=False,
                  engine_cache="cache")
    second = build(tmp_path, config=str(again))
    assert dict(second.settings) == dict(first.settings)
    assert second.matrix == first.matrix and second.load == first.load and second.matrix.explicit == first.matrix.explicit


def test_config_command_reports_usage_errors(tmp_path, capsys):
    assert cli_main(["config", "--print", "--rootdir", str(tmp_path), "--batch-sizes", "0"]) == 2
    assert "infermatrix config: error: --batch-sizes = '0': '0' is not a positive integer" in capsys.readouterr().err


def test_the_example_config_sets_every_key(tmp_path):
    parsed = read_config(EXAMPLE, tmp_path)
    assert set(parsed.values) == {o.key for o in SETTINGS}
    hf = parsed.values["models"][2]
    assert hf.source == f"hf:{EXAMPLE.parent / 'models' / 'my-encoder'}" and hf.name == "my-encoder"
    assert hf.tolerances["int8"]["min_cosine"] == 0.98 and hf.batch_sizes == (1, 4)
