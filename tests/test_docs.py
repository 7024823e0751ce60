"""The documentation stays true: README.md and docs/*.md.

- every relative link resolves to a file inside the repository (and its #anchor to a heading);
- every `--flag` written in code (inline `code` or a code block) is an option of pytest (with the
  infermatrix plugin), of an `infermatrix` subcommand or of a script in bench/;
- every `infermatrix WORD` written in code names a subcommand that `infermatrix --help` lists;
- the README stays short enough to read in five minutes, and no page speaks of how the project
  was made ("issue 9", "seed 002", "this workplace").

Fast and offline: the option sets come from the programs' own `--help`. A failure names the
file, the line and the bad token.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 300

# Flags of other tools that the docs may show (tox, pip, git); none of them is ours to check.
OTHER_TOOLS_FLAGS = frozenset({
    "--no-deps",        # pip install --no-deps
    "--upgrade",        # pip install --upgrade
    "--recreate",       # tox --recreate
})
# Scripts in the repository whose options the docs describe (their --help is read).
SCRIPTS = ("bench/gpu_check.py", "bench/gate_power.py")

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
SUBCOMMAND_USE = re.compile(r"(?<![\w./-])infermatrix\s+([a-z][a-z0-9_-]*)")


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# ---------------------------------------------------------------- reading markdown


def lines_of(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, is code-block line) for every line of a markdown file; fenced and
    indented code blocks count as code (an indented block starts after a blank line)."""
    in_fence = in_indented = False
    prev_blank = True
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            prev_blank = False
            yield n, line, True
            continue
        if in_fence:
            yield n, line, True
            continue
        blank = not line.strip()
        if line.startswith("    ") and not blank and (prev_blank or in_indented):
            in_indented = True
        elif not blank:
            in_indented = False
        prev_blank = blank
        yield n, line, in_indented and not blank


def code_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, code text): whole code-block lines and the inline code spans of prose."""
    for n, line, is_code in lines_of(path):
        if is_code:
            yield n, line
        else:
            for m in INLINE_CODE.finditer(line):
                yield n, m.group(2)


def prose_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of prose lines with inline code removed (links in code are not links)."""
    for n, line, is_code in lines_of(path):
        if not is_code:
            yield n, INLINE_CODE.sub("", line)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors_of(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line, is_code in lines_of(path):
        m = HEADING.match(line)
        if m and not is_code:
            base = github_anchor(m.group(2))
            k = seen.get(base, 0)
            seen[base] = k + 1
            out.add(base if k == 0 else f"{base}-{k}")
    return frozenset(out)


# ---------------------------------------------------------------- the programs' own options


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _infermatrix() -> list[str]:
    """The installed `infermatrix` console script (beside this interpreter), or its entry point."""
    script = Path(sys.executable).parent / "infermatrix"
    if script.exists():
        return [str(script)]
    from importlib.metadata import entry_points

    (ep,) = entry_points(group="console_scripts", name="infermatrix")
    module, func = ep.value.split(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func} as m; sys.argv[0] = 'infermatrix'; sys.exit(m())"]


def _help(args: list[str], what: str) -> str:
    proc = _run([*args, "--help"])
    assert proc.returncode == 0, f"`{what} --help` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _help_in_process(name: str) -> tuple[int, str]:
    """(exit code, stdout) of `infermatrix NAME --help`, through the console script's own ``main``
    in this process: the script itself is run once, for the top-level --help (measured: each
    subcommand's --help in a process of its own cost 1.2-3.1 s, 20 s for all of them)."""
    from infermatrix.commands.main import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main([name, "--help"])
        except SystemExit as exc:
            code = exc.code
    return code or 0, out.getvalue()


@cache
def subcommands() -> dict[str, str]:
    """Subcommand -> its --help text, discovered from `infermatrix --help` (the `{a,b}` choices
    of its usage, or the names listed under its commands), each confirmed by its own --help."""
    top = _help(_infermatrix(), "infermatrix")
    candidates: set[str] = set()
    for choices in re.findall(r"\{([a-z0-9_,-]+)\}", top):
        candidates.update(choices.split(","))
    candidates.update(re.findall(r"^ {2,6}([a-z][a-z0-9_-]*)(?: {2,}|$)", top, flags=re.M))
    found = {}
    for name in sorted(candidates):
        code, text = _help_in_process(name)
        if code == 0 and f"infermatrix {name}" in text:
            found[name] = text
    assert found, f"no subcommand found in `infermatrix --help`:\n{top}"
    return found


@cache
def known_flags() -> frozenset[str]:
    texts = [_help([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], "pytest")]
    texts.append(_help(_infermatrix(), "infermatrix"))
    texts.extend(subcommands().values())
    texts.extend(_help([sys.executable, script], f"python {script}") for script in SCRIPTS)
    flags = {f for text in texts for f in FLAG.findall(text)}
    return frozenset(flags | OTHER_TOOLS_FLAGS)


# ---------------------------------------------------------------- the checks

DOC_IDS = [rel(p) for p in DOC_FILES]


def test_docs_exist():
    assert (REPO / "docs").is_dir() and len(DOC_FILES) > 1, "README.md and docs/*.md expected"


@pytest.mark.parametrize("doc", DOC_FILES, ids=DOC_IDS)
def test_relative_links_resolve_inside_the_repository(doc: Path):
    bad = []
    for n, text in prose_of(doc):
        for m in LINK.finditer(text):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):   # http:, https:, mailto:
                continue
            where = f"{rel(doc)}:{n}: ({target})"
            path_part, _, anchor = target.partition("#")
            if path_part.startswith("/"):
                bad.append(f"{where} is an absolute path; link relative to the file")
                continue
            dest = (doc.parent / path_part).resolve() if path_part else doc
            try:
                dest.relative_to(REPO)
            except ValueError:
                bad.append(f"{where} leaves the repository")
                continue
            if not dest.exists():
                bad.append(f"{where} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors_of(dest):
                bad.append(f"{where} has no heading #{anchor} in {rel(dest)}; headings: {sorted(anchors_of(dest))}")
    assert not bad, "broken links:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", DOC_FILES, ids=DOC_IDS)
def test_documented_flags_are_real_options(doc: Path):
    known = known_flags()
    bad = [f"{rel(doc)}:{n}: {flag}" for n, code in code_of(doc) for flag in FLAG.findall(code)
           if flag not in known]
    assert not bad, ("options documented but not accepted by pytest, infermatrix or "
                     f"{', '.join(SCRIPTS)}:\n" + "\n".join(bad))


@pytest.mark.parametrize("doc", DOC_FILES, ids=DOC_IDS)
def test_documented_infermatrix_commands_exist(doc: Path):
    real = subcommands()
    bad = [f"{rel(doc)}:{n}: infermatrix {word}" for n, code in code_of(doc)
           for word in SUBCOMMAND_USE.findall(code) if word not in real]
    assert not bad, f"not a subcommand listed by `infermatrix --help` ({', '.join(sorted(real))}):\n" + "\n".join(bad)


# Words about how the project was made, which mean nothing to a user.
PROCESS_WORDS = re.compile(r"\bseed 0\d\d\b|\bissues? \d+\b|\bworkplace\b|\blent\b|\b(?:earlier|this|these|our|a) sessions?\b",
                           flags=re.I)


@pytest.mark.parametrize("doc", DOC_FILES, ids=DOC_IDS)
def test_no_process_words(doc: Path):
    bad = [f"{rel(doc)}:{n}: {m.group(0)!r}" for n, line, _ in lines_of(doc) for m in PROCESS_WORDS.finditer(line)]
    assert not bad, "say it in the user's terms:\n" + "\n".join(bad)


def test_readme_is_short():
    n = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md: {n} lines; keep it to {README_MAX_LINES} and move detail to docs/"


@pytest.mark.parametrize("doc", DOC_FILES[1:], ids=DOC_IDS[1:])
def test_each_doc_links_back_to_the_readme(doc: Path):
    head = doc.read_text(encoding="utf-8").splitlines()[:6]
    assert any("](../README.md)" in line for line in head), f"{rel(doc)}: no link back to ../README.md near the top"


# ---------------------------------------------------------------- the checker itself


def test_the_checkers_see_what_they_should(tmp_path: Path):
    md = tmp_path / "x.md"
    md.write_text("# A heading: `code` → here\n\nprose `--in-span` [l](a.md#b)\n\n    indented --in-block\n"
                  "```\n--in-fence [not](a link)\n```\n- item\n    continuation --not-code\n", encoding="utf-8")
    assert [c for _, c in code_of(md)] == ["code", "--in-span", "    indented --in-block", "```",
                                           "--in-fence [not](a link)", "```"]
    assert [m.group(1) for _, t in prose_of(md) for m in LINK.finditer(t)] == ["a.md#b"]
    assert anchors_of(md) == {"a-heading-code--here"}
    assert FLAG.findall("--benchmark-compare-fail=median:10% a--b -- --x") == ["--benchmark-compare-fail", "--x"]
    assert SUBCOMMAND_USE.findall("infermatrix ab -- x; python -m infermatrix.reports") == ["ab"]
