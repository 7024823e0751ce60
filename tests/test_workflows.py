"""The CI workflows parse and only run commands that exist."""
from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from infermatrix.commands.main import build_parser


@pytest.fixture(scope="module")
def tox_envs(repo_root) -> dict[str, str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(repo_root / "tox.ini")
    return {s.split(":", 1)[1]: ini[s].get("commands", "") for s in ini.sections() if s.startswith("testenv:")}


@pytest.fixture(scope="module")
def pytest_help(repo_root) -> str:
    return subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=repo_root, capture_output=True,
                          text=True, check=True).stdout


def steps(repo_root, name):
    doc = yaml.safe_load((repo_root / ".github" / "workflows" / name).read_text())
    return [s for job in doc["jobs"].values() for s in job["steps"]]


def run_lines(repo_root, name):
    return [line.strip() for s in steps(repo_root, name) if "run" in s for line in s["run"].splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command(repo_root):
    readme = (repo_root / "README.md").read_text()
    command = re.search(r"^\s+python3\.11 -m pip install (\S+) && (tox -e tests)", readme, re.M)
    assert "bash .ci/run" in run_lines(repo_root, "ci.yml")
    ci = (repo_root / ".ci" / "run").read_text()
    # the same install, lint first (ruff and the layer contracts), then the README's tox command
    assert f"python3.11 -m pip install {command.group(1)} && tox -e lint && {command.group(2)}" in ci


def test_every_tox_env_the_workflows_use_exists(repo_root, tox_envs):
    for name in ("ci.yml", "gpu-bench.yml"):
        for env in re.findall(r"tox (?:exec )?-e (\w+)", "\n".join(run_lines(repo_root, name))):
            assert env in tox_envs, f"{name} uses tox env {env!r}; tox.ini has {sorted(tox_envs)}"


def test_gpu_workflow_benchmarks_compares_and_keeps_history(repo_root, tox_envs, pytest_help):
    gpu = tox_envs["gpu"]
    for flag in ("-m gpu", "--benchmark-autosave", "--benchmark-save-data"):
        assert flag in gpu
    text = "\n".join(run_lines(repo_root, "gpu-bench.yml"))
    for flag in ("--benchmark-compare", "--benchmark-compare-fail=median:10%", "GITHUB_STEP_SUMMARY"):
        assert flag in text
    uses = [s.get("uses", "") for s in steps(repo_root, "gpu-bench.yml")]
    assert any(u.startswith("actions/cache") for u in uses) and any(u.startswith("actions/upload-artifact") for u in uses)
    # lines that pass flags to pytest (not infermatrix's own, not tox's set-up line)
    pytest_lines = [line for line in text.splitlines() if "infermatrix " not in line and "--notest" not in line]
    for flag in set(re.findall(r"(--[a-z][a-z-]+)", gpu + "\n" + "\n".join(pytest_lines))):
        assert flag in pytest_help, f"pytest has no option {flag}"
    # the gate that holds across a shared runner: BASE and NEW alternating in one job
    ab = [line for line in text.splitlines() if "infermatrix ab" in line]
    assert ab and "--base-ref" in ab[0]
    selection = ab[0].rsplit(" -- ", 1)[1].split("||")[0]
    for flag in re.findall(r"(--[a-z][a-z-]+)", selection):
        assert flag in pytest_help, f"pytest has no option {flag} (infermatrix ab passes it to pytest)"


def test_infermatrix_commands_in_workflows_and_tox_parse(repo_root, tox_envs):
    parser = build_parser()
    lines = run_lines(repo_root, "gpu-bench.yml") + tox_envs["bench"].splitlines()
    calls = [line[line.index("infermatrix"):] for line in lines if "infermatrix " in line]
    assert len(calls) >= 3
    for call in calls:
        argv = ["placeholder" if a.startswith("$") else a for a in shlex.split(call.split("||")[0])[1:]]
        if argv[0] == "compare":
            argv = [a for a in argv if a != "placeholder"]
            argv[1:1] = ["base.json", "new.json"]
        parser.parse_args(argv)  # raises SystemExit on an unknown subcommand or option
