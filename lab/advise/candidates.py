"""The candidates `caslab advise` tries: per group of services, the persistence methods a driver can do
that the population's clients can carry, with a persistence timeout long enough for their timers.

Groups are the services that must share a decision (caslab.vocab.VIP_GROUPS): OWA and ECP share the
logon cookie, MAPI and the Address Book one RPC Client Access session; every other service is alone. A
group no client of the population uses is not searched; a group whose services need no affinity (OAB,
Autodiscover) keeps round robin without a search.

Three sieves, each leaving a rejection with its reason:
- the driver: the whole config (the group's candidate, every other group at its baseline) passes the
  driver's `refusals()` (nginx cannot learn a cookie, Traefik's TCP only round-robins...);
- the clients: lab.balancers.userconfig.predict says what a method does for each client kind; a method
  that breaks a client kind of this population whatever its addresses (a cookie it never returns, a
  header it never sends, a hash of a cookie the CAS sets only later) is not run. Source IP depends on
  the addresses, so it is always measured;
- Outlook Anywhere: a cookie the balancer inserts is no candidate for RPC/HTTP (Outlook 2007 never
  returns one, and Exchange 2010's guidance keys RPC/HTTP on OutlookSession or the source address).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from caslab.vocab import SERVICES, VIP_GROUPS
from lab.balancers import Refusal, driver_class
from lab.balancers.presets import PRESETS
from lab.balancers.userconfig.predict import KIND_SERVICES, NEED, by_method
from lab.model import Persistence, Timeouts, local_farm
from lab.scenario import Scenario, format_duration

GROUPS: tuple[tuple[str, ...], ...] = VIP_GROUPS
# The cookie a cookie method keys on, per group: one the CAS sets on both OWA and ECP (and OWA's links
# carry), EWS's own, and the one Outlook 2010 makes for its RPC channels.
COOKIE: dict[tuple[str, ...], str] = {
    ("owa", "ecp"): "OutlookSession",
    ("ews",): "exchangecookie",
    ("rpchttp",): "OutlookSession",
}
HEADER = "Authorization"
# Cheapest first: no state, then a hash, then a table or a cookie the balancer writes. A search tries
# them in this order, and of two candidates that score alike the cheaper wins.
COST: dict[str, int] = {
    "none": 0, "leastconn": 1, "source-ip": 2, "cookie-hash": 3, "header": 4, "lb-cookie": 5,
    "app-cookie": 6, "ssl-session-id": 7,
}  # fmt: skip
DEFAULT_TIMEOUT_S = 1800.0  # Persistence's own default (Exchange time)
TIMER_MARGIN = 1.25
NOT_FOR_RPCHTTP = (
    "Outlook Anywhere's RPC channels are not a browser: Outlook 2007 never returns a cookie the balancer "
    "inserts, and Exchange 2010's guidance keys RPC/HTTP on OutlookSession or the source address"
)


@dataclass(frozen=True)
class Rejection:
    """A candidate that lost, and why: `stage` is "driver" (refused), "clients" (predicted to break a
    client kind, not run), "run" (a run's figure showed it cannot pass), "ranked" (it passed but another
    did better) or "budget" (not evaluated before the budget ran out)."""

    group: tuple[str, ...]
    method: str  # str(Persistence)
    stage: str
    why: str
    run: str = ""  # the run folder whose figure rejected it, relative to the advice folder


@dataclass(frozen=True)
class GroupCandidates:
    group: tuple[str, ...]
    candidates: tuple[Persistence, ...]  # cheapest first
    rejected: tuple[Rejection, ...]
    baseline: Persistence  # what the group has while others are searched
    searched: bool  # False: no choice to make (one candidate, or no affinity needed)
    note: str = ""  # why it is not searched


def kinds_using(scenario: Scenario, group: tuple[str, ...]) -> dict[str, str]:
    """The client kinds of the population that use a service of `group`, each with the population it
    belongs to (the first one)."""
    out: dict[str, str] = {}
    for population in scenario.populations:
        for kind in population.client_counts():
            if any(s in KIND_SERVICES[kind] for s in group):
                out.setdefault(kind, population.name)
    return out


def persistence_timeout(scenario: Scenario, group: tuple[str, ...]) -> float:
    """Seconds of Exchange time a persistence entry of `group` lives idle: the scenario's own when it sets
    one, else the longest client timer of the group (OWA's logon lifetime, the EAS heartbeat's maximum,
    RPC/HTTP's connection time-out, MAPI's TCP keep-alive) times 1.25, and at least 30 minutes."""
    own = [scenario.balancer.persistence[s].timeout_s for s in group if s in scenario.balancer.persistence]
    if own:
        return max(own)
    ex = scenario.farm.exchange
    timers = {
        "owa": ex.owa_timeout_s or 900.0,
        "ecp": ex.owa_timeout_s or 900.0,
        "eas": ex.eas_heartbeat_max_s or 3540.0,
        "rpchttp": ex.rpc_min_connection_timeout_s or 900.0,
        "mapi": ex.tcp_keepalive_s or 7200.0,
        "addressbook": ex.tcp_keepalive_s or 7200.0,
    }
    longest = max((timers.get(s, 0.0) for s in group), default=0.0)
    return max(DEFAULT_TIMEOUT_S, round(TIMER_MARGIN * longest))


def options(group: tuple[str, ...], timeout_s: float) -> list[Persistence]:
    """Every method the lab can name for `group`, before any sieve, cheapest first."""
    src = Persistence("source-ip", timeout_s=timeout_s)
    out = [Persistence("none"), Persistence("leastconn"), src]
    cookie = COOKIE.get(group)
    if cookie:
        out += [
            Persistence("cookie-hash", cookie, timeout_s),
            Persistence("cookie-hash", cookie, timeout_s, fallback=src),
        ]
    out += [
        Persistence("header", HEADER, timeout_s),
        Persistence("header", HEADER, timeout_s, fallback=src),
        Persistence("lb-cookie", timeout_s=timeout_s),
    ]
    if cookie:
        out.append(Persistence("app-cookie", cookie, timeout_s))
    out.append(Persistence("ssl-session-id", timeout_s=timeout_s))
    return sorted(out, key=lambda p: COST[p.method])


def held_silence_s(scenario: Scenario, service: str) -> float | None:
    """The longest silence (Exchange time, seconds) on a connection the clients of `service` hold open:
    Outlook Anywhere's channels between keep-alives (the OUT channel's 15 minutes by default), a Ping
    for its heartbeat's maximum, an intranet Outlook's MAPI connection between TCP keep-alives (2 hours
    by default). None: the service holds no connection silent."""
    ex = scenario.farm.exchange
    return {
        "rpchttp": ex.rpc_min_connection_timeout_s or 900.0,
        "eas": ex.eas_heartbeat_max_s or 3540.0,
        "mapi": ex.tcp_keepalive_s or 7200.0,
        "addressbook": ex.tcp_keepalive_s or 7200.0,
    }.get(service)


def idle_timeouts(scenario: Scenario) -> tuple[Timeouts, list[str]]:
    """The balancer's idle timeouts for the advice: the scenario's own, each raised where it is shorter
    to TIMER_MARGIN times (in whole minutes) the longest silence of a connection the population holds
    (held_silence_s), with a sentence per raise. Raised for every service alike (one value each side),
    since a balancer may have one client-side timeout per listener. A full proxy does not see TCP
    keep-alive probes (its kernel answers them), so behind one MAPI also needs a timeout longer than
    users leave Outlook idle."""
    own = scenario.balancer.timeouts
    held = {
        s: silence
        for group in used_groups(scenario)
        for s in group
        if (silence := held_silence_s(scenario, s)) is not None
    }
    if not held:
        return own, []
    service, silence = max(held.items(), key=lambda item: item[1])
    needed = 60 * math.ceil(TIMER_MARGIN * silence / 60)  # whole minutes, as an engineer writes it
    raised, notes = {}, []
    for side in ("client_idle", "server_idle"):
        values = [getattr(own, f"{side}_s")] + [getattr(o, f"{side}_s") for o in own.services.values()]
        short = [v for v in values if v is not None and v < needed]
        if short:
            raised[f"{side}_s"] = needed
            notes.append(
                f"{side} {format_duration(min(short))} is shorter than {service}'s longest silence "
                f"({format_duration(silence)}): raised to {format_duration(needed)} for every service"
            )
    if not raised:
        return own, []
    services = {
        s: dataclasses.replace(o, **{k: None for k in raised if getattr(o, k) is not None})
        for s, o in own.services.items()
    }
    return dataclasses.replace(own, **raised, services=services), notes


def with_methods(scenario: Scenario, driver: str, methods: dict[str, Persistence]) -> Scenario:
    """The scenario on `driver` with these per-service methods (the others the recommended preset's) and
    idle timeouts long enough for its clients (idle_timeouts)."""
    balancer = dataclasses.replace(
        scenario.balancer,
        driver=driver,
        preset="recommended",
        persistence=dict(methods),
        config=None,
        timeouts=idle_timeouts(scenario)[0],
    )
    return dataclasses.replace(scenario, balancer=balancer)


def refusals(scenario: Scenario) -> list[Refusal]:
    """What the scenario's driver refuses of its balancer section (empty: it can run it)."""
    spec = scenario.balancer_spec(local_farm(scenario.farm.servers))
    return driver_class(spec.driver)(spec, Path(".")).refusals()


def client_problem(p: Persistence, group: tuple[str, ...], scenario: Scenario) -> str | None:
    """Why `p` breaks a client kind of the population on a service of `group` whatever its addresses,
    or None."""
    if p.method == "lb-cookie" and "rpchttp" in group:
        return NOT_FOR_RPCHTTP
    if p.method == "source-ip":
        return None  # depends on the addresses: measured
    kinds = kinds_using(scenario, group)
    for kind, population in kinds.items():
        for service in group:
            if service not in KIND_SERVICES[kind] or NEED[service] == "none":
                continue
            if kind == "ews-app" and p.method in ("lb-cookie", "app-cookie", "cookie-hash"):
                keeps = next(x.keeps_cookies for x in scenario.populations if x.name == population)
                if not keeps:
                    return f"the EWS apps of {population} keep no cookies"
            prediction = by_method(p, service, kind)
            if prediction.effect in ("hard", "soft"):
                return f"{kind} on {service}: {prediction.why}"
    if p.fallback is not None:
        plain = dataclasses.replace(p, fallback=None)
        if all(_holds_without_fallback(plain, group, kind) for kind in kinds):
            return f"every client sends the key, so the fallback changes nothing: {plain} is the candidate"
        if not any(_holds_without_fallback(plain, group, kind) for kind in kinds):
            return f"no client sends the key, so it is {p.fallback} alone"
    return None


def _holds_without_fallback(p: Persistence, group: tuple[str, ...], kind: str) -> bool:
    return all(by_method(p, s, kind).effect == "holds" for s in group if s in KIND_SERVICES[kind])


def recommended(group: tuple[str, ...], timeout_s: float) -> Persistence:
    p = PRESETS["recommended"][group[0]]
    if p.method in ("none", "leastconn"):
        return p
    fallback = dataclasses.replace(p.fallback, timeout_s=timeout_s) if p.fallback else None
    return dataclasses.replace(p, timeout_s=timeout_s, fallback=fallback)


def used_groups(scenario: Scenario) -> list[tuple[str, ...]]:
    """The groups some client of the population uses, in the order of caslab.vocab.VIP_GROUPS."""
    return [g for g in GROUPS if kinds_using(scenario, g)]


def baseline_methods(scenario: Scenario, driver: str) -> dict[str, Persistence]:
    """Every service's method while nothing is searched yet: the recommended preset's, each with its
    group's timeout, where the driver can do it; else the driver's cheapest method the clients carry."""
    methods: dict[str, Persistence] = {}
    for group in GROUPS:
        p = recommended(group, persistence_timeout(scenario, group))
        methods.update(dict.fromkeys(group, p))
    for group in GROUPS:
        if any(r.service in group for r in refusals(with_methods(scenario, driver, methods))):
            found = generate(scenario, driver, group, methods)
            pick = found.candidates[0] if found.candidates else Persistence("none")
            methods.update(dict.fromkeys(group, pick))
    return methods


def generate(
    scenario: Scenario, driver: str, group: tuple[str, ...], baseline: dict[str, Persistence]
) -> GroupCandidates:
    """The candidates of `group` on `driver` for this population, every other service at `baseline`."""
    timeout_s = persistence_timeout(scenario, group)
    if all(NEED[s] == "none" for s in group):
        p = Persistence("none")
        need = "needs" if len(group) == 1 else "need"
        note = f"{' and '.join(group)} {need} no affinity: round robin places its requests evenly"
        return GroupCandidates(group, (p,), (), p, False, note)
    kept, rejected = [], []
    for p in options(group, timeout_s):
        trial = with_methods(scenario, driver, {**baseline, **dict.fromkeys(group, p)})
        refused = [r for r in refusals(trial) if r.service is None or r.service in group]
        if refused:
            rejected.append(Rejection(group, str(p), "driver", str(refused[0])))
            continue
        problem = client_problem(p, group, scenario)
        if problem:
            rejected.append(Rejection(group, str(p), "clients", problem))
            continue
        kept.append(p)
    base = baseline[group[0]]
    same = [p for p in kept if p == base] or [
        p for p in kept if (p.method, p.name) == (base.method, base.name)
    ]
    start = same[0] if same else (kept[0] if kept else base)
    note = "" if len(kept) > 1 else "one candidate: nothing to compare" if kept else "no candidate left"
    return GroupCandidates(group, tuple(kept), tuple(rejected), start, len(kept) > 1, note)


def all_services(methods: dict[str, Persistence]) -> dict[str, Persistence]:
    """`methods` in the order of caslab.vocab.SERVICES."""
    return {s: methods[s] for s in SERVICES if s in methods}
