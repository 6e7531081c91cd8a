"""The Docker engine as a lab uses it: the connection, the labels that mark what belongs to a lab run,
`LabContainers`, which makes the network and the containers of one run, and the removal of everything
of a run by its label.

Labels of every container, network and volume of a lab:
    org.caslab.run           the run id (lab.backends.state.new_run_id)
    org.caslab.run-dir       the run folder
    org.caslab.role          a container's part: cas01…, balancer, loadgen (loadgen-1… with --workers)
    org.caslab.owner-pid, org.caslab.owner-started, org.caslab.owner-host, org.caslab.checkout
                             who made the lab, and from where (lab.backends.owner): the janitor removes
                             a lab whose owner is gone
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.resource import Model
from docker.types import IPAMConfig, IPAMPool, Mount

if TYPE_CHECKING:
    from lab.backends.docker.network import LabNetwork
    from lab.backends.state import LabRecord

RUN_LABEL, RUN_DIR_LABEL, ROLE_LABEL = "org.caslab.run", "org.caslab.run-dir", "org.caslab.role"
INTERFACE = "eth0"  # a container's interface on its first network


class DockerLabError(RuntimeError):
    """Docker is not there, an image is missing, or a container could not start; the message says which."""


def connect(timeout: float = 120) -> docker.DockerClient:
    """A client of the Docker engine (DOCKER_HOST, else the local socket), or DockerLabError."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as err:
        raise DockerLabError(
            f"Docker is not reachable ({err}); start it (scripts/docker-engine does) or use --backend local"
        ) from None
    return client


def bind(source: Path, target: str | None = None, read_only: bool = False) -> Mount:
    """A host folder mounted in a container, at the same path unless `target` says otherwise."""
    return Mount(target or str(source), str(source), type="bind", read_only=read_only)


class LabContainers:
    """The containers and the network of one lab run. Everything is made here with the run's labels, so
    `remove_all` finds it all, whatever was running when the lab stopped."""

    def __init__(
        self, client: docker.DockerClient, network: LabNetwork, run_dir: Path, record: LabRecord
    ) -> None:
        self.client = client
        self.network = network
        self.run_dir = run_dir
        self.run_id = record.run_id
        self.name = f"caslab-{self.run_id}"
        self.labels = {RUN_LABEL: self.run_id, RUN_DIR_LABEL: str(run_dir), **record.owner.labels()}
        self.user = f"{os.getuid()}:{os.getgid()}"

    def create_network(self) -> None:
        """The lab's bridge network. Internal: the host reaches the containers, nothing else does, and they
        reach nothing outside it."""
        subnet = self.network.subnet
        pool = IPAMPool(subnet=str(subnet), gateway=self.network.gateway)
        try:
            self.client.networks.create(
                self.name,
                driver="bridge",
                internal=True,
                ipam=IPAMConfig(pool_configs=[pool]),
                labels=self.labels,
            )
        except docker.errors.APIError as err:
            raise DockerLabError(f"cannot make the lab network {subnet}: {err.explanation}") from None

    def run(
        self,
        role: str,
        image: str,
        host: str,
        *,
        command: list[str] | None = None,
        entrypoint: list[str] | None = None,
        mounts: Iterable[Mount] = (),
        user: str | None = None,
        cap_add: list[str] | None = None,
        sysctls: dict[str, str] | None = None,
        hostname: str | None = None,
    ) -> Container:
        """Start a container on the lab network at `host`, as the host's user unless `user` says otherwise
        (with `hostname`, else Docker's: the container id's start)."""
        try:
            return self.client.containers.run(
                image,
                command,
                entrypoint=entrypoint,
                name=f"{self.name}-{role}",
                labels={**self.labels, ROLE_LABEL: role},
                detach=True,
                init=True,  # a PID 1 that passes signals on and reaps
                network=self.name,
                networking_config={self.name: self.client.api.create_endpoint_config(ipv4_address=host)},
                user=user or self.user,
                environment={"HOME": "/tmp"},  # the host's uid has no home in the image
                mounts=list(mounts),
                cap_add=cap_add,
                sysctls=sysctls,
                hostname=hostname,
            )
        except docker.errors.APIError as err:
            raise DockerLabError(f"cannot start the {role} container: {err.explanation}") from None

    def add_addresses(self, container: Container, addresses: list[str]) -> None:
        """Put more addresses on a running container's interface (it needs NET_ADMIN)."""
        script = f'for a; do ip address add "$a/32" dev {INTERFACE} || exit 1; done'
        done = container.exec_run(["sh", "-c", script, "sh", *addresses], user="root")
        if done.exit_code != 0:
            raise DockerLabError(f"cannot add {', '.join(addresses)}: {done.output.decode(errors='replace')}")

    def remove_all(self, timeout: float = 60.0) -> None:
        """Remove everything of the run (see remove_run)."""
        remove_run(self.client, self.run_id, timeout)


def lab_things(client: docker.DockerClient, run_id: str | None = None) -> tuple[list, list, list]:
    """The containers, networks and volumes of one run, or of every lab run with no `run_id`."""
    only = {"label": f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL}
    return (
        client.containers.list(all=True, filters=only),
        client.networks.list(filters=only),
        client.volumes.list(filters=only),
    )


def labels_of(thing: Model) -> dict[str, str]:
    """A container's, network's or volume's labels."""
    if isinstance(thing, Container):
        return thing.labels
    return thing.attrs.get("Labels") or {}


def remove_run(client: docker.DockerClient, run_id: str, timeout: float = 60.0) -> tuple[int, int, int]:
    """Remove every container (with its anonymous volumes), network and volume of the run; how many of
    each. A network with a container still attached refuses to go, so this repeats until nothing is
    left, or DockerLabError after `timeout`."""
    deadline = time.monotonic() + timeout
    counts = None
    while True:
        containers, networks, volumes = lab_things(client, run_id)
        counts = counts or (len(containers), len(networks), len(volumes))
        if not (containers or networks or volumes):
            return counts
        problems = []
        for thing, remove in [
            *((c, lambda c=c: c.remove(force=True, v=True)) for c in containers),
            *((n, n.remove) for n in networks),
            *((v, lambda v=v: v.remove(force=True)) for v in volumes),
        ]:
            try:
                remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as err:
                problems.append(f"{thing.name}: {err.explanation}")
        if problems and time.monotonic() > deadline:
            raise DockerLabError(f"could not remove {'; '.join(problems)}")
        if problems:
            time.sleep(0.2)  # the engine is still detaching a container; ask again
