"""A caslab command started in the background, for tests that act on it while it runs (a lab that
serves until `caslab down`, a run interrupted mid-load): returned once it prints the line that says it
is ready."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def start(
    command: list[str], cwd: Path | None, ready: str | tuple[str, ...], **popen: Any
) -> tuple[subprocess.Popen, str]:
    """`command` in the background, returned once it has printed a line starting with `ready` (one of
    them, when a tuple; leading spaces aside), with all it printed until then. `popen`: more arguments
    for subprocess.Popen (env, preexec_fn). AssertionError with its output when it ends first."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )
    said = []
    for line in process.stdout:
        said.append(line)
        if line.lstrip().startswith(ready):
            return process, "".join(said)
    process.wait()
    raise AssertionError(f"{' '.join(command)} never said {ready!r}:\n{''.join(said)}")
