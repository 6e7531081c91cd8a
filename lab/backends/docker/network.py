"""The addresses of one docker lab: its own subnet of 10.221.0.0/16, the infrastructure in the subnet's
first /24 and the clients after it (lab.backends.docker's docstring draws the plan)."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

import docker

from lab.backends.docker.engine import DockerLabError, connect
from lab.model import CasEndpoint, Vip
from loadgen.addresses import SubnetAddresses

LAB_NETWORKS = ipaddress.IPv4Network("10.221.0.0/16")  # away from docker0, this host's and the compose lab's


@dataclass(frozen=True)
class LabNetwork:
    """The addresses of one lab: the infrastructure in the first /24 of `subnet`, clients after it."""

    subnet: ipaddress.IPv4Network

    def address(self, n: int) -> str:
        return str(self.subnet.network_address + n)

    @property
    def gateway(self) -> str:
        return self.address(1)

    @property
    def vip(self) -> Vip:
        return Vip(host=self.address(2))

    @property
    def loadgen_host(self) -> str:
        return self.address(250)

    def loadgen_hosts(self, count: int) -> list[str]:
        """The addresses of `count` loadgen containers (--workers): .250 down, clear of the CAS' .11-.109."""
        if not 1 <= count <= 250 - 110 + 1:
            raise ValueError(f"a lab has 1 to {250 - 110 + 1} load generator containers, not {count}")
        return [self.address(250 - n) for n in range(count)]

    def servers(self, count: int) -> list[CasEndpoint]:
        if not 1 <= count <= 99:
            raise ValueError("a farm has 1 to 99 servers")
        return [CasEndpoint(name=f"CAS{n:02d}", host=self.address(10 + n)) for n in range(1, count + 1)]

    @classmethod
    def pick(cls, client_addresses: int, client: docker.DockerClient | None = None) -> LabNetwork:
        """A block of LAB_NETWORKS that no Docker network uses, big enough for the clients (a /22 at
        least, so addresses spread over a few /24s). Chosen at random among the free ones, so that labs
        started together rarely want the same; the engine refuses the second of two that do."""
        prefix = next((p for p in range(22, 15, -1) if SubnetAddresses.capacity(p) >= client_addresses), None)
        if prefix is None:
            raise DockerLabError(f"{client_addresses} client addresses do not fit in {LAB_NETWORKS}")
        used = []
        for network in (client or connect()).networks.list():
            for config in network.attrs.get("IPAM", {}).get("Config") or []:
                subnet = ipaddress.ip_network(config.get("Subnet", "::/128"))
                if subnet.version == 4:
                    used.append(subnet)
        free = [s for s in LAB_NETWORKS.subnets(new_prefix=prefix) if not any(s.overlaps(u) for u in used)]
        if not free:
            raise DockerLabError(f"every /{prefix} of {LAB_NETWORKS} is taken by a Docker network")
        return cls(random.choice(free))
