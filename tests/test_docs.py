"""The commands in README.md and the documentation pages (docs/*.md) work as written.

Every command line of a ```bash block is one of:

- run by CI as it stands: the line appears in .ci/run (the install, test, lint and docs
  commands);
- marked as not run, with the reason: the line ends in `# not run: <reason>`, or the line
  right before the block is `<!-- not run: <reason> -->` (a Snowflake account, a server, a
  cluster, a placeholder URI, a command that installs);
- run here, in one fresh folder, in reading order (README.md, then the pages in the order of
  mkdocs.yml's nav), with this interpreter (`python`, `python3` and the `runner` script
  become sys.executable): it must exit 0, or N when the line ends in `# exits N`.

So a command added to the documentation is either run here or says why it is not; and every
code block names its language (`bash` for commands, `text` for output or a synopsis), so no
command hides in a block this test does not read.

`RUN_ID` in a command stands for the run the commands before it made: the last
`runner: run <id> FINISHED` line printed. The same command line is run once. `python -m
runner` commands get `model.num_boost_round=50` appended (unless they set it), so the sweeps
among them take seconds; the demo's own output is checked by tests/test_single_run.py.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration

README_LIMIT = 12 * 1024
COMMAND_LANGUAGES = ("bash", "sh", "shell")
FENCE = re.compile(r"^(\s*)(```+)\s*([\w+-]*)")
BLOCK_NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(\S.*?)\s*-->\s*$")
LINE_NOT_RUN = re.compile(r"^not run:\s*(\S.*)$")
EXITS = re.compile(r"^exits (\d+)\b")
FINISHED = re.compile(r"runner: run ([0-9a-f]{32}) FINISHED")
SHELL_OPERATORS = {"&&", "||", "|", ";", ">", ">>", "<", "&", "(", ")"}
# Appended to `python -m runner` commands: fewer boosting rounds, so sweeps stay short.
FEWER_ROUNDS = "model.num_boost_round=50"


@dataclass(frozen=True)
class Command:
    page: str  # README.md or docs/<page>.md
    line: int  # where the command starts
    text: str  # the command as written, continuation lines joined, without its comment
    comment: str  # the text after an unquoted `#`, if any
    block_not_run: Optional[str]  # the reason of a <!-- not run: ... --> before the block

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def not_run(self) -> Optional[str]:
        match = LINE_NOT_RUN.match(self.comment)
        return match.group(1) if match else self.block_not_run

    @property
    def exit_code(self) -> int:
        match = EXITS.match(self.comment)
        return int(match.group(1)) if match else 0


def split_comment(line: str) -> Tuple[str, str]:
    """(the command, its comment): the comment starts at an unquoted `#` after a blank."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def pages() -> List[Path]:
    """README.md, then docs/ in the order of mkdocs.yml's nav (pages not in it last)."""
    nav: List[str] = []

    def walk(node) -> None:
        if isinstance(node, str):
            nav.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(yaml.safe_load((REPO / "mkdocs.yml").read_text()).get("nav", []))
    docs = REPO / "docs"
    ordered = [docs / name for name in nav if name.endswith(".md")]
    ordered += sorted(p for p in docs.glob("*.md") if p not in ordered)
    return [REPO / "README.md", *ordered]


def blocks(path: Path) -> Iterator[Tuple[int, str, List[Tuple[int, str]], Optional[str]]]:
    """(line of the fence, language, [(line, text)], block's not-run reason) per fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, ticks, language = opening.groups()
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marked = BLOCK_NOT_RUN.match(before)
        body: List[Tuple[int, str]] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            text = lines[j]
            body.append((j + 1, text[len(indent) :] if text.startswith(indent) else text.lstrip()))
            j += 1
        yield i + 1, language, body, marked.group(1) if marked else None
        i = j + 1


def commands(path: Path) -> Iterator[Command]:
    page = str(path.relative_to(REPO))
    for _, language, body, block_not_run in blocks(path):
        if language not in COMMAND_LANGUAGES:
            continue
        start, pending = 0, ""
        for number, text in body:
            if not pending and (not text.strip() or text.lstrip().startswith("#")):
                continue  # a blank or comment line (#!/bin/bash, #SBATCH ...)
            if not pending:
                start = number
            if text.rstrip().endswith("\\"):
                pending += text.rstrip()[:-1] + " "
                continue
            command, comment = split_comment(pending + text)
            pending = ""
            yield Command(page, start, " ".join(command.split()), comment, block_not_run)


def ci_lines() -> List[str]:
    return [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]


def argv(command: Command) -> List[str]:
    """The command as an argument list for subprocess; ValueError if it needs a shell."""
    lexer = shlex.shlex(command.text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words = list(lexer)
    operators = [w for w in words if w in SHELL_OPERATORS]
    if operators or any("$" in w for w in words):
        raise ValueError(f"uses the shell ({' '.join(operators) or '$'}): make it one command, or mark it")
    program, *rest = words
    if program in ("python", "python3"):
        return [sys.executable, *rest]
    if program == "runner":
        return [sys.executable, "-m", "runner", *rest]
    raise ValueError(f"runs {program!r}: only python and runner commands run here; mark it")


def classify() -> Tuple[List[Command], List[str]]:
    """The commands this test runs (each command line once), and the problems found."""
    ci = ci_lines()
    runs: List[Command] = []
    seen = set()
    problems: List[str] = []
    for path in pages():
        for _, language, body, _ in blocks(path):
            if not language:
                first = body[0][0] - 1 if body else "?"
                problems.append(f"{path.relative_to(REPO)}:{first}: a code block without a language (bash or text)")
        for command in commands(path):
            if command.not_run is not None or any(command.text in line for line in ci):
                continue
            if "not run" in command.comment:
                problems.append(f"{command.where}: write the marker as `# not run: <reason>`: {command.comment}")
                continue
            try:
                argv(command)
            except ValueError as exc:
                problems.append(f"{command.where}: {command.text}: {exc}")
                continue
            if re.search(r"<[\w-]+>|\.\.\.", command.text):
                problems.append(f"{command.where}: {command.text}: a placeholder: use RUN_ID, or mark it")
                continue
            if command.text not in seen:
                seen.add(command.text)
                runs.append(command)
    return runs, problems


RUNS, PROBLEMS = classify()


def test_every_command_is_run_or_says_why_not():
    assert not PROBLEMS, "\n".join(PROBLEMS)
    assert RUNS, "no command found to run"


def test_readme_is_short_and_its_links_resolve():
    readme = REPO / "README.md"
    assert readme.stat().st_size <= README_LIMIT, f"README.md is {readme.stat().st_size} bytes"
    text = readme.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if "://" not in t and not (REPO / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Dict[str, object]:
    """One fresh folder the commands run in, in order, and what they printed so far."""
    return {"cwd": tmp_path_factory.mktemp("docs-commands"), "run_id": None}


@pytest.mark.parametrize("command", RUNS, ids=[c.where for c in RUNS])
def test_documented_command_exits_as_documented(command: Command, workdir):
    args = argv(command)
    if any("RUN_ID" in a for a in args):
        assert workdir["run_id"], f"{command.where}: RUN_ID before any command printed a run"
        args = [a.replace("RUN_ID", str(workdir["run_id"])) for a in args]
    if args[1:3] == ["-m", "runner"] and not any(a.startswith("model.num_boost_round=") for a in args):
        args.append(FEWER_ROUNDS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RUNNER_", "HYDRA_"))}
    env.pop("PYTHONPATH", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(args, cwd=workdir["cwd"], env=env, capture_output=True, text=True, timeout=900)
    ids = FINISHED.findall(done.stdout)
    if ids:
        workdir["run_id"] = ids[-1]
    assert done.returncode == command.exit_code, (
        f"{command.where}: `{command.text}` exited {done.returncode}, documented {command.exit_code}\n"
        f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-3000:]}"
    )
