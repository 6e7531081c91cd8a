"""The reader of users' Envoy configs: a static bootstrap in YAML or JSON (lab.balancers.userconfig has the
contract and rules 1-7).

How each rule reads in Envoy (README, "Your own balancer config"):
1. Servers: the endpoints (`load_assignment ... socket_address`) of every cluster a route or a tcp_proxy
   reaches become the farm's CAS; an endpoint's port picks the CAS port by its role, and so does a
   `health_check_config.port_value`. A STRICT_DNS or LOGICAL_DNS cluster becomes STATIC (its endpoints
   are the CAS' addresses now). A cluster no route reaches (tracing, access-log, ext_authz collectors)
   is refused by name: the lab runs no such thing.
2. Listeners: each listener's `socket_address` moves to the VIP by the role of its port. Two listeners
   that would land on one VIP address are refused.
3. Stats: the `admin` interface moves to the VIP's stats port (the lab reads its counters from admin
   /clusters); where the file has none, the lab adds one.
4. TLS: every `certificate_chain`, `private_key` and `trusted_ca` (listeners, clusters, static secrets)
   becomes the run's file; an upstream `sni` and the exact names of subject-alt-name matchers become the
   run certificate's name.
5. Time: `idle_timeout` (routes, HTTP connection managers, tcp_proxy), `stream_idle_timeout`,
   `request_timeout`, `max_stream_duration`, cookie `ttl`s and route `timeout`s are divided by the time
   scale; where the file leaves one to Envoy, Envoy's default is added, scaled (route timeout 15 s,
   stream_idle_timeout 5 min, connection and tcp_proxy idle_timeout 1 h): left alone they would be real
   seconds, hours of Exchange time.
6. Run folder: file access logs keep their file name, in the run folder.
   Host: the lab's clients send the VIP's address as Host; a route config with no virtual host that
   takes any host (`*`) gets `*` in the domains of its first virtual host, as nginx's default server.
7. Refused by name: `dynamic_resources` and any xDS source (`ads`, `rds`, `api_config_source`,
   `sds_config`), EDS and ORIGINAL_DST clusters, `tracing`, `stats_sinks`, gRPC services (access-log,
   ext_authz, rate-limit sinks), the dynamic forward proxy, DNS resolvers; and anything whose address is a
   host name.
The file is checked with `envoy --mode validate` (the driver's validate_command) after it passed.
"""

from __future__ import annotations

import re
from pathlib import Path

from lab.balancers.userconfig import (
    PASSED_THROUGH,
    PORT_ROLES,
    Address,
    Adopted,
    ConfigRefused,
    Place,
    Problem,
    Reader,
    Reading,
    ServerMapping,
    Source,
    Timeout,
    register,
)
from lab.balancers.userconfig.farm import (
    CLIENT_PATHS,
    PoolServer,
    cas_port,
    header_name,
    map_servers,
    vip_for,
)
from lab.balancers.userconfig.yamlfile import Edits, Node, load, scalar
from lab.model import Persistence

TLS_KEYS = {"certificate_chain": "server_cert", "private_key": "server_key", "trusted_ca": "ca_pem"}
# Exchange time wherever the file sets them: idle timeouts, cookie lifetimes, and the limits on a whole
# request (`request_timeout`) or stream (`max_stream_duration`), which end Outlook Anywhere's channels.
IDLE_KEYS = ("idle_timeout", "stream_idle_timeout", "ttl", "request_timeout", "max_stream_duration")
# Envoy's own values where a file sets none (its API reference): Exchange time like any other, so the
# file as run gets them scaled (rule 5), and explain shows them. A route's `timeout` runs from the end of
# the request to the end of the answer: a held Ping or an RPC_OUT_DATA channel ends at it (0s: never).
ROUTE_TIMEOUT_S = 15.0
STREAM_IDLE_TIMEOUT_S = 300.0  # HttpConnectionManager stream_idle_timeout
CONNECTION_IDLE_TIMEOUT_S = 3600.0  # its common_http_protocol_options idle_timeout, and TcpProxy's
# What reaches a host the lab did not make (rule 7), by key anywhere in the file.
REMOTE_KEYS = (
    "dynamic_resources",
    "ads_config",
    "rds",
    "api_config_source",
    "sds_config",
    "cds_config",
    "lds_config",
    "stats_sinks",
    "tracing",
    "envoy_grpc",
    "google_grpc",
    "dns_resolvers",
    "typed_dns_resolver_config",
    "eds_cluster_config",
)
DYNAMIC_TYPES = ("EDS", "ORIGINAL_DST")


def _typed(node: Node) -> tuple[str, Node | None]:
    """The short @type of a filter (`HttpConnectionManager`) and its typed_config."""
    config = node.get("typed_config")
    kind = config.text("@type") if config is not None else None
    return (kind or "").rsplit(".", 1)[-1], config


def _chains(listener: Node) -> list[Node]:
    out = listener.many("filter_chains")
    default = listener.get("default_filter_chain")
    return out + ([default] if default is not None else [])


def _filters(listener: Node, kind: str) -> list[Node]:
    """The typed configs of a listener's network filters of one kind (HttpConnectionManager, TcpProxy)."""
    out = []
    for chain in _chains(listener):
        for f in chain.many("filters"):
            name, config = _typed(f)
            if name == kind and config is not None:
                out.append(config)
    return out


def _port(address: Node | None) -> tuple[str, int | None, Node | None, Node | None]:
    """host, port and their nodes of an `address` (a socket_address inside)."""
    sa = address.get("socket_address") if address is not None else None
    if sa is None:
        return "", None, None, None
    host, port = sa.get("address"), sa.get("port_value")
    value = port.value if port is not None else None
    return (host.value or "") if host else "", int(value) if value and value.isdigit() else None, host, port


def _endpoints(cluster: Node) -> list[Node]:
    return [lb for group in cluster.many("load_assignment", "endpoints") for lb in group.many("lb_endpoints")]


def _route_clusters(root: Node) -> dict[str, list[Node]]:
    """Cluster name -> the nodes that name it as a route's or tcp_proxy's destination."""
    out: dict[str, list[Node]] = {}
    for node in root.walk():
        value = node.get("cluster") if node.is_map else None
        # a route action, a tcp_proxy (it has a stat_prefix) or one of weighted_clusters (a weight)
        destination = node.path[-1:] == ("route",) or node.get("stat_prefix") or node.get("weight")
        if value is not None and value.value and destination:
            out.setdefault(value.value, []).append(value)
    return out


def seconds(value: str | None) -> float | None:
    """A protobuf duration ("3600s", "0.5s") in seconds."""
    if value is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)s", value.strip())
    return float(m.group(1)) if m else None


def _duration(value: float) -> str:
    return f"{int(value)}s" if value == int(value) else f"{value:.3f}s"


def _timeout(name: str, node: Node | None, default: float | None, line) -> list[Timeout]:
    """The timeout the file sets at `node`; else Envoy's `default` for it, said to be one; else none."""
    if node is None:
        return [] if default is None else [Timeout(f"{name} (Envoy's default)", default, 0)]
    s = seconds(node.value)
    return [] if s is None else [Timeout(name, s, line(node))]


def _default_rule(name: str, seconds: float, time_scale: float) -> str:
    return (
        f"Envoy's default {name} {_duration(seconds)}, which the file does not set: "
        f"Exchange time / time_scale {time_scale:g}"
    )


def _scaled_defaults(node: Node, edits: Edits, time_scale: float) -> None:
    """Rule 5 for the idle timeouts an HTTP connection manager or a TCP proxy leaves to Envoy: left
    alone they would be real seconds (5 minutes of stream idleness: 10 Exchange hours at 120)."""
    kind = (node.text("@type") or "").rpartition(".")[2]
    wanted = []  # (mapping, key, what the rewrite calls it, Envoy's default)
    if kind == "HttpConnectionManager":
        wanted.append((node, "stream_idle_timeout", "stream_idle_timeout", STREAM_IDLE_TIMEOUT_S))
        options = node.get("common_http_protocol_options")
        if options is None:
            value = {"idle_timeout": _duration(CONNECTION_IDLE_TIMEOUT_S / time_scale)}
            rule = _default_rule("connection idle_timeout", CONNECTION_IDLE_TIMEOUT_S, time_scale)
            edits.insert_key(node, "common_http_protocol_options", value, rule)
        elif options.is_map:
            wanted.append((options, "idle_timeout", "connection idle_timeout", CONNECTION_IDLE_TIMEOUT_S))
    elif kind == "TcpProxy":
        wanted.append((node, "idle_timeout", "tcp_proxy idle_timeout", CONNECTION_IDLE_TIMEOUT_S))
    for mapping, key, name, default in wanted:
        if mapping.get(key) is None:
            value = f'"{_duration(default / time_scale)}"'
            edits.insert_key(mapping, key, value, _default_rule(name, default, time_scale))


@register
class EnvoyReader(Reader):
    driver = "envoy"
    label = "Envoy"
    main_file = "envoy.yaml"  # Envoy parses by extension; YAML reads JSON files too

    # -- rewriting -------------------------------------------------------------------------------------

    def rewrite(self, source: Source, place: Place) -> Adopted:
        root = load(source.text, source.name)
        edits = Edits(source)
        problems: list[Problem] = []
        lines = source.text.splitlines()

        def at(node: Node) -> tuple[str, int, str]:
            return source.name, source.line_of(node.line), lines[node.line] if node.line < len(lines) else ""

        static = root.get("static_resources")
        listeners = static.many("listeners") if static else []
        clusters = static.many("clusters") if static else []
        reached = _route_clusters(root)

        # Rule 1: the endpoints of the clusters routes reach.
        found: list[tuple[PoolServer, Node, Node | None, Node | None, Node]] = []
        for cluster in clusters:
            name = cluster.text("name") or ""
            endpoints = _endpoints(cluster)
            if name not in reached:
                if endpoints:
                    problems.append(
                        Problem(
                            *at(cluster)[:2],
                            f"cluster {name} is reached by no route: it would "
                            "connect to a collector the lab does not run (tracing, logs, authz); "
                            "remove it",
                            at(cluster)[2],
                        )
                    )
                continue
            for lb in endpoints:
                host, port, host_node, port_node = _port(lb.get("endpoint", "address"))
                if host_node is None:
                    continue
                ps = PoolServer(name, f"{host}:{port}", host, port, *at(host_node))
                found.append((ps, lb, host_node, port_node, cluster))
            kind = cluster.get("type")
            if kind is not None and kind.value in ("STRICT_DNS", "LOGICAL_DNS") and endpoints:
                edits.replace(kind, scalar("STATIC", kind), f"{kind.value} -> STATIC: the CAS are addresses")
        mapping, more = map_servers([f[0] for f in found], place)
        problems += more
        servers = []
        for ps, lb, host_node, port_node, _cluster in found:
            cas = mapping.get(ps)
            if cas is None:
                continue
            port = cas_port(cas, ps.port)
            if port is None or port_node is None:
                problems.append(Problem(ps.file, ps.line, f"endpoint port {ps.port} has no role", ps.text))
                continue
            edits.replace(host_node, scalar(cas.host, host_node), f"endpoint -> {cas.name}")
            edits.replace(port_node, str(port), f"endpoint -> {cas.name}")
            check = lb.get("endpoint", "health_check_config", "port_value")
            if check is not None and check.value and check.value.isdigit():
                hport = cas_port(cas, int(check.value))
                if hport is not None:
                    edits.replace(check, str(hport), f"health check port -> {cas.name}")
            servers.append(ServerMapping(ps.pool, ps.server, cas.name, ps.file, ps.line))

        # Rule 2: listeners; rule 3: admin.
        landed: dict[tuple[str, int], int] = {}
        out_listeners: set[tuple[str, int]] = set()
        for listener in listeners:
            _h, port, host_node, port_node = _port(listener.get("address"))
            if port_node is None or host_node is None:
                continue
            role = PORT_ROLES.get(port)
            if role is None or role == "stats":
                problems.append(
                    Problem(
                        *at(port_node)[:2],
                        f"listener on port {port}, a port of no role "
                        "(80, 443, 135, 6001-6004, 59531, 59532 or the lab's own)",
                        at(port_node)[2],
                    )
                )
                continue
            vip = vip_for(place, role)[0]
            if vip in landed:
                problems.append(
                    Problem(
                        *at(port_node)[:2],
                        f"a second listener on VIP {vip[0]}:{vip[1]} (like line {landed[vip]})",
                        at(port_node)[2],
                    )
                )
            landed[vip] = at(port_node)[1]
            out_listeners.add(vip)
            edits.replace(host_node, scalar(vip[0], host_node), f"listener -> VIP {role}")
            edits.replace(port_node, str(vip[1]), f"listener -> VIP {role}")
        admin = root.get("admin")
        stats = (place.vip.host, place.vip.stats_port)
        _h, _p, host_node, port_node = _port(admin.get("address") if admin else None)
        if host_node is not None and port_node is not None:
            edits.replace(host_node, scalar(stats[0], host_node), "admin -> the VIP's stats port")
            edits.replace(port_node, str(stats[1]), "admin -> the VIP's stats port")
        else:
            value = {"address": {"socket_address": {"address": stats[0], "port_value": stats[1]}}}
            edits.insert_key(
                root, "admin", value, "admin on the VIP's stats port (the lab reads its counters)"
            )

        # Rules 4-6, value by value.
        for node in root.walk():
            if place.time_scale != 1:
                _scaled_defaults(node, edits, place.time_scale)
            for key, value in node.items():
                if key in TLS_KEYS and value.is_map:
                    path = str(getattr(place.tls_files, TLS_KEYS[key]))
                    edits.replace(
                        value, '{"filename": ' + scalar(path) + "}", f"TLS: the run's {key.replace('_', ' ')}"
                    )
                elif key == "sni" and value.value is not None:
                    edits.replace(
                        value, scalar(place.tls_files.server_name, value), "TLS: the run certificate's name"
                    )
                elif key in ("match_subject_alt_names", "match_typed_subject_alt_names"):
                    for exact in value.walk():
                        name = exact.get("exact") if exact.is_map else None
                        if name is not None and name.value is not None:
                            edits.replace(
                                name,
                                scalar(place.tls_files.server_name, name),
                                "TLS: the run certificate's name",
                            )
                elif key == "path" and (node.text("@type") or "").endswith("FileAccessLog") and value.value:
                    if not value.value.startswith("/dev/"):
                        path = str(place.folder / (Path(value.value).name or "access.log"))
                        edits.replace(value, scalar(path, value), "access log in the run folder")
                elif key == "access_log_path" and value.value and not value.value.startswith("/dev/"):
                    path = str(place.folder / (Path(value.value).name or "admin.log"))
                    edits.replace(value, scalar(path, value), "access log in the run folder")
                elif key in IDLE_KEYS and place.time_scale != 1 and (s := seconds(value.value)) is not None:
                    edits.replace(
                        value,
                        scalar(_duration(s / place.time_scale), value),
                        f"Exchange time / time_scale {place.time_scale:g}",
                    )
                elif (
                    key == "route"
                    and value.is_map
                    and node.get("match") is not None
                    and place.time_scale != 1
                ):
                    timeout = value.get("timeout")  # the route's action; none: Envoy's 15 s
                    if timeout is None:
                        edits.insert_key(
                            value,
                            "timeout",
                            f'"{_duration(ROUTE_TIMEOUT_S / place.time_scale)}"',
                            _default_rule("route timeout", ROUTE_TIMEOUT_S, place.time_scale),
                        )
                    elif (s := seconds(timeout.value)) is not None and s > 0:
                        edits.replace(
                            timeout,
                            scalar(_duration(s / place.time_scale), timeout),
                            f"Exchange time / time_scale {place.time_scale:g}",
                        )
                elif key == "virtual_hosts" and value.is_list:
                    hosts = value.list()
                    if hosts and not any("*" in [d.value for d in h.many("domains")] for h in hosts):
                        domains = hosts[0].get("domains")
                        if domains is not None and domains.is_list:
                            edits.insert_item(
                                domains, '"*"', "the lab's clients send the VIP's address as Host"
                            )
        if problems:
            raise ConfigRefused(problems, f"{source.name} cannot be put into the lab as written")
        tls, why = self._tls(listeners, clusters, reached, at)
        main, rewrites = edits.apply(self.main_file)
        return Adopted(
            self.driver, (main,), tuple(rewrites), tuple(servers), tuple(sorted(out_listeners)), tls, why
        )

    def _tls(self, listeners: list[Node], clusters: list[Node], reached: dict, at) -> tuple[str, str]:
        for listener in listeners:
            _h, port, _hn, port_node = _port(listener.get("address"))
            if PORT_ROLES.get(port) != "https":
                continue
            where = f"line {at(port_node)[1]}"
            ends = any(
                (_typed(c.get("transport_socket"))[0] if c.get("transport_socket") else "")
                == "DownstreamTlsContext"
                for c in _chains(listener)
            )
            if not ends:
                if _filters(listener, "TcpProxy"):
                    return "passthrough", f"{where}: the HTTPS listener forwards TLS as TCP (tcp_proxy)"
                return "none", f"{where}: the HTTPS listener has no TLS context: plain HTTP"
            for cluster in clusters:
                ts = cluster.get("transport_socket")
                if (
                    (cluster.text("name") in reached)
                    and ts is not None
                    and _typed(ts)[0] == "UpstreamTlsContext"
                ):
                    return (
                        "bridge",
                        f"{where} ends TLS and cluster {cluster.text('name')} speaks TLS to the CAS",
                    )
            return "offload", f"{where} ends TLS; no cluster speaks TLS to the CAS"
        return "none", "no listener on an HTTPS port: the clients speak plain HTTP"

    # -- the safety check's reading --------------------------------------------------------------------

    def addresses(self, files: dict[str, str]) -> list[Address]:
        out = []
        for name, text in files.items():
            root = load(text, name)
            lines = text.splitlines()
            for node in root.walk():
                if not node.is_map:
                    continue
                for key, value in node.items():
                    line = value.line
                    shown = lines[line] if line < len(lines) else ""
                    if key == "socket_address" and value.is_map:
                        host = value.text("address") or ""
                        port = value.text("port_value")
                        listen = node.path[:2] == ("static_resources", "listeners") or node.path[:1] == (
                            "admin",
                        )
                        kind = "listen" if listen and "cluster" not in str(node.path) else "connect"
                        what = (
                            "admin"
                            if node.path[:1] == ("admin",)
                            else "listener"
                            if kind == "listen"
                            else "endpoint"
                        )
                        out.append(
                            Address(
                                name,
                                line + 1,
                                kind,
                                what,
                                host,
                                int(port) if port and port.isdigit() else None,
                                shown,
                            )
                        )
                    elif key == "pipe" and value.is_map:
                        out.append(
                            Address(name, line + 1, "unix", "pipe", value.text("path") or "", None, shown)
                        )
                    elif key in REMOTE_KEYS:
                        out.append(Address(name, line + 1, "name", key, key, None, shown))
                    elif key == "type" and value.value in DYNAMIC_TYPES:
                        out.append(
                            Address(
                                name,
                                line + 1,
                                "name",
                                f"cluster type {value.value}",
                                value.value,
                                None,
                                shown,
                            )
                        )
                    elif key == "@type" and value.value and "dynamic_forward_proxy" in value.value:
                        out.append(
                            Address(name, line + 1, "name", "dynamic forward proxy", value.value, None, shown)
                        )
        return out

    # -- explaining ------------------------------------------------------------------------------------

    def readings(self, source: Source, place: Place) -> list[Reading]:
        root = load(source.text, source.name)
        static = root.get("static_resources")
        listeners = static.many("listeners") if static else []
        clusters = {c.text("name"): c for c in (static.many("clusters") if static else [])}

        def line(node: Node) -> int:
            return source.line_of(node.line)

        by_role: dict[str, Node] = {}
        for listener in listeners:
            role = PORT_ROLES.get(_port(listener.get("address"))[1])
            if role and role not in by_role:
                by_role[role] = listener
        front = by_role.get("https") or by_role.get("http")
        out = []
        for service, path in CLIENT_PATHS.items():
            hcm = _filters(front, "HttpConnectionManager") if front is not None else []
            passed = _filters(front, "TcpProxy") if front is not None else []
            if hcm:
                out.append(self._http_reading(service, path, hcm[0], clusters, line))
            elif passed:  # layer 4: TLS (or HTTP) passes through unread, each connection placed once
                out.append(self._tcp_reading(service, passed, clusters, line, PASSED_THROUGH))
            else:
                out.append(Reading(service, None, "no HTTP listener on an HTTP or HTTPS port", None, ""))
        for service in ("mapi", "addressbook"):
            listener = by_role.get(service)
            proxies = _filters(listener, "TcpProxy") if listener is not None else []
            if not proxies:
                out.append(Reading(service, None, f"no tcp_proxy listener on a {service} port", None, ""))
                continue
            out.append(self._tcp_reading(service, proxies, clusters, line))
        return out

    def _tcp_reading(self, service: str, proxies: list[Node], clusters: dict, line, how: str = "") -> Reading:
        """A service behind a tcp_proxy (MAPI, Address Book; any service of a listener that passes TLS
        through, `how` saying so): placed per connection by its cluster and hash policy."""
        proxy = proxies[0]
        name = proxy.text("cluster")
        source_ip = any(p.get("source_ip") is not None for p in proxy.many("hash_policy"))
        keys = [("source_ip", Persistence("source-ip"), False)] if source_ip else []
        timeouts = _timeout(
            "tcp_proxy idle_timeout", proxy.get("idle_timeout"), CONNECTION_IDLE_TIMEOUT_S, line
        )
        more = (
            ["several tcp_proxy filter chains (chosen by SNI?): the lab reads the first"]
            if len(proxies) > 1
            else []
        )
        persistence, words, rule, unread = self._balance(clusters.get(name), keys, more)
        route = f"tcp_proxy cluster {name} (line {line(proxy)})" + (f": {how}" if how else "")
        return Reading(
            service, name, route, persistence, words, tuple(timeouts), tuple(unread), rule, tcp=bool(how)
        )

    def _http_reading(self, service: str, path: str, hcm: Node, clusters: dict, line) -> Reading:
        timeouts = []
        for name, node, default in (
            ("stream_idle_timeout", hcm.get("stream_idle_timeout"), STREAM_IDLE_TIMEOUT_S),
            (
                "connection idle_timeout",
                hcm.get("common_http_protocol_options", "idle_timeout"),
                CONNECTION_IDLE_TIMEOUT_S,
            ),
            ("request_timeout", hcm.get("request_timeout"), None),  # Envoy's default: none
            ("max_stream_duration", hcm.get("common_http_protocol_options", "max_stream_duration"), None),
        ):
            timeouts += _timeout(name, node, default, line)
        routes_node = hcm.get("route_config", "virtual_hosts")
        if routes_node is None:
            return Reading(service, None, "routes from RDS, which the lab refuses", None, "", tuple(timeouts))
        hosts = routes_node.list()
        vhost = next(
            (h for h in hosts if "*" in [d.value for d in h.many("domains")]), hosts[0] if hosts else None
        )
        unread: list[str] = []
        for route in vhost.many("routes") if vhost is not None else []:
            match = route.get("match")
            hit = _matches(match, path) if match is not None else False
            if hit is None:
                unread.append(f"route at line {line(route)}: a match the lab cannot read")
                continue
            if not hit:
                continue
            action = route.get("route")
            how = f"route {_match_words(match)} (line {line(route)})"
            if action is None:
                return Reading(
                    service, None, f"{how}: Envoy answers itself", None, "", tuple(timeouts), tuple(unread)
                )
            name = action.text("cluster")
            if name is None:
                return Reading(
                    service,
                    None,
                    f"{how}: no single cluster",
                    None,
                    "",
                    tuple(timeouts),
                    (*unread, "weighted or header-chosen clusters"),
                )
            timeouts += _timeout("route timeout", action.get("timeout"), ROUTE_TIMEOUT_S, line)
            timeouts += _timeout("route idle_timeout", action.get("idle_timeout"), None, line)
            keys = [_policy_key(p) for p in action.many("hash_policy")]
            cookie = _stateful_session(hcm, route)
            persistence, words, rule, more = self._balance(clusters.get(name), keys, [], cookie)
            return Reading(
                service,
                name,
                f"{how}: cluster {name}",
                persistence,
                words,
                tuple(timeouts),
                tuple(unread + more),
                rule,
            )
        return Reading(
            service, None, "no route takes it: Envoy answers 404", None, "", tuple(timeouts), tuple(unread)
        )

    def _balance(
        self,
        cluster: Node | None,
        keys: list[tuple[str, Persistence | None, bool]],
        unread: list[str],
        cookie_state: tuple[str, float | None] | None = None,
    ) -> tuple[Persistence | None, str, str, list[str]]:
        """The lab's method a route's hash policies (`keys`, from _policy_key) or stateful session cookie
        amount to on a cluster, the file's words, the rule that holds the CAS, what the lab cannot read."""
        policy = _lb_policy(cluster)
        name = cluster.text("name") if cluster is not None else "?"
        if cookie_state is not None:
            cookie, ttl = cookie_state
            words = f"stateful_session cookie {cookie}" + (f" ttl {ttl:g}s" if ttl else "")
            return Persistence("lb-cookie", timeout_s=ttl or 1800.0), words, f"cookie {cookie}", unread
        if policy == "LEAST_REQUEST":
            return Persistence("leastconn"), f"{policy} (cluster {name})", "", unread
        if not keys or policy not in ("RING_HASH", "MAGLEV"):
            if keys:
                unread.append(f"hash_policy on a {policy} cluster: Envoy ignores it")
            return Persistence("none"), f"{policy} (cluster {name})", "", unread
        words = ", ".join(k[0] for k in keys)
        hash_keys = _hash_keys(cluster)
        # Clusters whose endpoints carry the same hash keys build one table (MAPI and Address Book).
        rule = f"{policy} on {words} over {hash_keys}" if hash_keys else f"{policy} on {words} on {name}"
        first, method, terminal = keys[0]
        if len(keys) == 2 and terminal and keys[1][0] == "source_ip" and method is not None:
            if method.method in ("cookie-hash", "header"):
                method = Persistence(method.method, method.name, fallback=Persistence("source-ip"))
        elif len(keys) > 1:
            unread.append("several hash policies whose keys Envoy combines: the lab reads the first")
        if method is None:
            unread.append(f"hash on {first}: a key the lab cannot name")
        return method, f"{policy}, hash_policy {words}", rule, unread

    def server_lines(self, place: Place, role: str = "http", options: str = "") -> str:
        """The farm as `lb_endpoints` items (flow style, one per line: valid YAML and JSON)."""
        extra = f", {options}" if options else ""
        return "\n".join(
            f'- {{"endpoint": {{"address": {{"socket_address": {{"address": "{c.host}", '
            f'"port_value": {Place.cas_port(c, role)}}}}}}}{extra}}}'
            for c in place.servers
        )


def _policy_key(policy: Node) -> tuple[str, Persistence | None, bool]:
    """(the key's words, the lab's method, terminal) of one hash policy."""
    terminal = policy.text("terminal") == "true"
    if policy.get("header") is not None:
        name = policy.text("header", "header_name") or ""
        return f"header {name}", Persistence("header", header_name(name)), terminal
    if policy.get("cookie") is not None:
        name = policy.text("cookie", "name") or ""
        ttl = seconds(policy.text("cookie", "ttl"))
        if ttl is not None:
            return (
                f"cookie {name} ttl {policy.text('cookie', 'ttl')} (Envoy sets it)",
                Persistence("lb-cookie", timeout_s=ttl or 1800.0),
                terminal,
            )
        return f"cookie {name}", Persistence("cookie-hash", name), terminal
    if policy.get("connection_properties") is not None:
        return "source_ip", Persistence("source-ip"), terminal
    return "other", None, terminal


def _lb_policy(cluster: Node | None) -> str:
    if cluster is None:
        return "ROUND_ROBIN"
    typed = cluster.get(
        "load_balancing_policy", "policies", 0, "typed_extension_config", "typed_config", "@type"
    )
    if typed is not None and typed.value:
        for word, name in (
            ("maglev", "MAGLEV"),
            ("ring_hash", "RING_HASH"),
            ("least_request", "LEAST_REQUEST"),
            ("random", "RANDOM"),
            ("round_robin", "ROUND_ROBIN"),
        ):
            if word in typed.value:
                return name
    return cluster.text("lb_policy") or "ROUND_ROBIN"


def _hash_keys(cluster: Node | None) -> list[str]:
    keys = []
    for lb in _endpoints(cluster) if cluster is not None else []:
        key = lb.text("metadata", "filter_metadata", "envoy.lb", "hash_key")
        if key is None:
            return []
        keys.append(key)
    return keys


def _stateful_session(hcm: Node, route: Node) -> tuple[str, float | None] | None:
    """The stateful_session cookie that applies to a route (its name and ttl), if any."""
    per_route = route.get("typed_per_filter_config")
    state = None
    for _k, v in per_route.items() if per_route is not None else []:
        if "StatefulSessionPerRoute" in (v.text("@type") or ""):
            if v.text("disabled") == "true":
                return None
            state = v.get("stateful_session", "session_state", "typed_config")
    if state is None:
        filters = hcm.get("http_filters")
        for f in filters.list() if filters else []:
            kind, config = _typed(f)
            if kind == "StatefulSession" and config is not None:
                state = config.get("session_state", "typed_config")
    if state is None or state.get("cookie") is None:
        return None
    return state.text("cookie", "name") or "", seconds(state.text("cookie", "ttl"))


def _matches(match: Node, path: str) -> bool | None:
    """Whether a route match takes `path`; None when it matches on something the lab cannot know."""
    if match.get("headers") is not None or match.get("query_parameters") is not None:
        return None
    caseless = match.text("case_sensitive") == "false"
    p = path.lower() if caseless else path
    if (prefix := match.text("prefix")) is not None:
        return p.startswith(prefix.lower() if caseless else prefix)
    if (exact := match.text("path")) is not None:
        return p == (exact.lower() if caseless else exact)
    if (sep := match.text("path_separated_prefix")) is not None:
        return p == sep or p.startswith(sep + "/")
    regex = match.text("safe_regex", "regex")
    if regex is not None:
        try:
            return re.fullmatch(regex, path) is not None
        except re.error:
            return None
    return None


def _match_words(match: Node) -> str:
    for key in ("prefix", "path", "path_separated_prefix"):
        if match.text(key) is not None:
            return f"{key} {match.text(key)}"
    return f"regex {match.text('safe_regex', 'regex')}"
