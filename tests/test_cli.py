"""The one ``infermatrix`` program (commands/main.py): its subcommands, their --help, exit codes,
and that asking for help imports no engine."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from infermatrix.commands.main import COMMANDS, build_parser, main

# each subcommand's own options (and positionals), as its --help names them
OWN_OPTIONS = {
    "report": ["runs", "--out"],
    "compare": ["base", "new", "--threshold", "--alpha", "--markdown", "--allow-hardware-mismatch"],
    "ab": ["--base-ref", "--new-ref", "--base-python", "--base-env", "--repo", "--blocks", "--rounds", "--tests",
           "--out", "--threshold", "--alpha", "--markdown", "--timeout", "pytest_args"],
    "config": ["--print", "--rootdir", "--config", "--models", "--engines", "--batch-sizes"],
    "export": ["--pipeline", "--out", "--checkpoint", "--force", "--engine-cache"],
    "kind": ["--json"],
    "merge": ["SHARD.json", "--into", "--accept-incomplete"],
    "watch": ["history", "--kind", "--metric", "--min-change"],
    "publish": ["history", "--out", "--kind"],
    "bencher": ["--out", "--project", "--branch", "--allow-incomplete"],
}


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_the_console_script_is_this_program():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "infermatrix"]
    assert script.value == "infermatrix.commands.main:main"


def test_help_lists_every_command_with_its_one_line_help(capsys):
    assert list(COMMANDS) == ["report", "compare", "ab", "config", "export", "kind", "merge", "watch", "publish", "bencher"]
    assert exit_code(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())   # argparse wraps long help lines
    for name, help_line in COMMANDS.items():
        assert f"{name} {help_line}" in out


@pytest.mark.parametrize("name", sorted(OWN_OPTIONS))
def test_each_command_has_its_own_help(name, capsys):
    assert exit_code([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: infermatrix {name} ")
    for option in OWN_OPTIONS[name]:
        assert option in out, f"infermatrix {name} --help does not name {option}"


def test_an_unknown_command_is_a_usage_error_naming_the_valid_ones(capsys):
    assert exit_code(["benchmark", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'benchmark'" in err
    for name in COMMANDS:
        assert repr(name) in err


def test_no_command_is_a_usage_error(capsys):
    assert exit_code([]) == 2
    assert "usage: infermatrix" in capsys.readouterr().err


def test_compare_on_a_missing_file_exits_2(tmp_path, capsys):
    assert exit_code(["compare", str(tmp_path / "missing.json"), str(tmp_path / "also-missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infermatrix: error: ") and "missing.json" in err


def test_report_on_a_missing_file_exits_2(tmp_path, capsys):
    assert exit_code(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_a_bad_option_of_a_command_is_a_usage_error(capsys):
    assert exit_code(["compare", "a.json", "b.json", "--no-such-option"]) == 2
    assert "error: unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_config_without_print_names_what_to_do(tmp_path, capsys):
    assert exit_code(["config", "--rootdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "usage: infermatrix config" in err and "infermatrix config: error: nothing to do: pass --print" in err


def test_config_refuses_abbreviated_options(tmp_path, capsys):
    assert exit_code(["config", "--print", "--rootdir", str(tmp_path), "--batch-size", "1"]) == 2
    assert "unrecognized arguments: --batch-size" in capsys.readouterr().err


def test_the_full_parser_knows_every_command():
    parser = build_parser()
    args = parser.parse_args(["ab", "--blocks", "3", "--base-ref", "main", "--", "--models", "tiny-cnn"])
    assert (args.command, args.blocks, args.base_ref, args.pytest_args) == ("ab", 3, "main", ["--", "--models", "tiny-cnn"])
    assert parser.parse_args(["compare", "a.json", "b.json"]).threshold == "median=10%"
    assert parser.parse_args(["report", "runs", "--out", "o"]).runs == ["runs"]
    assert parser.parse_args(["config", "--print"]).print_config
    assert parser.parse_args(["export", "--pipeline", "p", "--out", "o"]).pipeline == "p"


@pytest.mark.parametrize("argv", [["--help"], ["compare", "--help"], ["report", "--help"], ["ab", "--help"]])
def test_help_imports_no_engine(argv, tmp_path):
    code = ("import sys, contextlib, io; from infermatrix.commands.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n"
            f"        main({argv!r})\n"
            "    except SystemExit as exc:\n"
            "        assert exc.code == 0, exc.code\n"
            "assert 'usage: infermatrix' in out.getvalue()\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'onnxruntime', 'openvino', 'tensorrt'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
