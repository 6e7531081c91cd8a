"""Scenario files (DESIGN.md section 8): TOML in, typed frozen dataclasses out, every mistake explained.

A scenario names a farm, a balancer (driver, preset, per-service persistence overrides), populations of
clients, faults and thresholds. `load_scenario` reads a file or a bundled name (`lab/scenarios/*.toml`)
and checks it completely before anything starts: a mistake is one `ScenarioError` naming the file, the
key as a dotted path (`population[1].ip_change_every`) and what is allowed there.

Keys beyond DESIGN.md section 8, each because a part of the lab needs it:
- top level `description` (one line, shown by `caslab scenarios` and in the report) and `expect`
  ("pass" | "fail": the verdict the scenario is meant to produce, a known answer of section 12, so a
  test can run a bundled scenario and compare);
- `[farm] oab_skew` (DESIGN.md section 3: the CAS differ in OAB version);
- `[[population]] name` (the label in events and reports; default the kind, `kind#i` when a kind
  repeats) and `keeps_cookies` (whether `ews-app` clients keep cookies, section 4; default true);
- `[thresholds] fault_collateral_breaks`: sessions NOT on a failed CAS that broke while it was out
  (a CAS failing is allowed to break its own sessions, never the others').

Times: durations are strings such as "500ms", "20s", "2m", "1h" or "1m30s". `duration`, `ramp` and a
fault's `at` are wall-clock time; `at` counts from the start of the load phase (after the ramp).
Exchange's own times run `time_scale` faster: protocol timers in the mock CAS, persistence timeouts
(divided when `balancer_spec` builds the spec for a driver) and a mobile device's `ip_change_every`
(divided by the load generator).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from caslab.vocab import (
    CLIENT_KINDS,
    DRIVERS,
    FAULT_ACTIONS,
    METHODS,
    SERVICES,
    TCP_SERVICES,
    TLS_MODES,
    TOPOLOGIES,
)
from lab.model import BalancerSpec, CasEndpoint, HealthCheck, Persistence, TlsFiles, Vip, local_farm

SCENARIO_DIR = Path(__file__).parent / "scenarios"

EXPECTATIONS = ("pass", "fail")


@dataclass(frozen=True)
class PopulationKind:
    """Defaults of one population kind (DESIGN.md section 6)."""

    own_address: bool  # every user has an address of their own (source_ips is not a setting)
    default_source_ips: int
    default_clients: dict[str, float]
    allowed_clients: tuple[str, ...] = CLIENT_KINDS


POPULATION_KINDS: dict[str, PopulationKind] = {
    # A hosted tenant behind its office NAT: browsers, Outlook Anywhere and phones on the office Wi-Fi.
    "tenant-nat": PopulationKind(
        False, 1, {"browser": 0.5, "outlook2010-rpchttp": 0.4, "outlook2007-rpchttp": 0.1, "eas-device": 0.3}
    ),
    # Phones behind carrier NAT; the pool default is small so that addresses are shared, as they are.
    "mobile-carrier": PopulationKind(False, 4, {"eas-device": 1.0}, ("eas-device",)),
    "intranet": PopulationKind(True, 0, {"outlook-mapi": 1.0, "browser": 0.5}),
    "citrix": PopulationKind(False, 1, {"outlook-mapi": 1.0}),
    "direct": PopulationKind(True, 0, {"browser": 0.5, "outlook2010-rpchttp": 0.4, "eas-device": 0.4}),
}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_HELP = 'a string such as "500ms", "20s", "2m", "1h" or "1m30s"'
# Methods that read HTTP (cookies, headers): impossible on plain TCP and through TLS passthrough.
HTTP_METHODS = ("lb-cookie", "app-cookie", "cookie-hash", "header")


class ScenarioError(ValueError):
    """A scenario file is wrong; the message names the file, the key and what is allowed."""

    def __init__(self, origin: str, key: str, problem: str) -> None:
        self.origin, self.key, self.problem = origin, key, problem
        super().__init__(f"{origin}: {key}: {problem}" if key else f"{origin}: {problem}")


def parse_duration(text: str) -> float:
    """Seconds in a duration string ("500ms", "2m", "1m30s"). Raises ValueError on anything else."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected {DURATION_HELP}")
    compact = text.strip().replace(" ", "")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(compact) or pos == 0:
        raise ValueError(f"{text!r} is not a duration; expected {DURATION_HELP}")
    return total


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration for display: 90 -> "1m30s", 0.5 -> "500ms"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    out, rest = "", seconds
    for unit, size in (("h", 3600), ("m", 60)):
        if rest >= size:
            whole = int(rest // size)
            out, rest = out + f"{whole}{unit}", rest - whole * size
    return out + (f"{rest:g}s" if rest or not out else "")


# ---- the typed scenario ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Farm:
    servers: int = 3
    tls: str = "none"
    oab_skew: bool = False

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(f"CAS{n:02d}" for n in range(1, self.servers + 1))


@dataclass(frozen=True)
class BalancerSection:
    driver: str = "envoy"
    topology: str = "single-vip"
    preset: str = "recommended"
    persistence: dict[str, Persistence] = field(default_factory=dict)  # per-service overrides
    health: HealthCheck = field(default_factory=HealthCheck)

    def methods(self) -> dict[str, Persistence]:
        """The per-service methods: the preset with the overrides applied."""
        from lab.balancers.presets import resolve

        return resolve(self.preset, self.persistence)


@dataclass(frozen=True)
class Population:
    name: str
    kind: str
    users: int
    source_ips: int  # distinct source addresses; equals users for kinds with an address per user
    clients: dict[str, float]  # client kind -> share of users running it (shares may sum above 1)
    ip_change_every_s: float | None = None  # mobile-carrier: a device moves to another pool address
    keeps_cookies: bool = True  # ews-app clients keep cookies (DESIGN.md section 4)

    def client_counts(self) -> dict[str, int]:
        """Users running each client kind: the share of `users`, at least one for a share above zero."""
        return {k: max(1, round(share * self.users)) for k, share in self.clients.items() if share > 0}


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the load phase started (after the ramp)
    server: str
    action: str


@dataclass(frozen=True)
class Thresholds:
    """Limits a run must stay within; a per-service limit is a dict service -> limit, None = no check."""

    hard_breaks: int | dict[str, int] | None = None
    split_sessions_pct: float | dict[str, float] | None = None
    balance_max_over_mean: float | None = None
    error_rate_pct: float | None = None
    fault_collateral_breaks: int | None = None


# Used when a scenario has no [thresholds] at all: a run with no checks could never fail.
DEFAULT_THRESHOLDS = Thresholds(hard_breaks=0, error_rate_pct=1.0)


@dataclass(frozen=True)
class Scenario:
    name: str
    duration_s: float
    ramp_s: float
    time_scale: float
    seed: int
    farm: Farm
    balancer: BalancerSection
    populations: tuple[Population, ...]
    faults: tuple[Fault, ...] = ()
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    description: str = ""
    expect: str | None = None
    origin: str = "<scenario>"  # the file it came from, for messages
    source_text: str = field(default="", repr=False, compare=False)  # the TOML, kept for re-rendering
    overrides: dict[str, str] = field(default_factory=dict)  # what the command line changed

    def with_overrides(
        self, driver: str | None = None, preset: str | None = None, duration: str | None = None
    ) -> Scenario:
        """This scenario with the command line's --driver/--preset/--duration applied and checked again."""
        from lab.balancers.presets import PRESETS

        given = {k: v for k, v in (("driver", driver), ("preset", preset), ("duration", duration)) if v}
        if not given:
            return self
        if driver and driver not in DRIVERS:
            allowed = ", ".join(sorted(DRIVERS))
            raise ScenarioError(self.origin, "--driver", f"unknown driver {driver!r}; allowed: {allowed}")
        if preset and preset not in PRESETS:
            raise ScenarioError(
                self.origin, "--preset", f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}"
            )
        balancer = dataclasses.replace(
            self.balancer, driver=driver or self.balancer.driver, preset=preset or self.balancer.preset
        )
        duration_s = self.duration_s
        if duration:
            try:
                duration_s = parse_duration(duration)
            except ValueError as err:
                raise ScenarioError(self.origin, "--duration", str(err)) from None
            if duration_s <= 0:
                raise ScenarioError(self.origin, "--duration", "must be longer than 0s")
        changed = dataclasses.replace(
            self, balancer=balancer, duration_s=duration_s, overrides={**self.overrides, **given}
        )
        _check_whole(changed, f"{self.origin} (with {', '.join(f'--{k} {v}' for k, v in given.items())})")
        return changed

    def balancer_spec(
        self, servers: list[CasEndpoint], vip: Vip | None = None, tls_files: TlsFiles | None = None
    ) -> BalancerSpec:
        """The driver's input: preset + overrides, with persistence timeouts run `time_scale` faster."""
        methods = {s: _scaled(p, self.time_scale) for s, p in self.balancer.methods().items()}
        return BalancerSpec(
            driver=self.balancer.driver,
            persistence=methods,
            servers=servers,
            vip=vip or Vip(),
            topology=self.balancer.topology,
            tls=self.farm.tls,
            health=self.balancer.health,
            tls_files=tls_files,
            preset=self.balancer.preset,
        )

    def fault_schedule(self) -> list[tuple[float, Fault]]:
        """(seconds since the run started, ramp included, fault), in firing order."""
        return sorted(((self.ramp_s + f.at_s, f) for f in self.faults), key=lambda pair: pair[0])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data for summary.json."""
        return {
            "name": self.name,
            "description": self.description,
            "expect": self.expect,
            "origin": self.origin,
            "overrides": dict(self.overrides),
            "duration_s": self.duration_s,
            "ramp_s": self.ramp_s,
            "time_scale": self.time_scale,
            "seed": self.seed,
            "populations": [
                {
                    "name": p.name,
                    "kind": p.kind,
                    "users": p.users,
                    "source_ips": p.source_ips,
                    "clients": p.client_counts(),
                    "ip_change_every_s": p.ip_change_every_s,
                }
                for p in self.populations
            ],
            "faults": [dataclasses.asdict(f) for f in self.faults],
            "thresholds": {k: v for k, v in dataclasses.asdict(self.thresholds).items() if v is not None},
        }


def _scaled(p: Persistence, time_scale: float) -> Persistence:
    fallback = _scaled(p.fallback, time_scale) if p.fallback else None
    return dataclasses.replace(p, timeout_s=p.timeout_s / time_scale, fallback=fallback)


# ---- reading TOML ----------------------------------------------------------------------------------


class _Reader:
    """Typed access to one TOML table; every error names the file and the dotted key."""

    def __init__(self, origin: str, table: dict[str, Any], path: str, allowed: tuple[str, ...]) -> None:
        self.origin, self.table, self.path = origin, table, path
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.fail(key, f"unknown key; {hint}allowed here: {', '.join(allowed)}")

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ScenarioError(self.origin, self.key(key), problem)

    def has(self, key: str) -> bool:
        return key in self.table

    def text(self, key: str, default: str | None = None, choices: tuple[str, ...] | None = None) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_tname(value)}" if key in self.table else "is required")
        if choices is not None and value not in choices:
            self.fail(key, f"{value!r} is not allowed; allowed: {', '.join(choices)}")
        return value

    def integer(self, key: str, default: int | None = None, minimum: int | None = None) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(
                key, f"expected an integer, got {_tname(value)}" if key in self.table else "is required"
            )
        if minimum is not None and value < minimum:
            self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def number(self, key: str, default: float | None = None, positive: bool = False) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"expected a number, got {_tname(value)}" if key in self.table else "is required")
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            self.fail(key, f"must be a {'positive' if positive else 'non-negative'} number, got {value}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_tname(value)}")
        return value

    def duration(self, key: str, default: str | None = None) -> float:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            self.fail(
                key, f"expected {DURATION_HELP}, got {_tname(value)}" if key in self.table else "is required"
            )
        try:
            return parse_duration(value)
        except ValueError as err:
            self.fail(key, str(err))

    def table_at(self, key: str, allowed: tuple[str, ...]) -> _Reader:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, got {_tname(value)}")
        return _Reader(self.origin, value, self.key(key), allowed)

    def tables(self, key: str) -> list[dict[str, Any]]:
        value = self.table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(key, f"expected an array of tables ([[{key}]]), got {_tname(value)}")
        return value


def _tname(value: object) -> str:
    if value is None:
        return "nothing"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    return names.get(type(value), "a table" if isinstance(value, dict) else type(value).__name__)


TOP_KEYS = (
    "name", "description", "expect", "duration", "ramp", "time_scale", "seed",
    "farm", "balancer", "population", "fault", "thresholds",
)  # fmt: skip
PERSISTENCE_KEYS = ("method", "name", "timeout", "fallback")


def parse_scenario(text: str, origin: str = "<scenario>", default_name: str = "scenario") -> Scenario:
    """Build a Scenario from TOML text. Raises ScenarioError (file, key, what is allowed)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(origin, "", f"not valid TOML: {err}") from None
    top = _Reader(origin, data, "", TOP_KEYS)
    duration_s = top.duration("duration", "60s")
    if duration_s <= 0:
        top.fail("duration", "must be longer than 0s")
    time_scale = top.number("time_scale", 1, positive=True)
    farm = _read_farm(top.table_at("farm", ("servers", "tls", "oab_skew")))
    balancer = _read_balancer(
        top.table_at("balancer", ("driver", "topology", "preset", "persistence", "health"))
    )
    populations = tuple(_read_populations(top))
    if not populations:
        top.fail("population", "a scenario needs at least one [[population]]")
    faults = tuple(
        _read_fault(_Reader(origin, t, f"fault[{i}]", ("at", "server", "action")))
        for i, t in enumerate(top.tables("fault"))
    )
    thresholds = DEFAULT_THRESHOLDS
    if top.has("thresholds"):
        thresholds = _read_thresholds(
            top.table_at("thresholds", tuple(f.name for f in dataclasses.fields(Thresholds)))
        )
    scenario = Scenario(
        name=top.text("name", default_name),
        description=top.text("description", ""),
        expect=top.text("expect", choices=EXPECTATIONS) if top.has("expect") else None,
        duration_s=duration_s,
        ramp_s=top.duration("ramp", "0s"),
        time_scale=time_scale,
        seed=top.integer("seed", 0),
        farm=farm,
        balancer=balancer,
        populations=populations,
        faults=faults,
        thresholds=thresholds,
        origin=origin,
        source_text=text,
    )
    _check_whole(scenario, origin)
    return scenario


def _read_farm(r: _Reader) -> Farm:
    return Farm(
        servers=r.integer("servers", 3, minimum=1),
        tls=r.text("tls", "none", TLS_MODES),
        oab_skew=r.boolean("oab_skew", False),
    )


def _read_balancer(r: _Reader) -> BalancerSection:
    from lab.balancers.presets import PRESETS

    overrides = {}
    table = r.table_at("persistence", SERVICES)
    for service in table.table:
        overrides[service] = _read_persistence(table, service, allow_fallback=True)
    health = r.table_at("health", ("interval", "fall", "rise"))
    return BalancerSection(
        driver=r.text("driver", "envoy"),  # checked against the installed drivers by _check_driver
        topology=r.text("topology", "single-vip", TOPOLOGIES),
        preset=r.text("preset", "recommended", tuple(PRESETS)),
        persistence=overrides,
        health=HealthCheck(
            interval_s=health.duration("interval", "1s"),
            fall=health.integer("fall", 2, minimum=1),
            rise=health.integer("rise", 2, minimum=1),
        ),
    )


def _read_persistence(parent: _Reader, key: str, allow_fallback: bool) -> Persistence:
    """`{ method = "header", name = "Authorization", timeout = "45m", fallback = {...} }` or the short
    string form of DESIGN.md section 5: "source-ip", "cookie-hash OutlookSession"."""
    value = parent.table[key]
    where = parent.key(key)
    if isinstance(value, str):
        method, _, name = value.partition(" ")
        value = {"method": method, **({"name": name.strip()} if name.strip() else {})}
    elif not isinstance(value, dict):
        parent.fail(
            key, f'expected a table {{ method = "...", name = "..." }} or a string, got {_tname(value)}'
        )
    r = _Reader(parent.origin, value, where, PERSISTENCE_KEYS if allow_fallback else PERSISTENCE_KEYS[:3])
    method = r.text("method", choices=tuple(METHODS))
    name = r.text("name") if r.has("name") else None
    if METHODS[method] and not name:
        r.fail("name", f"method '{method}' needs the name of a cookie or header")
    if not METHODS[method] and name:
        r.fail("name", f"method '{method}' takes no name")
    fallback = _read_persistence(r, "fallback", allow_fallback=False) if r.has("fallback") else None
    return Persistence(method, name, r.duration("timeout", "30m"), fallback)


def _read_populations(top: _Reader) -> list[Population]:
    tables = top.tables("population")
    kinds = [t.get("kind") for t in tables]
    out: list[Population] = []
    for i, table in enumerate(tables):
        r = _Reader(
            top.origin,
            table,
            f"population[{i}]",
            ("kind", "name", "users", "source_ips", "clients", "ip_change_every", "keeps_cookies"),
        )
        kind = r.text("kind", choices=tuple(POPULATION_KINDS))
        spec = POPULATION_KINDS[kind]
        users = r.integer("users", minimum=1)
        if spec.own_address:
            if r.has("source_ips"):
                r.fail("source_ips", f"{kind} users each have their own address; leave source_ips out")
            source_ips = users
        else:
            source_ips = r.integer("source_ips", min(spec.default_source_ips, users), minimum=1)
            if source_ips > users:
                r.fail(
                    "source_ips", f"{source_ips} addresses for {users} users: at most one address per user"
                )
        change = None
        if r.has("ip_change_every"):
            if kind != "mobile-carrier":
                r.fail("ip_change_every", "only mobile-carrier devices change address")
            change = r.duration("ip_change_every")
            if change <= 0:
                r.fail("ip_change_every", "must be longer than 0s")
            if source_ips < 2:
                r.fail("ip_change_every", "a device can only change address with source_ips of 2 or more")
        clients = _read_clients(r, kind, spec)
        default_name = kind if kinds.count(kind) == 1 else f"{kind}#{i}"
        out.append(
            Population(
                name=r.text("name", default_name),
                kind=kind,
                users=users,
                source_ips=source_ips,
                clients=clients,
                ip_change_every_s=change,
                keeps_cookies=r.boolean("keeps_cookies", True),
            )
        )
    names = [p.name for p in out]
    for i, name in enumerate(names):
        if names.index(name) != i:
            top.fail(f"population[{i}].name", f"{name!r} is the name of population[{names.index(name)}] too")
    return out


def _read_clients(r: _Reader, kind: str, spec: PopulationKind) -> dict[str, float]:
    if not r.has("clients"):
        return dict(spec.default_clients)
    table = r.table_at("clients", CLIENT_KINDS)
    for key in table.table:  # a known client kind this population kind cannot have
        if key not in spec.allowed_clients:
            table.fail(key, f"{kind} has only {', '.join(spec.allowed_clients)}")
    shares = {}
    for client in table.table:
        share = table.number(client)
        if share > 1:
            table.fail(client, f"a share of users is between 0 and 1, got {share}")
        shares[client] = share
    if not any(shares.values()):
        r.fail("clients", "no client kind has a share above 0: the population would send nothing")
    return shares


def _read_fault(r: _Reader) -> Fault:
    return Fault(
        at_s=r.duration("at"), server=r.text("server"), action=r.text("action", choices=FAULT_ACTIONS)
    )


def _read_thresholds(r: _Reader) -> Thresholds:
    def per_service(key: str, integer: bool) -> Any:
        if not r.has(key):
            return None
        if isinstance(r.table[key], dict):
            table = r.table_at(key, SERVICES)
            return {s: (table.integer(s, minimum=0) if integer else table.number(s)) for s in table.table}
        return r.integer(key, minimum=0) if integer else r.number(key)

    return Thresholds(
        hard_breaks=per_service("hard_breaks", integer=True),
        split_sessions_pct=per_service("split_sessions_pct", integer=False),
        balance_max_over_mean=r.number("balance_max_over_mean") if r.has("balance_max_over_mean") else None,
        error_rate_pct=r.number("error_rate_pct") if r.has("error_rate_pct") else None,
        fault_collateral_breaks=(
            r.integer("fault_collateral_breaks", minimum=0) if r.has("fault_collateral_breaks") else None
        ),
    )


# ---- rules across sections -------------------------------------------------------------------------


def _check_whole(s: Scenario, origin: str) -> None:
    """Rules that involve more than one key; also run again after command-line overrides."""

    def fail(key: str, problem: str) -> NoReturn:
        raise ScenarioError(origin, key, problem)

    for service, p in s.balancer.methods().items():
        key = f"balancer.persistence.{service}" if service in s.balancer.persistence else "balancer.preset"
        for method in [p.method] + ([p.fallback.method] if p.fallback else []):
            if service in TCP_SERVICES and (method in HTTP_METHODS or method == "ssl-session-id"):
                fail(
                    key,
                    f"{service} is plain TCP: {method} cannot apply to it; "
                    "allowed there: none, leastconn, source-ip",
                )
            if method == "ssl-session-id" and s.farm.tls != "passthrough":
                fail(key, f'ssl-session-id for {service} needs farm.tls = "passthrough", not "{s.farm.tls}"')
            if s.farm.tls == "passthrough" and method in HTTP_METHODS:
                fail(
                    key,
                    f"{method} for {service} reads HTTP, which a balancer cannot see with "
                    'farm.tls = "passthrough"; allowed then: none, leastconn, source-ip, ssl-session-id',
                )

    servers = s.farm.server_names
    down: set[str] = set()  # servers stopped, drained or health-down at this point of the schedule
    for index in sorted(range(len(s.faults)), key=lambda i: s.faults[i].at_s):
        fault = s.faults[index]
        if fault.server not in servers:
            fail(
                f"fault[{index}].server", f"{fault.server!r} is not in the farm; it has {', '.join(servers)}"
            )
        if fault.at_s >= s.duration_s:
            fail(
                f"fault[{index}].at",
                f"{format_duration(fault.at_s)} is at or after the end of the load "
                f"phase (duration {format_duration(s.duration_s)})",
            )
        if fault.action in ("start", "health-up") and fault.server not in down:
            fail(
                f"fault[{index}].action", f"{fault.action} of {fault.server}, which no earlier fault took out"
            )
        if fault.action in ("stop", "drain", "health-down"):
            if fault.server in down:
                fail(
                    f"fault[{index}].action",
                    f"{fault.server} is out already at {format_duration(fault.at_s)}",
                )
            down.add(fault.server)
        else:
            down.discard(fault.server)
    if s.thresholds.fault_collateral_breaks is not None and not s.faults:
        fail("thresholds.fault_collateral_breaks", "needs at least one [[fault]]")

    _check_driver(s, origin)


def _check_driver(s: Scenario, origin: str) -> None:
    """Ask the chosen driver what it refuses of this spec (its own contract, lab.balancers), and blame the
    key that asked for the first refusal: the tls mode, a service's override, else the preset."""
    from lab.balancers import DRIVERS as REGISTERED

    if s.balancer.driver not in DRIVERS:
        raise ScenarioError(
            origin,
            "balancer.driver",
            f"{s.balancer.driver!r} is not allowed; allowed: {', '.join(sorted(DRIVERS))}",
        )
    if s.balancer.driver not in REGISTERED:
        return  # a driver of the design that is not installed here: the run says so when it starts
    dummy = Path("unused.pem")
    tls_files = TlsFiles(dummy, dummy, dummy, dummy) if s.farm.tls != "none" else None
    spec = s.balancer_spec(local_farm(s.farm.servers), tls_files=tls_files)
    problems = REGISTERED[s.balancer.driver](spec, Path(".")).refusals()
    if problems:
        first = problems[0]
        if first.tls is not None:
            key = "farm.tls"
        elif first.service in s.balancer.persistence:
            key = f"balancer.persistence.{first.service}"
        else:
            key = "balancer.preset"
        raise ScenarioError(
            origin, key, f"driver {s.balancer.driver} refuses: {'; '.join(map(str, problems))}"
        )


# ---- finding scenarios -----------------------------------------------------------------------------


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Load a scenario file, or a bundled scenario by its bare name (`quickstart`)."""
    path = Path(path_or_name)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        bundled = SCENARIO_DIR / f"{path.name}.toml"
        if not bundled.exists():
            known = ", ".join(bundled_scenarios())
            raise ScenarioError(str(path_or_name), "", f"no such file or bundled scenario; bundled: {known}")
        path = bundled
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ScenarioError(str(path), "", f"cannot read: {err.strerror or err}") from None
    return parse_scenario(text, origin=str(path), default_name=path.stem)


def bundled_scenarios() -> dict[str, str]:
    """Bundled scenario name -> its one-line description."""
    out = {}
    for path in sorted(SCENARIO_DIR.glob("*.toml")):
        try:
            description = tomllib.loads(path.read_text(encoding="utf-8")).get("description", "")
        except tomllib.TOMLDecodeError:
            description = "(not valid TOML)"
        out[path.stem] = str(description)
    return out
