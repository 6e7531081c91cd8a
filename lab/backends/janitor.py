"""The janitor: removes what labs left behind when their owner died before tearing them down.

A lab's owner is the `caslab run` or `caslab up` process that made it (lab.backends.owner). When it is
killed with SIGKILL, its local CAS and balancer processes keep running, and a docker lab's containers
and network stay. They are found again by what each lab leaves for this: a state file per lab in the
checkout's `.caslab/labs/` (lab.backends.state: the pids of a local lab's processes) and labels on
every container, network and volume of a docker lab (owner pid, start time, host, checkout).

    clean()                      labs of this checkout whose owner is gone (`caslab run` and `up` do
                                 this before they start, `caslab down` too)
    clean(everything=True)       every lab of this checkout, and every caslab lab on the Docker engine,
                                 whether or not its owner runs (`caslab down --all`); a live owner on
                                 this host is asked to stop first (SIGTERM), so it tears down its own lab

Each returns one line per lab it removed, saying what went.
"""

from __future__ import annotations

import contextlib
import logging

import psutil

from lab.backends.owner import ask_to_stop, running
from lab.backends.state import LabRecord, labs_here

log = logging.getLogger("caslab.lab")

KILL_WAIT_S = 5.0  # how long killed processes have to go


def clean(*, everything: bool = False, docker: bool = True) -> list[str]:
    """Remove the labs of this checkout whose owner is gone (`everything`: every lab, see the module
    docstring), and with `docker` the docker labs as well, if the engine is reachable."""
    removed = [line for record in labs_here() if (line := _clean_record(record, everything))]
    if docker:
        from lab.backends.docker.janitor import clean_engine

        removed += clean_engine(everything=everything)
    return removed


def _clean_record(record: LabRecord, everything: bool) -> str | None:
    """Remove one local lab's leftovers and its state file, if it is to go; what went, in words."""
    if not record.owner.gone():
        if not everything:
            return None
        if not ask_to_stop(record.owner):
            log.warning(
                "the owner of lab %s (%s) did not stop; killing its processes", record.run_id, record.owner
            )
    what = remove_lab(record)
    return f"lab {record.run_id} ({record.command}, {record.backend}, owner {record.owner}): {what}"


def remove_lab(record: LabRecord, timeout: float = KILL_WAIT_S) -> str:
    """Remove everything of one lab at once, without asking anything of it: kill its recorded processes
    (local) or remove its containers and network (docker), then its state file. What went, in words."""
    if record.backend == "docker":
        from lab.backends.docker.janitor import remove_docker_lab

        what = remove_docker_lab(record.run_id, timeout=timeout)
    else:
        killed = kill_recorded(record, timeout)
        what = ", ".join(killed) if killed else "no process was left"
    record.remove()
    return what


def kill_recorded(record: LabRecord, timeout: float = KILL_WAIT_S) -> list[str]:
    """Kill every recorded process of the lab that still runs (pid and start time match), with its
    children (a balancer's workers); returns "role pid N" for each."""
    found = []
    for role, info in record.processes.items():
        process = running(int(info["pid"]), float(info["started"]))
        if process is not None:
            found.append((role, process))
    victims = []
    for _role, process in found:
        try:
            victims += [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    for process in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    _gone, alive = psutil.wait_procs(victims, timeout=timeout)
    for process in alive:
        log.warning("pid %d of lab %s did not exit after SIGKILL", process.pid, record.run_id)
    return [f"{role} pid {process.pid}" for role, process in found]
