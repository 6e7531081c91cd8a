"""The command line says what it can do, and says plainly what it cannot do yet."""

import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli import build_parser, main

DESIGN_COMMANDS = {"run", "matrix", "balancer", "up", "down", "cas", "scenarios", "report"}


def test_help_lists_every_command_of_the_design():
    out = subprocess.run(
        [sys.executable, "-m", "lab.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in DESIGN_COMMANDS:
        assert f"    {command}" in out, f"'{command}' missing from --help"


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
