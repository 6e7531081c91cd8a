"""What `caslab scenario from-logs` infers, as plain data: the populations with their evidence, the
request rates per client kind, the peak hour. The writer turns it into a scenario, the fit compares it
with what that scenario makes. No user name or device id is held here: only counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.fromlogs.tally import Observed


@dataclass(frozen=True)
class InferredPopulation:
    """One population of the scenario, and what in the logs made it."""

    kind: str  # a population kind of the scenario (lab.scenario.POPULATION_KINDS)
    name: str
    users: int
    addresses: int  # distinct source addresses its clients came from
    clients: dict[str, int]  # client kind -> users running it
    evidence: tuple[str, ...]  # sentences, each written as a comment above the population
    users_per_address: tuple[int, ...]  # observed: distinct users (or devices) of each of its addresses
    ip_change_every_s: float | None = None  # Exchange time; phones that change address
    changes_per_hour: tuple[float, ...] = ()  # observed: per device, address changes per Exchange hour
    peak_users: int = 0  # its users active in the peak hour

    @property
    def source_ips(self) -> int:
        """What the scenario's `source_ips` says: its addresses, at most one per user."""
        return max(1, min(self.addresses, self.users))


@dataclass(frozen=True)
class KindRate:
    """How often a client of one kind made requests, in Exchange time."""

    kind: str
    clients: int
    requests: int
    per_hour: float | None  # requests per client per hour while it was active; None: too few to say
    services: dict[str, float] = field(default_factory=dict)  # share of its requests per service

    @property
    def gap_s(self) -> float | None:
        """The mean time between two requests of one client."""
        return 3600 / self.per_hour if self.per_hour else None


@dataclass(frozen=True)
class PeakHour:
    """The Exchange hour with the most clients active."""

    start_ts: float  # in the logs' clock (epoch seconds, UTC)
    clients: int
    users: int
    requests: int


@dataclass(frozen=True)
class Inference:
    populations: tuple[InferredPopulation, ...]
    rates: dict[str, KindRate]
    peak: PeakHour | None
    notes: tuple[str, ...]  # findings about the logs as a whole (the balancer's address, misfits...)
    observed: Observed
    requests: int  # requests read
    clients: int
    users: int
