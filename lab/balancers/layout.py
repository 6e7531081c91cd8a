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
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from caslab.vocab import HTTP_SERVICES, METHODS, SERVICE_PATHS, TCP_SERVICES, VIP_GROUPS
from lab.model import BalancerSpec, CasEndpoint, Persistence

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


@dataclass(frozen=True)
class Listener:
    name: str
    host: str
    port: int
    kind: str  # "http", "https" (TLS ends here) or "tcp"
    routes: tuple[Route, ...]
    default: Pool  # for every path no route takes (the only pool of a TCP listener)

    @property
    def pools(self) -> list[Pool]:
        return list(dict.fromkeys([*(r.pool for r in self.routes), self.default]))


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


def shape_problems(spec: BalancerSpec) -> list[tuple[str | None, str]]:
    """What no driver can render of this spec (problems of the combination, not of one method): the
    service each is about (None when several are) and the problem."""
    out = []
    for service, p in spec.persistence.items():
        if p.fallback is not None and (
            p.method not in FALLBACK_PRIMARIES or p.fallback.method not in FALLBACK_METHODS
        ):
            out.append(
                (
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
                    (
                        None,
                        f"tls passthrough sends {', '.join(web)} through one TCP listener, so they need one "
                        f"method, but they have {methods}; use one method or topology vip-per-service",
                    )
                )
    return out


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
        )

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
                Listener("web", vip.host, web_port, web_kind, (), web_pool("web", HTTP_SERVICES))
            )
        else:
            routes = tuple(Route(s, SERVICE_PATHS[s], by_service[s]) for s in HTTP_SERVICES)
            other = Pool("other", (), Persistence("none"), False, cas_port, tls == "bridge")
            listeners.append(Listener("web", vip.host, web_port, web_kind, routes, other))
    else:
        for group in VIP_GROUPS:
            if group[0] not in HTTP_SERVICES:
                continue
            host = vip.service_host(group[0], spec.topology)
            name = by_service[group[0]].name if len(group) == 1 or same_owa_ecp else "owa_ecp"
            if tls == "passthrough":
                listeners.append(Listener(name, host, web_port, web_kind, (), web_pool(name, group)))
                continue
            routes = tuple(
                Route(s, SERVICE_PATHS[s], by_service[s])
                for s in group[1:]
                if by_service[s] != by_service[group[0]]
            )
            listeners.append(Listener(name, host, web_port, web_kind, routes, by_service[group[0]]))

    listeners = _one_source_ip_rule(listeners)
    mapi_p, ab_p = spec.persistence["mapi"], spec.persistence["addressbook"]
    shared = mapi_p == ab_p and mapi_p.method == "source-ip"
    mapi = Pool("mapi", ("mapi",), mapi_p, True, "mapi_port")
    ab = Pool(
        "addressbook",
        ("addressbook",),
        ab_p,
        True,
        "ab_port",
        rule_owner="mapi" if shared else None,
    )
    for pool, port in ((mapi, vip.mapi_port), (ab, vip.ab_port)):
        host = vip.service_host(pool.services[0], spec.topology)
        listeners.append(Listener(pool.name, host, port, "tcp", (), pool))
    return Layout(tuple(listeners))


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
