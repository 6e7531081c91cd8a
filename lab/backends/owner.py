"""Who owns a lab: the `caslab run` or `caslab up` process that started it, on which host, from which
checkout. A lab whose owner is gone (killed with SIGKILL, a crashed machine session) left its processes
or containers behind; the janitor (lab.backends.janitor) removes them.

A process is named by its pid and its start time together, so that a pid the kernel has handed to
another process since is not taken for the owner, and the janitor never kills a stranger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

# Docker labels of every container, network and volume of a lab (lab.backends.docker.engine adds the run's)
OWNER_PID_LABEL = "org.caslab.owner-pid"
OWNER_STARTED_LABEL = "org.caslab.owner-started"
OWNER_HOST_LABEL = "org.caslab.owner-host"
CHECKOUT_LABEL = "org.caslab.checkout"

OWNER_STOP_S = 30.0  # how long a live owner asked to stop (SIGTERM) has to tear down its own lab


def checkout() -> Path:
    """The checkout a lab belongs to: the folder caslab runs in (its `.caslab/` keeps the labs' state, as
    `reports/` keeps their reports)."""
    return Path.cwd().resolve()


def start_time(pid: int) -> float:
    """When the process started (seconds since the epoch, as the kernel counts it)."""
    return psutil.Process(pid).create_time()


def running(pid: int, started: float) -> psutil.Process | None:
    """The process with this pid and start time, if it still runs (a zombie has exited)."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) > 0.05 or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.NoSuchProcess:
        return None


@dataclass(frozen=True)
class Owner:
    """The process that started a lab."""

    pid: int
    started: float  # its start time: with the pid, it names one process
    host: str
    checkout: str  # the folder it ran in

    @classmethod
    def this_process(cls) -> Owner:
        pid = psutil.Process().pid
        return cls(pid, start_time(pid), socket.gethostname(), str(checkout()))

    def gone(self) -> bool:
        """Whether the owner has exited. Only an owner on this host can be known to be gone: one on
        another host (a shared Docker engine) never is."""
        return self.host == socket.gethostname() and running(self.pid, self.started) is None

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Owner:
        return cls(int(data["pid"]), float(data["started"]), str(data["host"]), str(data["checkout"]))

    def labels(self) -> dict[str, str]:
        return {
            OWNER_PID_LABEL: str(self.pid),
            OWNER_STARTED_LABEL: repr(self.started),
            OWNER_HOST_LABEL: self.host,
            CHECKOUT_LABEL: self.checkout,
        }

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> Owner | None:
        """The owner the labels name, or None when they name none (a lab of an older caslab)."""
        try:
            return cls(
                int(labels[OWNER_PID_LABEL]),
                float(labels[OWNER_STARTED_LABEL]),
                labels[OWNER_HOST_LABEL],
                labels[CHECKOUT_LABEL],
            )
        except (KeyError, ValueError):
            return None


def ask_to_stop(owner: Owner, timeout: float = OWNER_STOP_S) -> bool:
    """Ask a live owner on this host to stop (SIGTERM: it tears its lab down, as on Ctrl-C) and wait until
    it has exited (a zombie, not yet reaped by its parent, has); whether it did in `timeout`."""
    if owner.host != socket.gethostname() or running(owner.pid, owner.started) is None:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(owner.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running(owner.pid, owner.started) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
