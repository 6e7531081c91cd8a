"""The docker backend's load generator over N containers (`caslab run --backend docker --workers N`):
the Workers of loadgen.distributed, whose Locust master runs in the lab's process on the lab network's
gateway.

Container i (role and host name `loadgen-<i+1>`, at LabNetwork.loadgen_hosts(N)[i]) runs
loadgen.container_worker with the source addresses of share i only (loadgen.split.share_addresses),
so the master must send share i to it and no other: `share_of` tells the master which worker that is,
by the host name the worker reports. Each container's output goes to loadgen-<i+1>.log in the run
folder when it stops; a container that exits before the end makes the run invalid, named.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors

from lab.backends.docker.engine import LabContainers, bind
from loadgen.split import share_addresses

if TYPE_CHECKING:
    from docker.models.containers import Container

    from loadgen.plan import LoadPlan, Share

log = logging.getLogger("caslab.lab")


def worker_names(count: int) -> list[str]:
    """The role and host name of each of `count` loadgen containers: loadgen-1, loadgen-2..."""
    return [f"loadgen-{n}" for n in range(1, count + 1)]


class LoadgenContainers:
    """`count` loadgen containers, each one Locust worker for its share of `plan` (loadgen.distributed's
    Workers)."""

    logs = "loadgen-<n>.log"

    def __init__(
        self, containers: LabContainers, image: str, plan: LoadPlan, events_path: Path, count: int
    ) -> None:
        self.containers = containers
        self.image = image
        self.plan = plan
        self.events_path = events_path
        self.count = count
        self.names = worker_names(count)
        self.started: dict[str, Container] = {}

    def start(self, master: str, shares: list[Share]) -> None:
        run_dir = self.containers.run_dir
        hosts = self.containers.network.loadgen_hosts(self.count)
        for name, host, share in zip(self.names, hosts, shares, strict=True):
            addresses = share_addresses(self.plan, share)
            log.info("%s at %s: %d client addresses", name, host, len(addresses))
            args = ["--master", master, "--events", str(self.events_path), "--user", self.containers.user]
            self.started[name] = self.containers.run(
                name,
                self.image,
                host,
                entrypoint=["python", "-m", "loadgen.container_worker"],
                command=[*args, *addresses],
                mounts=[bind(run_dir)],
                user="0",  # to add the client addresses; container_worker then drops to the host's user
                cap_add=["NET_ADMIN"],
                hostname=name,
            )

    def share_of(self, worker: dict) -> int | None:
        host = worker.get("host")
        return self.names.index(host) if host in self.names else None

    def dead(self) -> list[str]:
        reasons = []
        for name, container in self.started.items():
            try:
                container.reload()
            except docker.errors.NotFound:
                reasons.append(f"load generator container {name} is gone")
                continue
            if container.status not in ("created", "running"):
                code = container.attrs["State"]["ExitCode"]
                reasons.append(f"load generator container {name} exited with code {code} (see {name}.log)")
        return reasons

    def stop(self, timeout_s: float = 10.0) -> None:
        """Wait for the containers to exit (the master told them to quit), kill what is left, and keep
        each one's output in the run folder as loadgen-<n>.log."""
        deadline = time.monotonic() + timeout_s
        for name, container in self.started.items():
            try:
                if not _exited(container, deadline):
                    container.kill()
            except docker.errors.APIError as err:  # e.g. it exited between the last look and the kill
                log.warning("could not stop %s: %s", name, err)
            try:
                (self.containers.run_dir / f"{name}.log").write_bytes(container.logs())
            except docker.errors.APIError as err:
                log.warning("could not keep the output of %s: %s", name, err)


def _exited(container: Container, deadline: float) -> bool:
    """Whether `container` has exited by `deadline` (monotonic time)."""
    while True:
        container.reload()
        if container.status not in ("created", "running"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
