"""What the load generator runs: populations of client kinds, their addresses and the VIP's URLs.

A `LoadPlan` is plain data, built from a scenario by the lab (lab.loadplan) or by hand in tests.
`user_classes` turns it into Locust user classes — one per (population, client kind), each with a fixed
number of users — which Locust runs as usual, on its own or driven by the lab.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from caslab.vocab import AB_PORT, HTTP_SERVICES, MAPI_PORT
from loadgen.addresses import AddressPlan

if TYPE_CHECKING:
    from locust import User

# LoadGen-style activity profiles: actions per simulated 8-hour day (Exchange LoadGen 2010 sized its
# Outlook profiles the same way; Heavy was 132 tasks per user-day).
PROFILES: dict[str, int] = {"light": 50, "medium": 100, "heavy": 150}
DAY_S = 8 * 3600


# One worker's part of a plan split over workers (loadgen.split): (population name, client kind) -> the
# user numbers (0-based) it runs of it.
Share = dict[tuple[str, str], list[int]]


@dataclass(frozen=True)
class Endpoints:
    """Where clients send each service: one VIP (single-vip) or one address per service."""

    base_urls: dict[str, str]  # service -> "https://127.0.1.1:8443"
    tcp: dict[str, tuple[str, int]]  # "mapi"/"addressbook" -> (host, port)

    @classmethod
    def from_url(cls, base_url: str) -> Endpoints:
        """Every HTTP service at `base_url` (e.g. Locust's --host), MAPI and Address Book on its host."""
        host = urlsplit(base_url).hostname or "127.0.1.1"
        return cls(
            base_urls=dict.fromkeys(HTTP_SERVICES, base_url.rstrip("/")),
            tcp={"mapi": (host, MAPI_PORT), "addressbook": (host, AB_PORT)},
        )


@dataclass(frozen=True)
class PopulationPlan:
    name: str  # e.g. "tenant-nat#0"
    addresses: AddressPlan
    clients: dict[str, int]  # client kind -> number of users running it
    profile: str = "medium"
    keeps_cookies: bool = True  # for kinds where keeping cookies is a setting (ews-app)

    @property
    def kind(self) -> str:
        return self.addresses.kind


@dataclass
class LoadPlan:
    populations: list[PopulationPlan]
    endpoints: Endpoints
    time_scale: float = 1.0
    seed: int = 0
    domain: str = "caslab.test"
    password: str = "caslab"
    start_time: float = 0.0  # epoch seconds when the load started (mobile address schedules count from it)
    # The run's id, sent with every request (X-CasLab-Run; "run" on MAPI and Address Book lines) so the
    # CAS ledgers tell this run's requests from another's; "" sends none.
    run_id: str = ""
    # The run's CA (PEM text; ca.pem of the run folder): HTTPS clients verify the VIP's certificate
    # against it, as real clients verify theirs. "" verifies nothing (loadgen.tls.client_context).
    ca_pem: str = ""
    tls_max_version: str = "1.3"  # the highest TLS version clients offer: "1.2" or "1.3"
    extra: dict[str, Any] = field(default_factory=dict)

    def think_time(self, profile: str, rng: random.Random) -> float:
        """Seconds between two actions of one user: exponential around the profile's mean, scaled.

        Capped at twice the mean (at most 576 s of Exchange time), below the shortest idle expiry a
        session has (OWA's 15 minutes), so that a break in a run means affinity, not a user who left."""
        mean = DAY_S / PROFILES[profile] / self.time_scale
        return min(rng.expovariate(1 / mean), 2 * mean)


def user_classes(plan: LoadPlan, shares: list[Share] | None = None) -> list[type[User]]:
    """One Locust user class per (population, client kind), each with `fixed_count` users.

    With `shares` (loadgen.split.split_users: the plan dealt to workers), one class per (population,
    client kind, share) instead, which runs exactly the user `numbers` of its share on the worker of
    its `share` (loadgen.dispatch)."""
    from loadgen.kinds import KINDS  # imports locust (gevent); keep plain imports of this module light

    classes: list[type[User]] = []
    for population in plan.populations:
        for kind, count in population.clients.items():
            if count <= 0:
                continue
            base = KINDS[kind]
            name = f"{base.__name__}_{population.name.replace('#', '_').replace('-', '_')}"
            parts = [(name, count, None, None)]
            if shares is not None:
                parts = [
                    (f"{name}_share{i}", len(numbers), tuple(numbers), i)
                    for i, share in enumerate(shares)
                    if (numbers := share.get((population.name, kind)))
                ]
            for class_name, fixed_count, numbers, share in parts:
                classes.append(
                    type(
                        class_name,
                        (base,),
                        {
                            "fixed_count": fixed_count,
                            "plan": plan,
                            "population": population,
                            "identities": itertools.count(),
                            "numbers": numbers,
                            "share": share,
                            "__module__": base.__module__,
                        },
                    )
                )
    return classes
