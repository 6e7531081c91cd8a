"""The shape every driver renders, whatever its config language: listeners on the VIP, the pools
(backends, clusters, upstreams) behind them, and which path goes to which pool.

Decided here once, so the drivers differ only in how they say it:
- A pool is a set of services that share one persistence rule. OWA and ECP share a pool when their
  methods are the same (they share the logon cookie, so they must share a CAS); every other HTTP
  service has its own pool, so each keeps its own stick table or cookie. MAPI and Address Book are
  separate TCP pools (different CAS ports); when both are `source-ip` with one timeout, the Address Book
  pool shares the MAPI pool's rule (`rule_owner`), so a client's two connections reach one CAS.
  Likewise web pools that are all `source-ip` with one timeout share the first one's rule: one address
  reaches one CAS for every web service, as behind a VIP with source-address affinity (learned per pool,
  HAProxy's stick tables would place each service of one NAT address anew).
- `single-vip`: one web listener with a route per service (paths matched case-insensitively, whole
  segments only: `/owa`, `/OWA/...`, never `/owanext`) and an `other` pool for paths no service owns.
  `vip-per-service`: one listener per group of caslab.vocab.VIP_GROUPS, each sending everything to its
  service's pool (the OWA/ECP address still splits `/ecp` off when their methods differ).
- TLS: `none` listens on the VIP's HTTP port; `offload` and `bridge` end TLS on the HTTPS port (bridge
  connects to the CAS' HTTPS port with TLS again); `passthrough` forwards TCP from the HTTPS port to the
  CAS' HTTPS port, so there are no paths: one web pool on `single-vip`, one per group otherwise.
- Idle timeouts (lab.model.Timeouts): each route carries its service's, each pool its services' and each
  listener the ones all its services share (else the scenario's own, with `client_idle_varies` set).
  The client side belongs to a listener (HAProxy frontends, Traefik entry points) or to a route (nginx
  locations, Envoy routes); the server side belongs to a pool, so the services of one pool (OWA and ECP
  with one method, the web services through one passthrough listener) must share a server_idle, and on
  a TCP pool a client_idle too: one TCP stream is both sides at once, and its idle timeout is the
  shorter of the two (`Timeouts.idle_s`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from caslab.vocab import HTTP_SERVICES, METHODS, SERVICE_PATHS, TCP_SERVICES, VIP_GROUPS
from lab.model import BalancerSpec, CasEndpoint, Persistence, Timeouts

# Methods each kind of traffic can carry at all, whatever the balancer.
TCP_METHODS = frozenset({"none", "leastconn", "source-ip"})
PASSTHROUGH_METHODS = TCP_METHODS | {"ssl-session-id"}
HTTP_METHODS = frozenset(METHODS) - {"ssl-session-id"}
# The one fallback the design has: a key the client may not send (a cookie it makes, a header) falls
# back to its source address.
FALLBACK_PRIMARIES = frozenset({"cookie-hash", "header"})
FALLBACK_METHODS = frozenset({"source-ip"})


@dataclass(frozen=True)
class Pool:
    """One backend: the CAS farm on one port, with one persistence rule."""

    name: str
    services: tuple[str, ...]
    persistence: Persistence
    tcp: bool  # forwarded as TCP (MAPI, Address Book, TLS passthrough) rather than as HTTP requests
    cas_port: str  # the CasEndpoint attribute with the port to connect to
    tls: bool = False  # connect to the CAS with TLS and verify it (bridge)
    rule_owner: str | None = None  # the pool whose source-IP rule (stick table, hash ring) this one uses
    # Its services' idle timeouts (they share one server_idle: shape_problems).
    timeouts: Timeouts = field(default_factory=Timeouts)

    def port(self, cas: CasEndpoint) -> int:
        return getattr(cas, self.cas_port)

    @property
    def lb_cookie(self) -> str:
        """The name of this pool's balancer cookie (lb-cookie): one per pool, so services on separate
        pools never overwrite each other's choice of CAS."""
        return f"lb_{self.name}"


@dataclass(frozen=True)
class Route:
    service: str
    prefixes: tuple[str, ...]  # lower case; match case-insensitively, the prefix or prefix + "/..."
    pool: Pool
    timeouts: Timeouts = field(default_factory=Timeouts)  # the service's idle timeouts


@dataclass(frozen=True)
class Listener:
    name: str
    host: str
    port: int
    kind: str  # "http", "https" (TLS ends here) or "tcp"
    routes: tuple[Route, ...]
    default: Pool  # for every path no route takes (the only pool of a TCP listener)
    # The idle timeouts every service here shares, else the scenario's own; and whether the services
    # here differ in client_idle (a driver with one client timeout per listener cannot do that).
    timeouts: Timeouts = field(default_factory=Timeouts)
    client_idle_varies: bool = False

    @property
    def pools(self) -> list[Pool]:
        return list(dict.fromkeys([*(r.pool for r in self.routes), self.default]))

    @property
    def services(self) -> tuple[str, ...]:
        """Every service this listener serves (its routes' and its default pool's)."""
        return tuple(dict.fromkeys([*(r.service for r in self.routes), *self.default.services]))


@dataclass(frozen=True)
class Layout:
    listeners: tuple[Listener, ...]

    @property
    def pools(self) -> list[Pool]:
        """Every pool once, in listener order."""
        return list(dict.fromkeys(p for listener in self.listeners for p in listener.pools))


def probe_host(spec: BalancerSpec) -> str:
    """The Host of the balancer's health probes: the name on the run's certificate (a probe over TLS
    verifies the CAS against it), else the VIP name the lab's certificates carry by default."""
    return spec.tls_files.server_name if spec.tls_files else "mail.caslab.test"


def allowed_methods(spec: BalancerSpec, service: str) -> tuple[frozenset[str], str]:
    """The methods `service` can have at all in this spec's TLS mode, and why the others are out."""
    if service in TCP_SERVICES:
        return (
            TCP_METHODS,
            f"{service} is plain TCP, with no cookie, header or TLS handshake to key on",
        )
    if spec.tls == "passthrough":
        return (
            PASSTHROUGH_METHODS,
            "with tls passthrough the balancer sees only TCP and the TLS handshake",
        )
    return HTTP_METHODS, "the TLS session ID is visible to the balancer only with tls passthrough"


@dataclass(frozen=True)
class ShapeProblem:
    """Something no driver can render of a spec: the service it is about (None when several are), what,
    and the balancer setting it is about when it is not persistence (e.g. "timeouts.server_idle")."""

    service: str | None
    text: str
    setting: str | None = None


def shape_problems(spec: BalancerSpec) -> list[ShapeProblem]:
    """What no driver can render of this spec (problems of the combination, not of one method)."""
    out = []
    for service, p in spec.persistence.items():
        if p.fallback is not None and (
            p.method not in FALLBACK_PRIMARIES or p.fallback.method not in FALLBACK_METHODS
        ):
            out.append(
                ShapeProblem(
                    service,
                    f"{service}: a fallback is only for a key the client may not send "
                    f"({', '.join(sorted(FALLBACK_PRIMARIES))}) falling back to source-ip, not {p}",
                )
            )
    if spec.tls == "passthrough":
        groups = [HTTP_SERVICES] if spec.topology == "single-vip" else [g for g in VIP_GROUPS if len(g) > 1]
        for group in groups:
            web = [s for s in group if s in HTTP_SERVICES]
            if len({spec.persistence[s] for s in web}) > 1:
                methods = ", ".join(f"{s}={spec.persistence[s]}" for s in web)
                out.append(
                    ShapeProblem(
                        None,
                        f"tls passthrough sends {', '.join(web)} through one TCP listener, so they need one "
                        f"method, but they have {methods}; use one method or topology vip-per-service",
                    )
                )
    return out + _shared_timeout_problems(spec)


def _shared_timeout_problems(spec: BalancerSpec) -> list[ShapeProblem]:
    """Services of one pool with different server_idle, or different client_idle where one route takes
    them all (a TCP pool; a listener's default pool on vip-per-service)."""
    out = []
    layout = build_layout(spec)
    catch_all = {listener.default for listener in layout.listeners}
    for pool in layout.pools:
        if len(pool.services) < 2:
            continue
        sides = ("client_idle", "server_idle") if pool.tcp or pool in catch_all else ("server_idle",)
        for side in sides:
            values = {s: getattr(spec.timeouts.of(s), f"{side}_s") for s in pool.services}
            if len(set(values.values())) == 1:
                continue
            own = [s for s in pool.services if getattr(spec.timeouts.services.get(s), f"{side}_s", None)]
            have = ", ".join(f"{s} {_seconds(v)}" for s, v in values.items())
            names = " and ".join(pool.services)
            if pool.tcp:
                why = f"tls passthrough sends {', '.join(pool.services)} through one TCP listener"
                instead = "use topology vip-per-service"
            elif side == "client_idle":
                why = f"{names} share one pool and one address, where one route takes every path"
                instead = "give them different persistence methods (then each has a route of its own)"
            else:
                why = f"{names} share one pool (one persistence rule)"
                instead = "give them different persistence methods (then each has a pool of its own)"
            out.append(
                ShapeProblem(
                    (own or [None])[0],
                    f"{why}, so they take one {side}, but have {have}; set one {side} for all of them, "
                    f"or {instead}",
                    setting=f"timeouts.{side}",
                )
            )
    return out


def _seconds(value: float | None) -> str:
    return "(the driver's default)" if value is None else f"{value:g} s"


def build_layout(spec: BalancerSpec) -> Layout:
    """The listeners and pools for `spec` (assumes shape_problems(spec) is empty)."""
    tls = spec.tls
    vip = spec.vip
    if tls == "passthrough":
        web_kind, web_port, cas_port = "tcp", vip.https_port, "https_port"
    elif tls == "none":
        web_kind, web_port, cas_port = "http", vip.http_port, "http_port"
    else:
        web_kind, web_port, cas_port = (
            "https",
            vip.https_port,
            "https_port" if tls == "bridge" else "http_port",
        )

    def web_pool(name: str, services: tuple[str, ...]) -> Pool:
        return Pool(
            name,
            services,
            spec.persistence[services[0]],
            tls == "passthrough",
            cas_port,
            tls == "bridge",
            timeouts=spec.timeouts.of(services[0]),
        )

    def route(service: str) -> Route:
        return Route(service, SERVICE_PATHS[service], by_service[service], spec.timeouts.of(service))

    def listener(name: str, host: str, port: int, kind: str, routes: tuple, default: Pool) -> Listener:
        return _with_timeouts(spec, Listener(name, host, port, kind, routes, default))

    same_owa_ecp = spec.persistence["owa"] == spec.persistence["ecp"]
    if same_owa_ecp:
        owa = ecp = web_pool("owa_ecp", ("owa", "ecp"))
    else:
        owa, ecp = web_pool("owa", ("owa",)), web_pool("ecp", ("ecp",))
    by_service = {"owa": owa, "ecp": ecp} | {s: web_pool(s, (s,)) for s in HTTP_SERVICES[2:]}

    listeners = []
    if spec.topology == "single-vip":
        if tls == "passthrough":
            listeners.append(
                listener("web", vip.host, web_port, web_kind, (), web_pool("web", HTTP_SERVICES))
            )
        else:
            routes = tuple(route(s) for s in HTTP_SERVICES)
            other = Pool(
                "other",
                (),
                Persistence("none"),
                False,
                cas_port,
                tls == "bridge",
                timeouts=spec.timeouts.of(None),
            )
            listeners.append(listener("web", vip.host, web_port, web_kind, routes, other))
    else:
        for group in VIP_GROUPS:
            if group[0] not in HTTP_SERVICES:
                continue
            host = vip.service_host(group[0], spec.topology)
            name = by_service[group[0]].name if len(group) == 1 or same_owa_ecp else "owa_ecp"
            if tls == "passthrough":
                listeners.append(listener(name, host, web_port, web_kind, (), web_pool(name, group)))
                continue
            routes = tuple(route(s) for s in group[1:] if by_service[s] != by_service[group[0]])
            listeners.append(listener(name, host, web_port, web_kind, routes, by_service[group[0]]))

    listeners = _one_source_ip_rule(listeners)
    mapi_p, ab_p = spec.persistence["mapi"], spec.persistence["addressbook"]
    shared = mapi_p == ab_p and mapi_p.method == "source-ip"
    mapi = Pool("mapi", ("mapi",), mapi_p, True, "mapi_port", timeouts=spec.timeouts.of("mapi"))
    ab = Pool(
        "addressbook",
        ("addressbook",),
        ab_p,
        True,
        "ab_port",
        rule_owner="mapi" if shared else None,
        timeouts=spec.timeouts.of("addressbook"),
    )
    for pool, port in ((mapi, vip.mapi_port), (ab, vip.ab_port)):
        host = vip.service_host(pool.services[0], spec.topology)
        listeners.append(listener(pool.name, host, port, "tcp", (), pool))
    return Layout(tuple(listeners))


def _with_timeouts(spec: BalancerSpec, listener: Listener) -> Listener:
    """`listener` with the timeouts all its services share (traffic no service owns has the scenario's
    own), else the scenario's own and `client_idle_varies` when they differ in client_idle."""
    owners: list[str | None] = list(listener.services) or [None]
    if not listener.default.services:
        owners.append(None)  # the `other` pool: paths no service owns
    each = {spec.timeouts.of(s) for s in owners}
    shared = next(iter(each)) if len(each) == 1 else spec.timeouts.of(None)
    return replace(listener, timeouts=shared, client_idle_varies=len({t.client_idle_s for t in each}) > 1)


def _one_source_ip_rule(listeners: list[Listener]) -> list[Listener]:
    """The web listeners with every `source-ip` pool sharing the rule of the first pool that has the same
    persistence (`rule_owner`)."""
    owners: dict[Persistence, str] = {}
    shared: dict[Pool, Pool] = {}
    for pool in dict.fromkeys(p for listener in listeners for p in listener.pools):
        if pool.persistence.method == "source-ip":
            owner = owners.setdefault(pool.persistence, pool.name)
            if owner != pool.name:
                shared[pool] = replace(pool, rule_owner=owner)
    return [
        replace(
            listener,
            routes=tuple(replace(r, pool=shared.get(r.pool, r.pool)) for r in listener.routes),
            default=shared.get(listener.default, listener.default),
        )
        for listener in listeners
    ]
