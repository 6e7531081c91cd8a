"""The typed scenario: frozen dataclasses, as `lab.scenario.reader` builds them from a TOML file.

A `Scenario` is what every later part of the lab reads (the balancer spec, the load plan, the fault
schedule, the verifier's thresholds); nothing after the reader sees TOML. `ScenarioError` is the one
error a scenario can raise: it names the file, the key and what is allowed there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caslab.vocab import CLIENT_KINDS, DRIVERS
from lab.balancers.presets import PRESETS, resolve
from lab.model import (
    BalancerSpec,
    CasEndpoint,
    ExchangeSettings,
    HealthCheck,
    Persistence,
    Timeouts,
    TlsFiles,
    Vip,
)
from lab.scenario.durations import parse_duration

# The verdicts a scenario can say it is meant to produce (its `expect`).
EXPECTATIONS = ("pass", "fail")
MAX_SERVERS = 99  # CAS01 .. CAS99 (lab.model.local_farm)


class ScenarioError(ValueError):
    """A scenario file is wrong; the message names the file, the key and what is allowed."""

    def __init__(self, origin: str, key: str, problem: str) -> None:
        self.origin, self.key, self.problem = origin, key, problem
        super().__init__(f"{origin}: {key}: {problem}" if key else f"{origin}: {problem}")


@dataclass(frozen=True)
class PopulationKind:
    """Defaults and limits of one population kind (DESIGN.md section 6)."""

    own_address: bool  # every user has an address of their own (source_ips is not a setting)
    default_source_ips: int
    default_clients: dict[str, float]
    allowed_clients: tuple[str, ...] = CLIENT_KINDS
    changes_address: bool = False  # its devices move to another address of the pool (ip_change_every)


POPULATION_KINDS: dict[str, PopulationKind] = {
    # A hosted tenant behind its office NAT: browsers, Outlook Anywhere and phones on the office Wi-Fi.
    "tenant-nat": PopulationKind(
        False, 1, {"browser": 0.5, "outlook2010-rpchttp": 0.4, "outlook2007-rpchttp": 0.1, "eas-device": 0.3}
    ),
    # Phones behind carrier NAT; the pool default is small so that addresses are shared, as they are.
    "mobile-carrier": PopulationKind(False, 4, {"eas-device": 1.0}, ("eas-device",), changes_address=True),
    "intranet": PopulationKind(True, 0, {"outlook-mapi": 1.0, "browser": 0.5}),
    "citrix": PopulationKind(False, 1, {"outlook-mapi": 1.0}),
    "direct": PopulationKind(True, 0, {"browser": 0.5, "outlook2010-rpchttp": 0.4, "eas-device": 0.4}),
}


@dataclass(frozen=True)
class Farm:
    servers: int = 3
    tls: str = "none"
    tls_max_version: str = "1.3"  # the highest TLS version clients offer (loadgen.tls)
    oab_skew: bool = False
    exchange: ExchangeSettings = field(default_factory=ExchangeSettings)  # passed to every CAS

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
    timeouts: Timeouts = field(default_factory=Timeouts)  # Exchange time (balancer_spec scales them)
    persistence_table_size: int | None = None
    # The user's own balancer config (DESIGN.md section 14), as the scenario or --config names it; the
    # preset and the per-service persistence do not apply then.
    config: str | None = None
    preset_given: bool = False  # the file names a preset (so a config makes it not apply: say so)

    def methods(self) -> dict[str, Persistence]:
        """The per-service methods: the preset with the overrides applied."""
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
    cut: int | dict[str, int] | None = None  # held requests, channels, TCP sessions not closed by the CAS
    eas_heartbeat_alert: bool | None = None  # the allowed value of the event-1040 alert


@dataclass(frozen=True)
class DriverExpectation:
    """A driver on which a scenario's known answer does not hold: the verdict it gives instead, and why
    (a measured behaviour of that balancer, said in the report)."""

    expect: str
    reason: str


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
    expect: str | None = None  # the known answer
    expect_by_driver: dict[str, DriverExpectation] = field(default_factory=dict)  # where it differs
    # Where it came from, for messages and reports: a bundled scenario's name, else the path as given.
    origin: str = "<scenario>"
    source_text: str = field(default="", repr=False, compare=False)  # the TOML, kept for re-rendering
    overrides: dict[str, str] = field(default_factory=dict)  # what the command line changed
    folder: Path | None = field(default=None, compare=False)  # the file's folder (None: not from a file)

    def with_overrides(
        self,
        driver: str | None = None,
        preset: str | None = None,
        duration: str | None = None,
        config: str | None = None,
        tls: str | None = None,
    ) -> Scenario:
        """This scenario with the command line's --driver/--preset/--duration/--config applied and checked
        again; `tls` is the TLS mode a user's config has, which wins over the scenario's."""
        # Imported here: the rules take a Scenario, so they import this module.
        from lab.scenario.rules import check_scenario

        pairs = (
            ("driver", driver),
            ("preset", preset),
            ("duration", duration),
            ("config", config),
            ("tls", tls),
        )
        given = {k: v for k, v in pairs if v}
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
            self.balancer,
            driver=driver or self.balancer.driver,
            preset=preset or self.balancer.preset,
            preset_given=self.balancer.preset_given or bool(preset),
            config=config or self.balancer.config,
        )
        farm = dataclasses.replace(self.farm, tls=tls or self.farm.tls)
        duration_s = self.duration_s
        if duration:
            try:
                duration_s = parse_duration(duration)
            except ValueError as err:
                raise ScenarioError(self.origin, "--duration", str(err)) from None
            if duration_s <= 0:
                raise ScenarioError(self.origin, "--duration", "must be longer than 0s")
        changed = dataclasses.replace(
            self, balancer=balancer, farm=farm, duration_s=duration_s, overrides={**self.overrides, **given}
        )
        check_scenario(changed, f"{self.origin} (with {', '.join(f'--{k} {v}' for k, v in given.items())})")
        return changed

    @property
    def expected(self) -> str | None:
        """The verdict this scenario is meant to produce on its driver: the driver's own where it has
        one (`expect_by_driver`), else the known answer (`expect`)."""
        own = self.expect_by_driver.get(self.balancer.driver)
        return own.expect if own else self.expect

    @property
    def expected_reason(self) -> str:
        """Why the verdict on this driver differs from the known answer ("" where it does not)."""
        own = self.expect_by_driver.get(self.balancer.driver)
        return own.reason if own else ""

    @property
    def config_path(self) -> Path | None:
        """The user's balancer config: --config as given (relative to where caslab runs), else the
        scenario's `balancer.config`, relative to the scenario's file."""
        if "config" in self.overrides:
            return Path(self.overrides["config"])
        if self.balancer.config is None:
            return None
        path = Path(self.balancer.config)
        return path if path.is_absolute() or self.folder is None else self.folder / path

    def not_applied_with_config(self) -> list[str]:
        """What the scenario sets that a user's config replaces (said when both are given)."""
        if self.balancer.config is None:
            return []
        out = []
        if self.balancer.preset_given:
            out.append(f"preset {self.balancer.preset}")
        if self.balancer.persistence:
            out.append(f"persistence overrides for {', '.join(self.balancer.persistence)}")
        return out

    def balancer_spec(
        self, servers: list[CasEndpoint], vip: Vip | None = None, tls_files: TlsFiles | None = None
    ) -> BalancerSpec:
        """The driver's input: preset + overrides, with persistence and idle timeouts run `time_scale`
        faster."""
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
            timeouts=_scaled_timeouts(self.balancer.timeouts, self.time_scale),
            persistence_table_size=self.balancer.persistence_table_size,
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
            "expect_by_driver": {d: dataclasses.asdict(e) for d, e in self.expect_by_driver.items()},
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


def _scaled_timeouts(t: Timeouts, time_scale: float) -> Timeouts:
    def scaled(value: float | None) -> float | None:
        return None if value is None else value / time_scale

    services = {s: _scaled_timeouts(own, time_scale) for s, own in t.services.items()}
    return Timeouts(scaled(t.client_idle_s), scaled(t.server_idle_s), services)
