"""The ready CI pipelines in examples/ci/ cannot rot silently: both files are YAML their CI can read,
and every `caslab` command line in their scripts is accepted by the current command line parser (an
option renamed or removed fails here, not in a user's pipeline)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab.cli import build_parser

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "ci"
PIPELINES = {"github-actions.yml": "run", "gitlab-ci.yml": "script"}  # file: the key of its shell lines
SEPARATORS = {";", "&&", "||", "|", "(", ")", "&"}
SHELL_WORDS = {"if", "then", "else", "elif", "do", "!", "exec"}
REDIRECTIONS = {">", ">>", "<"}


def shell_texts(node: object) -> Iterator[str]:
    """Every shell script of a parsed pipeline: `run:` of GitHub steps; `script:`, `before_script:` and
    `after_script:` lines of GitLab jobs."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "run" and isinstance(value, str):
                yield value
            elif key in ("script", "before_script", "after_script") and isinstance(value, list):
                yield from (line for line in value if isinstance(line, str))
            else:
                yield from shell_texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from shell_texts(item)


def caslab_commands(line: str) -> Iterator[list[str]]:
    """The argv (after `caslab`) of every caslab command in a line of shell, wherever it stands (after
    `then`, `||`, `;`...), without its redirections."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    command: list[str] = []
    for token in [*lexer, ";"]:
        if token in SEPARATORS:
            yield from _caslab(command)
            command = []
        else:
            command.append(token)


def _caslab(words: list[str]) -> Iterator[list[str]]:
    while words and (words[0] in SHELL_WORDS or ("=" in words[0] and not words[0].startswith("-"))):
        words = words[1:]  # `if`, `then`, VAR=value before the command
    if not words or words[0] != "caslab":
        return
    argv: list[str] = []
    skip = False
    for word in words[1:]:
        if skip:
            skip = False
        elif word in REDIRECTIONS:
            skip = True  # the redirection's target
        else:
            argv.append(word)
    yield argv


def pipeline_commands(name: str) -> list[list[str]]:
    pipeline = yaml.safe_load((EXAMPLES / name).read_text())
    lines = [line for script in shell_texts(pipeline) for line in script.replace("\\\n", " ").splitlines()]
    return [argv for line in lines for argv in caslab_commands(line)]


def test_the_command_finder_finds_commands_wherever_they_stand():
    script = 'X=1 caslab suite d --out r || s=$?\nif [ -n "$B" ]; then caslab compare "$B" n > c.md; fi'
    found = [argv for line in script.splitlines() for argv in caslab_commands(line)]
    assert found == [["suite", "d", "--out", "r"], ["compare", "$B", "n"]]


@pytest.mark.parametrize("name", PIPELINES)
def test_every_caslab_command_of_the_pipeline_is_accepted_by_the_cli(name):
    commands = pipeline_commands(name)
    assert {argv[0] for argv in commands} >= {"suite"}, f"{name}: no `caslab suite` found"
    assert any("--backend" in argv and "docker" in argv for argv in commands), f"{name}: no docker job"
    parser = build_parser()
    for argv in commands:
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: `caslab {shlex.join(argv)}` is not accepted by the current CLI")
        assert args.func, argv


def test_between_them_the_pipelines_compare_with_the_default_branch_both_ways():
    commands = [argv for name in PIPELINES for argv in pipeline_commands(name)]
    assert any(argv[0] == "suite" and "--baseline" in argv for argv in commands)
    assert any(argv[0] == "compare" for argv in commands)
