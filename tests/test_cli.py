"""The command line says what it can do: every command teaches itself in --help, with examples that
parse as written."""

import argparse
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cli import build_parser, main

DESIGN_COMMANDS = {
    *("run", "matrix", "balancer", "up", "down", "cas", "scenarios", "scenario", "report", "suite", "compare")
}


def commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and action under `parser`, as the words that name it ("balancer", "config")."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*words, name), sub
                yield from commands(sub, (*words, name))


def examples(parser: argparse.ArgumentParser) -> list[str]:
    """The commands of a parser's "examples:" lines, without their explanation or output redirection."""
    epilog = parser.epilog or ""
    if "examples:" not in epilog:
        return []
    lines = epilog.split("examples:", 1)[1].strip().splitlines()
    return [re.split(r" {2,}| > ", line.strip())[0] for line in lines]


ALL_COMMANDS = list(commands(build_parser()))


def test_help_lists_every_command_of_the_design():
    out = subprocess.run(
        [sys.executable, "-m", "lab.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in DESIGN_COMMANDS:
        assert f"    {command}" in out, f"'{command}' missing from --help"


@pytest.mark.parametrize(("words", "parser"), ALL_COMMANDS, ids=[" ".join(w) for w, _ in ALL_COMMANDS])
def test_every_command_teaches_itself(words, parser):
    assert parser.description, f"caslab {' '.join(words)} --help has no description"
    undocumented = [a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not undocumented, f"caslab {' '.join(words)}: no help for {undocumented}"
    takes_arguments = len(parser._actions) > 1  # more than --help
    is_group = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    if takes_arguments and not is_group:
        assert examples(parser), f"caslab {' '.join(words)} takes arguments but shows no example"


def test_every_example_parses_as_written():
    parser = build_parser()
    shown = examples(parser) + [e for _, sub in ALL_COMMANDS for e in examples(sub)]
    assert len(shown) >= 15
    for example in shown:
        words = shlex.split(example)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before the command
            words.pop(0)
        argv = words
        assert argv[0] == "caslab", example
        assert parser.parse_args(argv[1:]).func, example


def test_scenario_schema_prints_the_json_schema(capsys):
    assert main(["scenario", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "caslab scenario" and "population" in schema["properties"]


def test_a_command_group_without_its_action_is_a_usage_error():
    for group in ("scenario", "balancer"):
        with pytest.raises(SystemExit) as err:
            build_parser().parse_args([group])
        assert err.value.code == 2


def test_console_script_is_installed():
    caslab = Path(sys.executable).parent / "caslab"
    out = subprocess.run([str(caslab), "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: caslab" in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: caslab" in capsys.readouterr().out


def test_unknown_option_is_a_usage_error():
    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(["run", "x", "--no-such-flag"])
    assert err.value.code == 2


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--eas-heartbeat-min", "600", "--eas-heartbeat-max", "300"], "must not be more than"),
        (["--owa-timeout", "0"], "--owa-timeout must be more than 0 seconds"),
        (["--rpc-min-connection-timeout", "-120"], "--rpc-min-connection-timeout must be more than 0"),
    ],
)
def test_cas_refuses_impossible_exchange_settings_before_it_listens(capsys, flags, problem):
    assert main(["cas", "--host", "127.0.99.1", *flags]) == 2
    assert problem in capsys.readouterr().err


def test_cas_takes_its_clock_from_a_scenario_and_the_flags_given_win():
    """`caslab cas --scenario` runs the scenario's time_scale and [farm.exchange] settings, as `caslab run`
    gives them to its CAS (the compose lab starts its CAS this way); flags given as well win."""
    from lab.cli import _cas_timers

    def timers(*flags: str) -> dict[str, float]:
        return _cas_timers(build_parser().parse_args(["cas", *flags]))

    assert timers() == {}  # the CAS's own defaults
    scenario = ("--scenario", "mapi-idle-60m-keepalive-30m")  # time_scale 1800, tcp_keepalive "30m"
    assert timers(*scenario) == {"time_scale": 1800, "tcp_keepalive_s": 1800}
    assert timers(*scenario, "--time-scale", "60", "--owa-timeout", "600") == {
        "time_scale": 60,
        "tcp_keepalive_s": 1800,
        "owa_timeout_s": 600,
    }
    assert main(["cas", "--host", "127.0.99.1", "--scenario", "no-such-scenario"]) == 2
