"""Running a command in a network namespace of its own whose only interface is loopback (`unshare -n`).

Tests that run a user's balancer file do it there: such files hold production addresses, so a rewrite
the lab missed fails inside the namespace instead of sending traffic off the machine.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest


def isolated(*argv: str) -> list[str]:
    """`argv` run in a new network namespace whose only interface is loopback."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def require_namespaces() -> None:
    """Fail (not skip: CI runs every test) where `unshare -n` cannot make a namespace."""
    if shutil.which("unshare") is None or subprocess.run(isolated("true"), capture_output=True).returncode:
        pytest.fail("needs `unshare -n` (root or user namespaces) to run user files away from the network")
