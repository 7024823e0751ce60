"""The CI workflows parse, only run commands that exist, and shard, fan in and keep the history the
way docs/fleet.md says (the history branch's writer itself is tested in test_history_push.py)."""
from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from infermatrix.commands.main import build_parser, main

FLEET = ("cpu-bench.yml", "gpu-bench.yml")
WORKFLOWS = ("ci.yml", *FLEET)


@pytest.fixture(scope="module")
def tox_envs(repo_root) -> dict[str, str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(repo_root / "tox.ini")
    return {s.split(":", 1)[1]: ini[s].get("commands", "") for s in ini.sections() if s.startswith("testenv:")}


@pytest.fixture(scope="module")
def pytest_help(repo_root) -> str:
    return subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=repo_root, capture_output=True,
                          text=True, check=True).stdout


def workflow(repo_root, name) -> dict:
    return yaml.safe_load((repo_root / ".github" / "workflows" / name).read_text())


def steps(repo_root, name, job=None):
    jobs = workflow(repo_root, name)["jobs"]
    return [s for j, spec in jobs.items() if job in (None, j) for s in spec.get("steps", [])]


def run_lines(repo_root, name, job=None):
    return [line.strip() for s in steps(repo_root, name, job) if "run" in s
            for line in s["run"].splitlines() if line.strip()]


def pytest_line(repo_root, name, job) -> str:
    (line,) = [line for line in run_lines(repo_root, name, job) if line.startswith("pytest perf_tests")]
    return line


def test_ci_runs_the_readme_test_command(repo_root):
    readme = (repo_root / "README.md").read_text()
    command = re.search(r"^\s+python3\.11 -m pip install (.+?) && (tox -e tests)", readme, re.M)
    assert "bash .ci/run" in run_lines(repo_root, "ci.yml")
    ci = (repo_root / ".ci" / "run").read_text()
    # the same install, lint first (ruff and the layer contracts), then the README's tox command
    assert f"python3.11 -m pip install {command.group(1)} && tox -e lint && {command.group(2)}" in ci


def test_every_tox_env_the_workflows_use_exists(repo_root, tox_envs):
    for name in WORKFLOWS:
        for env in re.findall(r"tox (?:exec )?-e (\w+)", "\n".join(run_lines(repo_root, name))):
            assert env in tox_envs, f"{name} uses tox env {env!r}; tox.ini has {sorted(tox_envs)}"


def test_every_pytest_option_the_workflows_pass_exists(repo_root, tox_envs, pytest_help):
    gpu = tox_envs["gpu"]
    for flag in ("-m gpu", "--benchmark-autosave", "--benchmark-save-data"):
        assert flag in gpu
    for name in FLEET:
        text = "\n".join(run_lines(repo_root, name))
        lines = [line for line in text.splitlines() if line.startswith("pytest ")]
        assert len(lines) == 2   # the shard's and the unsplit durations run's
        for flag in set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", gpu + "\n" + "\n".join(lines))):
            assert flag in pytest_help, f"{name}: pytest has no option {flag}"


def test_the_gpu_pr_gate_is_ab_in_one_job(repo_root, pytest_help):
    text = "\n".join(run_lines(repo_root, "gpu-bench.yml", "gate"))
    assert "GITHUB_STEP_SUMMARY" in text
    # the gate that holds across a shared runner: BASE and NEW alternating in one job
    ab = [line for line in text.splitlines() if "infermatrix ab" in line]
    assert ab and "--base-ref" in ab[0]
    selection = ab[0].rsplit(" -- ", 1)[1].split("||")[0]
    for flag in re.findall(r"(--[a-z][a-z-]+)", selection):
        assert flag in pytest_help, f"pytest has no option {flag} (infermatrix ab passes it to pytest)"
    assert "pull_request" in workflow(repo_root, "gpu-bench.yml")[True]   # yaml reads `on:` as True


def infermatrix_calls(text: str) -> list[str]:
    """Each `infermatrix ...` command line, up to a pipe, `)`, `;`, `||` or a redirection."""
    return [re.split(r"\s\d*>", m.group(0))[0].strip() for m in re.finditer(r"(?:^|(?<=[\s(]))infermatrix [^|;)\n]*", text, re.M)]


def test_infermatrix_commands_in_workflows_scripts_and_tox_parse(repo_root, tox_envs):
    parser = build_parser()
    texts = ["\n".join(run_lines(repo_root, name)) for name in FLEET]
    texts += [(repo_root / ".ci" / "watch_history.sh").read_text().split("\nset ", 1)[1], tox_envs["bench"]]
    calls = [c for text in texts for c in infermatrix_calls(text)]
    assert {shlex.split(c)[1] for c in calls} >= {"ab", "kind", "merge", "watch", "publish", "report"}
    for call in calls:
        argv = ["placeholder" if a.startswith("$") else a for a in shlex.split(call)[1:]]
        parser.parse_args(argv)  # raises SystemExit on an unknown subcommand or option


@pytest.mark.parametrize("name", FLEET)
def test_shards_run_one_matrix_with_distinct_groups_covering_all(repo_root, name):
    doc = workflow(repo_root, name)
    splits = int(doc["env"]["SPLITS"])
    shard = doc["jobs"]["shard"]
    assert shard["strategy"]["fail-fast"] is False     # a failed shard must not cancel the others
    assert shard["strategy"]["matrix"]["group"] == list(range(1, splits + 1))
    line = pytest_line(repo_root, name, "shard")
    # one command for every shard: the group is the only thing that differs
    assert '--splits "$SPLITS"' in line and "--group ${{ matrix.group }}" in line
    assert line.count("matrix.") == 2 and "--benchmark-json shard-${{ matrix.group }}.json" in line
    assert not re.search(r"(^| )(-k|--models|--engines)( |=)", line)
    # the same matrix the unsplit durations run times
    assert pytest_line(repo_root, name, "durations").split(" --store-durations")[0] == line.split(" --splits")[0]


@pytest.mark.parametrize("name", FLEET)
def test_durations_are_per_kind_and_read_from_the_history_branch(repo_root, name):
    kind_from = 'KIND=$(infermatrix kind)'
    for job in ("shard", "durations"):
        lines = run_lines(repo_root, name, job)
        line = pytest_line(repo_root, name, job)
        assert '--durations-path "perf_tests/durations/$KIND.json"' in line
        assert lines.index(kind_from) < lines.index(line)
    assert "--store-durations" in pytest_line(repo_root, name, "durations")
    assert "--store-durations" not in pytest_line(repo_root, name, "shard")
    text = "\n".join(run_lines(repo_root, name, "shard"))
    # one snapshot of the history branch for every shard, and the even split said out loud
    assert 'git show "$HISTORY_SHA:$durations"' in text and "splits the matrix evenly" in text
    assert workflow(repo_root, name)["jobs"]["shard"]["needs"] == "plan"
    downloads = [s for s in steps(repo_root, name, "fan-in") if s.get("uses", "").startswith("actions/download")]
    assert any(s["with"].get("path") == "history/perf_tests/durations" for s in downloads)


@pytest.mark.parametrize("name", FLEET)
def test_every_shard_is_uploaded_even_when_it_fails(repo_root, name):
    uploads = [s for s in steps(repo_root, name, "shard") if s.get("uses", "").startswith("actions/upload-artifact")]
    assert len(uploads) == 1 and uploads[0]["if"] == "always()"
    assert "${{ matrix.group }}" in uploads[0]["with"]["name"]
    prefix = uploads[0]["with"]["name"].split("${{ matrix.group }}")[0]
    fan_in_download = steps(repo_root, name, "fan-in")
    patterns = [s["with"]["pattern"] for s in fan_in_download if "pattern" in s.get("with", {})]
    assert patterns == [prefix + "*"]


@pytest.mark.parametrize("name", FLEET)
def test_the_fan_in_needs_every_shard_runs_always_and_pushes_with_retries(repo_root, name):
    jobs = workflow(repo_root, name)["jobs"]
    fan_in = jobs["fan-in"]
    assert {"shard", "durations"} <= set(fan_in["needs"])
    assert fan_in["if"].startswith("always()")             # a failed shard still yields an incomplete run
    # GitHub cancels a pending job of a concurrency group when another queues: that would drop a
    # run, so the writer has none and racing writers rebase and retry instead
    assert "concurrency" not in fan_in
    lines = run_lines(repo_root, name, "fan-in")
    order = [next(i for i, line in enumerate(lines) if needle in line) for needle in (
        'bash .ci/history_branch.sh checkout history "$HISTORY_BRANCH"',
        "infermatrix merge shards/shard-*.json --into history/",
        "bash .ci/history_branch.sh push history",
        'bash .ci/watch_history.sh history/ "$KIND"',
        "infermatrix publish history/ --out site/")]
    assert order == sorted(order)
    script = (repo_root / ".ci" / "history_branch.sh").read_text()
    assert 'for attempt in $(seq 1 "$attempts")' in script and 'git rebase --quiet "origin/$branch"' in script
    assert "--force" not in script and "push -f" not in script
    # an incomplete run (merge exit 1) is pushed first, then fails the job
    final = fan_in["steps"][-1]
    assert final["if"] == "always() && steps.merge.outputs.status == '1'" and "exit 1" in final["run"]
    # only the writer may push: no other job (a PR's code included) gets a write token
    assert fan_in["permissions"] == {"contents": "write"}
    assert workflow(repo_root, name)["permissions"] == {"contents": "read"}
    assert all("write" not in str(job.get("permissions", "")) for j, job in jobs.items() if j not in ("fan-in", "pages"))
    assert workflow(repo_root, name)["defaults"]["run"]["shell"] == "bash"   # -o pipefail under tee


def test_the_page_deploy_is_the_one_concurrency_group(repo_root):
    pages = workflow(repo_root, "cpu-bench.yml")["jobs"]["pages"]
    # a newer page supersedes a cancelled pending one: here a group loses nothing
    assert pages["concurrency"] == {"group": "infermatrix-pages", "cancel-in-progress": False}
    assert [s["uses"] for s in pages["steps"]] == ["actions/deploy-pages@v4"]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_no_history_in_the_ci_cache(repo_root, name):
    for step in steps(repo_root, name):
        if step.get("uses", "").startswith("actions/cache"):
            path = step["with"]["path"]
            assert path == "~/.cache/infermatrix", f"{name} caches {path!r}: only built engines belong in a cache"


def test_gpu_kinds_are_a_matrix_of_runner_labels_with_shards_within_each(repo_root):
    jobs = workflow(repo_root, "gpu-bench.yml")["jobs"]
    labels = jobs["shard"]["strategy"]["matrix"]["runner"]
    assert labels and jobs["shard"]["runs-on"] == ["self-hosted", "linux", "${{ matrix.runner }}"]
    assert jobs["durations"]["strategy"]["matrix"]["runner"] == labels
    assert jobs["fan-in"]["strategy"]["matrix"]["runner"] == labels        # one fan-in, one run per kind
    upload = next(s for s in jobs["shard"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["name"] == "gpu-shard-${{ matrix.runner }}-${{ matrix.group }}"


def test_the_gate_is_a_notice_while_a_kind_collects_runs(repo_root, tmp_path, capsys):
    from tests.test_bencher_format import CASES, KIND, latency_bench, run_json, write

    run = write(tmp_path / "run.json", run_json([latency_bench(c, *v) for c, v in CASES.items()]))
    assert main(["merge", str(run), "--into", str(tmp_path / "history")]) == 0
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    summary = tmp_path / "summary.md"
    out = subprocess.run(["bash", str(repo_root / ".ci" / "watch_history.sh"), str(tmp_path / "history"), KIND.id,
                          str(summary)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"::notice::infermatrix watch: kind {KIND.id} is still collecting runs" in out.stdout
    # a kind the history does not hold is bad input, not a notice
    out = subprocess.run(["bash", str(repo_root / ".ci" / "watch_history.sh"), str(tmp_path / "history"),
                          "no-such-kind", str(summary)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "::notice::" not in out.stdout
