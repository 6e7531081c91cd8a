"""How far the written scenario is from the logs: the observed figures beside what the scenario makes
when the lab runs it (synthesized), for users per address, the client mix, requests per client per
hour by kind, and address changes per device.

The synthesized side comes from the lab's own plan of the scenario: its address plan
(loadgen.addresses: which address each user has, and when a phone moves) and its client counts (the
first users of a population run each kind: `Population.client_counts`). Request rates are the one
thing a scenario cannot set: the lab's client kinds keep their own habits, measured in
lab.fromlogs.lab_rates, which is what the synthesized rates are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab.fromlogs.lab_rates import LAB_RATES
from lab.fromlogs.model import Inference, InferredPopulation
from lab.scenario import Population, Scenario
from loadgen.addresses import AddressPlan

MAX_STEPS = 2000  # instants a phone's addresses are sampled at, over the logs' span


@dataclass(frozen=True)
class Spread:
    """Values of one figure over addresses or devices: their mean, least and most."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float] | tuple[float, ...]) -> Spread | None:
        if not values:
            return None
        array = np.asarray(values, float)
        return cls(float(array.mean()), float(array.min()), float(array.max()))


@dataclass(frozen=True)
class Pair:
    """One figure, observed and synthesized (None where one side has none)."""

    label: str
    observed: float | None
    synthesized: float | None
    observed_spread: Spread | None = None
    synthesized_spread: Spread | None = None


@dataclass(frozen=True)
class Fit:
    users_per_address: list[Pair]  # per population: mean users (devices) per address
    client_mix: list[Pair]  # per population and kind: share of users, 0..1
    rates: list[Pair]  # per kind: requests per client per hour
    address_changes: list[Pair]  # per carrier population: changes per device per hour


def fit(inference: Inference, scenario: Scenario) -> Fit:
    files = inference.observed.files
    first = min((f.first_ts for f in files if f.first_ts is not None), default=0)
    last = max((f.last_ts for f in files if f.last_ts is not None), default=0)
    span_s = (last - first) * inference.observed.time_scale  # Exchange time
    by_name = {p.name: p for p in scenario.populations}
    users_per_address, mix, changes = [], [], []
    for inferred in inference.populations:
        written = by_name[inferred.name]
        synthesized = synthesized_users_per_address(written, span_s)
        users_per_address.append(_spread_pair(inferred.name, inferred.users_per_address, synthesized))
        mix += _mix(inferred, written)
        if written.kind == "mobile-carrier":
            every = written.ip_change_every_s
            changes.append(
                _spread_pair(inferred.name, inferred.changes_per_hour, [3600 / every if every else 0.0])
            )
    rates = [
        Pair(kind, rate.per_hour, LAB_RATES.get(kind))
        for kind, rate in sorted(inference.rates.items(), key=lambda kv: -kv[1].clients)
    ]
    return Fit(users_per_address, mix, rates, changes)


def _spread_pair(label: str, observed: tuple | list, synthesized: tuple | list) -> Pair:
    seen, made = Spread.of(observed), Spread.of(synthesized)
    return Pair(label, seen.mean if seen else None, made.mean if made else None, seen, made)


def _mix(inferred: InferredPopulation, written: Population) -> list[Pair]:
    counts = written.client_counts()
    kinds = sorted(set(inferred.clients) | set(counts))
    return [
        Pair(
            f"{inferred.name} {kind}",
            inferred.clients.get(kind, 0) / inferred.users,
            counts.get(kind, 0) / written.users,
        )
        for kind in kinds
    ]


def synthesized_users_per_address(population: Population, span_s: float) -> list[int]:
    """Users (phones) per address that the lab gives a population over `span_s` of Exchange time: only
    users that run some kind show (the first `max(client_counts)` of them)."""
    present = max(population.client_counts().values(), default=0)
    plan = AddressPlan(
        0, population.kind, population.users, population.source_ips, population.ip_change_every_s
    )
    if not present:
        return []
    if plan.kind in ("intranet", "direct"):
        return [1] * present
    if not plan.change_every_s or span_s <= 0:
        slots = [plan.address_of(u) for u in range(present)]
        return list(np.unique(slots, return_counts=True)[1])
    steps = min(MAX_STEPS, max(2, int(4 * span_s / plan.change_every_s)))
    seen: dict[str, set[int]] = {}
    for t in np.linspace(0, span_s, steps):
        for u in range(present):
            seen.setdefault(plan.address_of(u, float(t)), set()).add(u)
    return [len(devices) for devices in seen.values()]
