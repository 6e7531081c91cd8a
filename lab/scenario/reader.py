"""Reading a scenario file: TOML text in, a checked `Scenario` out, every mistake explained.

`_Reader` gives typed access to one TOML table by its declared keys (lab.scenario.keys): a key that is
not declared, a value of the wrong type, a choice that is not allowed or a number out of range is a
`ScenarioError` naming the file, the key as a dotted path (`population[1].ip_change_every`) and what is
allowed there. The `_read_*` functions build the typed sections; the rules that involve more than one
key come last (lab.scenario.rules).
"""

from __future__ import annotations

import difflib
import math
import tomllib
from typing import Any, NoReturn

from caslab.vocab import METHODS, SERVICES
from lab.model import ExchangeSettings, HealthCheck, Persistence, Timeouts
from lab.scenario.durations import DURATION_HELP, format_duration, parse_duration
from lab.scenario.keys import HEARTBEAT_RANGE_S, TOP_KEYS, Key
from lab.scenario.model import (
    DEFAULT_THRESHOLDS,
    POPULATION_KINDS,
    BalancerSection,
    DriverExpectation,
    Farm,
    Fault,
    Population,
    PopulationKind,
    Scenario,
    ScenarioError,
    Thresholds,
)
from lab.scenario.rules import check_scenario


class _Reader:
    """Typed access to one TOML table by its declared keys; every error names the file and dotted key."""

    def __init__(self, origin: str, table: dict[str, Any], path: str, keys: tuple[Key, ...]) -> None:
        self.origin, self.table, self.path = origin, table, path
        self.keys = {k.name: k for k in keys}
        allowed = tuple(self.keys)
        for key in table:
            if key not in self.keys:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.fail(key, f"unknown key; {hint}allowed here: {', '.join(allowed)}")

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ScenarioError(self.origin, self.key(key), problem)

    def has(self, key: str) -> bool:
        return key in self.table

    def declaration(self, key: str, *types: str) -> Key:
        """The declaration of `key`, which the caller reads as one of `types` (else a bug of the lab)."""
        declared = self.keys[key]
        if declared.type not in types:
            raise TypeError(f"scenario key {self.key(key)} is declared {declared.type}, read as {types}")
        return declared

    def _value(self, key: str, declared: Key, default: object) -> Any:
        return self.table.get(key, declared.default if default is None else default)

    def text(self, key: str, default: str | None = None) -> str:
        declared = self.declaration(key, "string")
        value = self._value(key, declared, default)
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_tname(value)}" if key in self.table else "is required")
        if declared.choices and value not in declared.choices:
            self.fail(key, f"{value!r} is not allowed; allowed: {', '.join(declared.choices)}")
        return value

    def integer(self, key: str, default: int | None = None) -> int:
        declared = self.declaration(key, "integer")
        value = self._value(key, declared, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(
                key, f"expected an integer, got {_tname(value)}" if key in self.table else "is required"
            )
        if declared.minimum is not None and value < declared.minimum:
            self.fail(key, f"must be at least {declared.minimum}, got {value}")
        if declared.maximum is not None and value > declared.maximum:
            self.fail(key, f"must be at most {declared.maximum}, got {value}")
        return value

    def number(self, key: str) -> float:
        """A number of at least 0 (above 0 if declared `positive`). A declared `maximum` is the caller's
        to check, in words that say what the number is."""
        declared = self.declaration(key, "number")
        value = self._value(key, declared, None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"expected a number, got {_tname(value)}" if key in self.table else "is required")
        positive = declared.positive
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            self.fail(key, f"must be a {'positive' if positive else 'non-negative'} number, got {value}")
        return float(value)

    def boolean(self, key: str) -> bool:
        declared = self.declaration(key, "boolean")
        value = self._value(key, declared, None)
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_tname(value)}")
        return value

    def duration(self, key: str) -> float:
        declared = self.declaration(key, "duration")
        value = self._value(key, declared, None)
        if not isinstance(value, str):
            self.fail(
                key, f"expected {DURATION_HELP}, got {_tname(value)}" if key in self.table else "is required"
            )
        try:
            return parse_duration(value)
        except ValueError as err:
            self.fail(key, str(err))

    def positive_duration(self, key: str) -> float | None:
        """A duration above 0s when the key is there, else None (a negative one is called that, not
        a malformed string)."""
        if not self.has(key):
            return None
        value = self.table[key]
        if isinstance(value, str) and value.strip().startswith("-"):
            self.fail(key, f"must be longer than 0s, got {value!r}")
        seconds = self.duration(key)
        if seconds <= 0:
            self.fail(key, f"must be longer than 0s, got {value!r}")
        return seconds

    def table_at(self, key: str) -> _Reader:
        """The table under `key` (empty when left out), read by the keys declared for it."""
        declared = self.keys[key]
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, got {_tname(value)}")
        return _Reader(self.origin, value, self.key(key), declared.keys)

    def tables(self, key: str) -> list[_Reader]:
        """The array of tables under `key` ([[key]]), each read by the keys declared for it."""
        declared = self.declaration(key, "tables")
        value = self.table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(key, f"expected an array of tables ([[{key}]]), got {_tname(value)}")
        return [_Reader(self.origin, t, f"{self.key(key)}[{i}]", declared.keys) for i, t in enumerate(value)]


def _tname(value: object) -> str:
    if value is None:
        return "nothing"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    return names.get(type(value), "a table" if isinstance(value, dict) else type(value).__name__)


def parse_scenario(text: str, origin: str = "<scenario>", default_name: str = "scenario") -> Scenario:
    """Build a Scenario from TOML text. Raises ScenarioError (file, key, what is allowed)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(origin, "", f"not valid TOML: {err}") from None
    top = _Reader(origin, data, "", TOP_KEYS)
    duration_s = top.duration("duration")
    if duration_s <= 0:
        top.fail("duration", "must be longer than 0s")
    time_scale = top.number("time_scale")
    farm = _read_farm(top.table_at("farm"))
    balancer = _read_balancer(top.table_at("balancer"))
    populations = tuple(_read_populations(top))
    if not populations:
        top.fail("population", "a scenario needs at least one [[population]]")
    faults = tuple(_read_fault(r) for r in top.tables("fault"))
    thresholds = _read_thresholds(top.table_at("thresholds")) if top.has("thresholds") else DEFAULT_THRESHOLDS
    scenario = Scenario(
        name=top.text("name", default_name),
        description=top.text("description", ""),
        expect=top.text("expect") if top.has("expect") else None,
        expect_by_driver=_read_expect_by_driver(top),
        duration_s=duration_s,
        ramp_s=top.duration("ramp"),
        time_scale=time_scale,
        seed=top.integer("seed"),
        farm=farm,
        balancer=balancer,
        populations=populations,
        faults=faults,
        thresholds=thresholds,
        origin=origin,
        source_text=text,
    )
    check_scenario(scenario, origin)
    return scenario


def _read_expect_by_driver(top: _Reader) -> dict[str, DriverExpectation]:
    """The drivers on which the known answer does not hold; each needs the known answer beside it."""
    r = top.table_at("expect_by_driver")
    if r.table and not top.has("expect"):
        top.fail(
            "expect_by_driver", "says where the known answer does not hold: set expect, the known answer too"
        )
    out = {}
    for driver in r.table:
        own = r.table_at(driver)
        expect = own.text("expect")
        if expect == top.text("expect"):
            own.fail("expect", f"{expect!r} is the known answer (expect) already: leave {driver} out")
        out[driver] = DriverExpectation(expect, own.text("reason"))
    return out


def _read_farm(r: _Reader) -> Farm:
    return Farm(
        servers=r.integer("servers"),
        tls=r.text("tls"),
        tls_max_version=r.text("tls_max_version"),
        oab_skew=r.boolean("oab_skew"),
        exchange=_read_exchange(r.table_at("exchange")),
    )


def _read_exchange(r: _Reader) -> ExchangeSettings:
    """[farm.exchange]: only what the file sets (the rest stays Exchange's default, which the CAS has);
    heartbeat limits in the range Exchange accepts, min no more than max (with the default of the one
    left out)."""
    heartbeat = r.table_at("eas_heartbeat")
    low, high = HEARTBEAT_RANGE_S
    limits = {}
    for key in ("min", "max"):
        seconds = heartbeat.positive_duration(key)
        if seconds is not None and not low <= seconds <= high:
            heartbeat.fail(
                key,
                f"Exchange 2010 accepts heartbeat limits from {format_duration(low)} to "
                f"{format_duration(high)} ({high:g} s), got {heartbeat.table[key]!r}",
            )
        limits[key] = seconds
    effective = {
        k: v if v is not None else parse_duration(heartbeat.keys[k].default) for k, v in limits.items()
    }
    if effective["min"] > effective["max"]:
        given = "min" if limits["min"] is not None else "max"
        heartbeat.fail(
            given,
            f"min {format_duration(effective['min'])} is above max {format_duration(effective['max'])} "
            "(Exchange would log event 1009 and fall back to its defaults)",
        )
    return ExchangeSettings(
        rpc_min_connection_timeout_s=r.positive_duration("rpc_min_connection_timeout"),
        eas_heartbeat_min_s=limits["min"],
        eas_heartbeat_max_s=limits["max"],
        owa_timeout_s=r.positive_duration("owa_timeout"),
        tcp_keepalive_s=r.positive_duration("tcp_keepalive"),
    )


def _read_balancer(r: _Reader) -> BalancerSection:
    table = r.table_at("persistence")
    overrides = {service: _read_persistence(table, service) for service in table.table}
    health = r.table_at("health")
    return BalancerSection(
        driver=r.text("driver"),
        topology=r.text("topology"),
        preset=r.text("preset"),
        persistence=overrides,
        health=HealthCheck(
            interval_s=health.duration("interval"), fall=health.integer("fall"), rise=health.integer("rise")
        ),
        timeouts=_read_timeouts(r.table_at("timeouts")),
        persistence_table_size=r.integer("persistence_table_size")
        if r.has("persistence_table_size")
        else None,
        config=r.text("config") if r.has("config") else None,
        preset_given=r.has("preset"),
    )


def _read_timeouts(r: _Reader) -> Timeouts:
    """[balancer.timeouts]: client_idle, server_idle, and per service a table of the same two."""
    services = {}
    for service in (key for key in r.table if key in SERVICES):
        own = r.table_at(service)
        if not own.table:
            r.fail(service, "sets nothing; give client_idle, server_idle or both, or leave it out")
        services[service] = Timeouts(
            own.positive_duration("client_idle"), own.positive_duration("server_idle")
        )
    return Timeouts(r.positive_duration("client_idle"), r.positive_duration("server_idle"), services)


def _read_persistence(parent: _Reader, key: str) -> Persistence:
    """`{ method = "header", name = "Authorization", timeout = "45m", fallback = {...} }` or the short
    string form of DESIGN.md section 5: "source-ip", "cookie-hash OutlookSession"."""
    declared = parent.declaration(key, "persistence")
    value = parent.table[key]
    if isinstance(value, str):
        method, _, name = value.partition(" ")
        value = {"method": method, **({"name": name.strip()} if name.strip() else {})}
    elif not isinstance(value, dict):
        parent.fail(
            key, f'expected a table {{ method = "...", name = "..." }} or a string, got {_tname(value)}'
        )
    r = _Reader(parent.origin, value, parent.key(key), declared.keys)
    method = r.text("method")
    name = r.text("name") if r.has("name") else None
    if METHODS[method] and not name:
        r.fail("name", f"method '{method}' needs the name of a cookie or header")
    if not METHODS[method] and name:
        r.fail("name", f"method '{method}' takes no name")
    fallback = _read_persistence(r, "fallback") if r.has("fallback") else None
    return Persistence(method, name, r.duration("timeout"), fallback)


def _read_populations(top: _Reader) -> list[Population]:
    readers = top.tables("population")
    kinds = [r.table.get("kind") for r in readers]
    out: list[Population] = []
    for i, r in enumerate(readers):
        kind = r.text("kind")
        spec = POPULATION_KINDS[kind]
        users = r.integer("users")
        if spec.own_address:
            if r.has("source_ips"):
                r.fail("source_ips", f"{kind} users each have their own address; leave source_ips out")
            source_ips = users
        else:
            source_ips = r.integer("source_ips", min(spec.default_source_ips, users))
            if source_ips > users:
                r.fail(
                    "source_ips", f"{source_ips} addresses for {users} users: at most one address per user"
                )
        change = None
        if r.has("ip_change_every"):
            if not spec.changes_address:
                movers = [k for k, s in POPULATION_KINDS.items() if s.changes_address]
                r.fail("ip_change_every", f"only {' and '.join(movers)} devices change address")
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
                keeps_cookies=r.boolean("keeps_cookies"),
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
    table = r.table_at("clients")
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
    return Fault(at_s=r.duration("at"), server=r.text("server"), action=r.text("action"))


def _read_thresholds(r: _Reader) -> Thresholds:
    """Each declared key that is there (a Thresholds field of the same name); the rest stay None."""

    def limit(key: str) -> int | float | dict[str, int] | dict[str, float]:
        if isinstance(r.table[key], dict):  # one limit per service
            per_service = r.table_at(key)
            return {service: _limit(per_service, service) for service in per_service.table}
        return _limit(r, key)

    return Thresholds(**{key: limit(key) for key in r.keys if r.has(key)})


def _limit(r: _Reader, key: str) -> int | float | bool:
    kind = r.keys[key].type
    return r.integer(key) if kind == "integer" else r.boolean(key) if kind == "boolean" else r.number(key)
