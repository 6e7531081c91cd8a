"""Source addresses of simulated clients (DESIGN.md section 6).

Locally every client address is a 127.a.b.c address: Linux accepts any of 127.0.0.0/8 as a source
without configuration. Each population gets its own second octet (127.<64+i>.x.y), and distinct
addresses are spread over many /24s, as real clients are (nginx's `ip_hash` keys on three octets; a
plan that put every client in one /24 would hide that pitfall instead of showing it).

In the docker backend the clients live in the lab network instead (`SubnetAddresses`): the load
generator's container puts every address of the plan on its interface, so they must be addresses of
that network's subnet. A Locust worker that is neither beside the VIP nor in charge of its addresses
(the swarm stack's, compose/lab.yml) connects from its own address (`OwnAddress`).

- tenant-nat, citrix: `source_ips` shared addresses (default 1): every user behind one of them (NAT).
- mobile-carrier: a pool of `source_ips`; a device moves to another pool address every `ip_change_every`.
- intranet, direct: one address per user.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property

SHARED_KINDS = ("tenant-nat", "citrix", "mobile-carrier")
DISTINCT_KINDS = ("intranet", "direct")


def address(population_index: int, n: int) -> str:
    """The n-th address (n >= 0) of a population: consecutive n land in different /24s."""
    if not 0 <= population_index < 64:
        raise ValueError("at most 64 populations")
    if not 0 <= n < 250 * 245:
        raise ValueError("at most 61,250 addresses per population")
    return f"127.{64 + population_index}.{n % 250 + 1}.{n // 250 + 10}"


@dataclass(frozen=True)
class SubnetAddresses:
    """Client addresses inside a lab network (docker backend). The network's first /24 is the lab's own
    (gateway, VIP, CAS, load generator); clients take the /24s after it. Populations take consecutive
    runs of slots, in plan order, and consecutive slots land in different /24s, as locally."""

    network: str  # e.g. "10.221.8.0/22": at least a /23, so that one /24 is left for clients
    pool_sizes: tuple[int, ...]  # how many addresses each population has, in population order

    @cached_property
    def _layout(self) -> tuple[int, int, list[int]]:
        """(first address as an int, number of client /24s, first slot of each population)."""
        net = ipaddress.IPv4Network(self.network)
        blocks = net.num_addresses // 256 - 1
        if blocks < 1:
            raise ValueError(f"{self.network} leaves no /24 for clients; it needs a prefix of /23 or shorter")
        if sum(self.pool_sizes) > blocks * 254:
            wanted = sum(self.pool_sizes)
            raise ValueError(f"{self.network} holds {blocks * 254} client addresses, not {wanted}")
        starts = [sum(self.pool_sizes[:i]) for i in range(len(self.pool_sizes))]
        return int(net.network_address), blocks, starts

    def address(self, population_index: int, n: int) -> str:
        """The n-th address (n >= 0) of a population."""
        base, blocks, starts = self._layout
        size = self.pool_sizes[population_index]
        if not 0 <= n < size:
            raise ValueError(f"population {population_index} has {size} addresses, not {n + 1}")
        slot = starts[population_index] + n
        return str(ipaddress.IPv4Address(base + (1 + slot % blocks) * 256 + 1 + slot // blocks))

    @staticmethod
    def capacity(prefix: int) -> int:
        """How many client addresses a lab network with this prefix length holds."""
        return (2 ** (24 - prefix) - 1) * 254


@dataclass(frozen=True)
class OwnAddress:
    """Clients that connect from the load generator's own address: every address is 0.0.0.0, so the
    kernel picks the one of the interface that reaches the VIP. For workers whose VIP is on another
    host, where loopback addresses cannot go, and which do not own the plan's addresses on an interface
    (a NAT-ed tenant's one address cannot be on several hosts at once): the balancer then sees one
    client address per worker, not one per population."""

    def address(self, population_index: int, n: int) -> str:
        return "0.0.0.0"


@dataclass(frozen=True)
class AddressPlan:
    """Which address user u of one population has at time t (seconds since the load started)."""

    population_index: int
    kind: str
    users: int
    source_ips: int
    change_every_s: float | None = None  # mobile-carrier only
    space: SubnetAddresses | OwnAddress | None = None  # None: loopback addresses (the local backend)

    def __post_init__(self) -> None:
        if self.kind not in SHARED_KINDS + DISTINCT_KINDS:
            raise ValueError(f"unknown population kind {self.kind!r}")

    @property
    def pool_size(self) -> int:
        return self.users if self.kind in DISTINCT_KINDS else max(1, self.source_ips)

    def pool(self) -> list[str]:
        return [self._address(n) for n in range(self.pool_size)]

    def _address(self, n: int) -> str:
        if self.space is None:
            return address(self.population_index, n)
        return self.space.address(self.population_index, n)

    def address_of(self, user: int, t: float = 0.0) -> str:
        if self.kind in DISTINCT_KINDS:
            return self._address(user)
        slot = user % self.pool_size
        if self.kind == "mobile-carrier" and self.change_every_s:
            # Devices move on their own schedule (offset by user), each move to the next pool address.
            moves = int((t + (user % 97) / 97 * self.change_every_s) // self.change_every_s)
            slot = (slot + moves) % self.pool_size
        return self._address(slot)
