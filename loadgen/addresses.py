"""Source addresses of simulated clients (DESIGN.md section 6).

Locally every client address is a 127.a.b.c address: Linux accepts any of 127.0.0.0/8 as a source
without configuration. Each population gets its own second octet (127.<64+i>.x.y), and distinct
addresses are spread over many /24s, as real clients are (nginx's `ip_hash` keys on three octets; a
plan that put every client in one /24 would hide that pitfall instead of showing it).

- tenant-nat, citrix: `source_ips` shared addresses (default 1): every user behind one of them (NAT).
- mobile-carrier: a pool of `source_ips`; a device moves to another pool address every `ip_change_every`.
- intranet, direct: one address per user.
"""

from __future__ import annotations

from dataclasses import dataclass

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
class AddressPlan:
    """Which address user u of one population has at time t (seconds since the load started)."""

    population_index: int
    kind: str
    users: int
    source_ips: int
    change_every_s: float | None = None  # mobile-carrier only

    def __post_init__(self) -> None:
        if self.kind not in SHARED_KINDS + DISTINCT_KINDS:
            raise ValueError(f"unknown population kind {self.kind!r}")

    @property
    def pool_size(self) -> int:
        return self.users if self.kind in DISTINCT_KINDS else max(1, self.source_ips)

    def pool(self) -> list[str]:
        return [address(self.population_index, n) for n in range(self.pool_size)]

    def address_of(self, user: int, t: float = 0.0) -> str:
        if self.kind in DISTINCT_KINDS:
            return address(self.population_index, user)
        slot = user % self.pool_size
        if self.kind == "mobile-carrier" and self.change_every_s:
            # Devices move on their own schedule (offset by user), each move to the next pool address.
            moves = int((t + (user % 97) / 97 * self.change_every_s) // self.change_every_s)
            slot = (slot + moves) % self.pool_size
        return address(self.population_index, slot)
