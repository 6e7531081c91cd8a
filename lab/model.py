"""Plain data shared by the lab's parts: persistence, idle timeouts, the farm's addresses and Exchange
settings, the VIP, what a driver renders.

Data flows one way (scenario -> lab -> farm, balancer, loadgen -> ledgers -> verifier -> report); these
types are what travels. They hold no behaviour beyond validation of their own fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from caslab.vocab import (
    AB_PORT,
    ADMIN_PORT,
    HEALTH_BODY,
    HEALTH_PATH,
    HTTP_PORT,
    HTTPS_PORT,
    MAPI_PORT,
    METHODS,
    SERVICES,
    STATS_PORT,
    TLS_MODES,
    TOPOLOGIES,
    VIP_GROUPS,
)

if TYPE_CHECKING:
    from lab.balancers.userconfig import Adopted


@dataclass(frozen=True)
class Persistence:
    """How the balancer keeps one service's clients on one CAS."""

    method: str = "none"
    name: str | None = None  # cookie or header name, for methods that take one
    timeout_s: float = 1800.0  # idle lifetime of a stick entry or balancer cookie
    fallback: Persistence | None = None  # e.g. cookie-hash falling back to source-ip

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown persistence method {self.method!r}; allowed: {', '.join(METHODS)}")
        if METHODS[self.method] and not self.name:
            raise ValueError(f"persistence method {self.method!r} needs a name (cookie or header)")
        if not METHODS[self.method] and self.name:
            raise ValueError(f"persistence method {self.method!r} takes no name")

    def __str__(self) -> str:
        text = f"{self.method} {self.name}" if self.name else self.method
        return f"{text} (fallback {self.fallback})" if self.fallback else text


@dataclass(frozen=True)
class Timeouts:
    """The balancer's idle timeouts (DESIGN.md section 13), in the lab's time (already divided by the
    scenario's time_scale). None: the driver's long default (an hour), as when a scenario sets none.

    `client_idle_s`: a connection from a client that is silent both ways this long is closed;
    `server_idle_s`: the same for a connection to a CAS. `services` holds per-service overrides; `of`
    merges one into these. How each driver says them: lab.balancers.layout and each driver's docstring.
    """

    client_idle_s: float | None = None
    server_idle_s: float | None = None
    # Per-service overrides (service id -> Timeouts without services). Not hashed: a pool's timeouts,
    # made by `of`, have none, and pools are dict keys.
    services: dict[str, Timeouts] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("client_idle_s", "server_idle_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be above 0 seconds, got {value}")
        unknown = [s for s in self.services if s not in SERVICES]
        if unknown:
            raise ValueError(f"timeouts for unknown services {unknown}; services: {', '.join(SERVICES)}")

    def of(self, service: str | None) -> Timeouts:
        """The timeouts of one service (None: of traffic no service owns): its override where it sets
        one, else these."""
        own = self.services.get(service, Timeouts()) if service else Timeouts()
        return Timeouts(
            own.client_idle_s if own.client_idle_s is not None else self.client_idle_s,
            own.server_idle_s if own.server_idle_s is not None else self.server_idle_s,
        )

    @property
    def idle_s(self) -> float | None:
        """Where one stream is both sides at once (a TCP proxy, a tunnel, an Envoy stream), idle on one
        side is idle on the other: the shorter timeout ends it. None when neither is set."""
        values = [v for v in (self.client_idle_s, self.server_idle_s) if v is not None]
        return min(values) if values else None

    @property
    def is_set(self) -> bool:
        return self.client_idle_s is not None or self.server_idle_s is not None or bool(self.services)


# ExchangeSettings field -> the `caslab cas` flag that sets it (mockcas.config.CasConfig, same name).
EXCHANGE_FLAGS = {
    "rpc_min_connection_timeout_s": "--rpc-min-connection-timeout",
    "eas_heartbeat_min_s": "--eas-heartbeat-min",
    "eas_heartbeat_max_s": "--eas-heartbeat-max",
    "owa_timeout_s": "--owa-timeout",
    "tcp_keepalive_s": "--tcp-keepalive",
}


@dataclass(frozen=True)
class ExchangeSettings:
    """Settings of every CAS, named after the Exchange and Windows settings they mock, in Exchange time
    (each CAS divides them by its time_scale, as every protocol timer). None: Exchange's default, which
    is the CAS's own (no flag is passed for it)."""

    rpc_min_connection_timeout_s: float | None = None  # RPC MinimumConnectionTimeout (720 s IN / 900 s OUT)
    eas_heartbeat_min_s: float | None = None  # ActiveSync MinHeartbeatInterval (60 s)
    eas_heartbeat_max_s: float | None = None  # ActiveSync MaxHeartbeatInterval (3540 s)
    owa_timeout_s: float | None = None  # forms-logon idle lifetime, public computer (15 min)
    tcp_keepalive_s: float | None = None  # Windows KeepAliveTime on MAPI / Address Book (2 h)

    def cas_args(self) -> list[str]:
        """The `caslab cas` flags of the settings that are set (seconds of Exchange time)."""
        out = []
        for name, flag in EXCHANGE_FLAGS.items():
            value = getattr(self, name)
            if value is not None:
                out += [flag, repr(float(value))]
        return out


@dataclass(frozen=True)
class CasEndpoint:
    """Where one mock CAS listens. The admin port is never put behind the balancer."""

    name: str
    host: str
    http_port: int = HTTP_PORT
    https_port: int = HTTPS_PORT
    mapi_port: int = MAPI_PORT
    ab_port: int = AB_PORT
    admin_port: int = ADMIN_PORT

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"


def local_farm(servers: int, base: str = "127.0.1") -> list[CasEndpoint]:
    """The local backend's farm: CAS01 on <base>.11, CAS02 on <base>.12, ..."""
    if not 1 <= servers <= 99:
        raise ValueError("a farm has 1 to 99 servers")
    return [CasEndpoint(name=f"CAS{n:02d}", host=f"{base}.{10 + n}") for n in range(1, servers + 1)]


@dataclass(frozen=True)
class Vip:
    """Where the balancer listens: clients use these addresses and nothing else."""

    host: str = "127.0.1.1"
    http_port: int = HTTP_PORT
    https_port: int = HTTPS_PORT
    mapi_port: int = MAPI_PORT
    ab_port: int = AB_PORT
    stats_port: int = STATS_PORT

    def service_host(self, service: str, topology: str = "single-vip") -> str:
        """The address clients use for `service`: the VIP itself on `single-vip`; on `vip-per-service`
        the VIP's last octet plus 1 + the index of the service's group in VIP_GROUPS (127.0.1.1 ->
        owa/ecp on 127.0.1.2 ... mapi/addressbook on 127.0.1.8)."""
        if topology == "single-vip":
            return self.host
        if topology not in TOPOLOGIES:
            raise ValueError(f"unknown topology {topology!r}; allowed: {', '.join(TOPOLOGIES)}")
        index = next((i for i, group in enumerate(VIP_GROUPS) if service in group), None)
        if index is None:
            raise ValueError(f"unknown service {service!r}; allowed: {', '.join(SERVICES)}")
        prefix, last = self.host.rsplit(".", 1)
        octet = int(last) + 1 + index
        if octet > 254:
            raise ValueError(f"VIP {self.host} leaves no room for {len(VIP_GROUPS)} per-service addresses")
        return f"{prefix}.{octet}"

    def hosts(self, topology: str = "single-vip") -> list[str]:
        """Every address the balancer listens on for this topology (the stats port is on `host`)."""
        if topology == "single-vip":
            return [self.host]
        return [self.service_host(group[0], topology) for group in VIP_GROUPS]


@dataclass(frozen=True)
class HealthCheck:
    interval_s: float = 1.0
    fall: int = 2
    rise: int = 2
    path: str = HEALTH_PATH
    body: str = HEALTH_BODY


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the run's trustme CA. `server_pem` holds key + chain (HAProxy's form)."""

    ca_pem: Path
    server_cert: Path
    server_key: Path
    server_pem: Path
    server_name: str = "mail.caslab.test"


@dataclass(frozen=True)
class BalancerSpec:
    """Everything a balancer driver needs to render its config (DESIGN.md section 5)."""

    driver: str
    persistence: dict[str, Persistence]  # one entry per service id
    servers: list[CasEndpoint]
    vip: Vip = field(default_factory=Vip)
    topology: str = "single-vip"
    tls: str = "none"
    health: HealthCheck = field(default_factory=HealthCheck)
    tls_files: TlsFiles | None = None
    preset: str | None = None  # the preset the persistence came from, for reports
    timeouts: Timeouts = field(default_factory=Timeouts)  # idle timeouts, already time-scaled
    persistence_table_size: int | None = None  # records per stick table; None: the driver's default
    # The user's own config with the lab put into it (lab.balancers.userconfig): the driver runs it instead
    # of rendering one, and `persistence` is what the lab read from it.
    config: Adopted | None = None

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"unknown topology {self.topology!r}; allowed: {', '.join(TOPOLOGIES)}")
        if self.tls not in TLS_MODES:
            raise ValueError(f"unknown tls mode {self.tls!r}; allowed: {', '.join(TLS_MODES)}")
        missing = [s for s in SERVICES if s not in self.persistence]
        if missing:
            raise ValueError(f"no persistence given for: {', '.join(missing)}")
        if self.tls != "none" and self.tls_files is None:
            raise ValueError(f"tls mode {self.tls!r} needs the run's certificate files")
        if self.persistence_table_size is not None and self.persistence_table_size < 1:
            raise ValueError(f"persistence_table_size must be at least 1, got {self.persistence_table_size}")
