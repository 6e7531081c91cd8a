"""The reader of users' Traefik configs: the dynamic config (routers, services, TLS) in YAML or TOML
(lab.balancers.userconfig has the contract and rules 1-7).

Traefik's static config (entry points, providers, logs, the API) is not part of the file under test:
the lab writes its own, as its driver does (lab.balancers.drivers.traefik), with one entry point for
each entry point the file names, on the VIP by its role. An entry point's role, in this order:
a port of PORT_ROLES in its name (`ep443`, `tcp-59531`); the API (a router to api@internal) -> stats;
its HTTP routers (one with `tls` -> https, else http); a TCP router passing TLS through -> https; its
name (mapi/rpc -> mapi, addressbook/nspi/ab -> addressbook); else the role of its TCP servers' port.
Routers that name no entry point are on every entry point, as in Traefik. The entry points' own
timeouts are the lab driver's (no read timeout: RPC/HTTP channels stream), so what is under test is the
dynamic file; where it routes Outlook Anywhere, a note says what Traefik v3's default read timeout (60 s,
a whole request: measured, it closed a busy IN channel after 60 s) would do in production.

How each rule reads in Traefik (README, "Your own balancer config"):
1. Servers: `http.services.<s>.loadBalancer.servers[].url` and `tcp.services.<s>.loadBalancer.servers[]
   .address` become the farm's CAS (a URL without a port: 80, or 443 for https); a health check's
   `port` picks the CAS port by its role.
2. Listeners: the entry points, as above. `Host(`name`)` in a router rule also matches the VIP's
   address (the lab's clients send it as Host), and `HostSNI(`name`)` becomes `HostSNI(`*`)` (they
   connect by address and send no SNI).
3. Stats: the API on the VIP's stats port (the lab reads its routers there); counters come from the
   lab's JSON access log.
4. TLS: `tls.certificates`, the default store's certificate, `serversTransports` `rootCAs`, client
   `certificates` and `clientAuth.caFiles` become the run's files, `serverName` the run certificate's
   name; where the file has no default certificate, the run's is added (clients that send no SNI get it).
5. Time: sticky cookie `maxAge`, and a servers transport's `idleConnTimeout` and `responseHeaderTimeout`
   (how long a held Ping may go without an answer), are divided by the time scale.
7. Refused: anything with an address that is not the lab's (forwardAuth, plugins), host names anywhere.
Traefik has no config check: the driver starts it and reads its API, refusing a router or service
Traefik reports an error for (lab.balancers.drivers.traefik).
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import yaml

from lab.balancers.drivers.traefik import file_provider
from lab.balancers.userconfig import (
    PASSED_THROUGH,
    PORT_ROLES,
    Address,
    Adopted,
    AdoptedFile,
    ConfigRefused,
    Place,
    Problem,
    Reader,
    Reading,
    ServerMapping,
    Source,
    Timeout,
    guess_driver,
    register,
)
from lab.balancers.userconfig.farm import CLIENT_PATHS, PoolServer, cas_port, map_servers
from lab.balancers.userconfig.yamlfile import Edits, load, scalar
from lab.model import Persistence

# TCP entry points by name (HTTP ones take their role from their routers: TLS or not).
ROLE_WORDS = {
    "mapi": "mapi",
    "rpc": "mapi",
    "addressbook": "addressbook",
    "nspi": "addressbook",
    "ab": "addressbook",
}
LONG = "3600s"


class _Doc:
    """A dynamic config in YAML or TOML: its data, and edits of its values by path, in place."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.toml = source.name.endswith(".toml") or (
            not source.name.endswith((".yml", ".yaml"))
            and re.search(r"^\s*\[", source.text, re.M) is not None
        )
        self.edits = Edits(source)
        self.lines = source.text.splitlines()
        if self.toml:
            try:
                self.data = tomllib.loads(source.text)
            except tomllib.TOMLDecodeError as err:
                raise ConfigRefused(
                    [Problem(source.name, 0, f"TOML syntax: {err}")], f"{source.name} is not TOML"
                ) from None
            self.root = None
            self._taken: dict[str, int] = {}
        else:
            self.root = load(source.text, source.name)
            self.data = self.root.data() or {}

    def _toml_at(self, path: tuple, consume: bool) -> tuple[int, int, int] | None:
        """(line, start, end) of the value at `path` in a TOML file: the next unused occurrence of its
        literal (values are visited in file order)."""
        value = self.get(*path)
        if isinstance(value, str):
            pattern = re.compile(r"(\"|')" + re.escape(value).replace('"', '\\"') + r"\1")
        else:
            pattern = re.compile(rf"\b{re.escape(str(path[-1]))}\s*=\s*({re.escape(str(value))})\b")
        key = f"{pattern.pattern}"
        skip = self._taken.get(key, 0)
        seen = 0
        for i, line in enumerate(self.lines):
            for m in pattern.finditer(line):
                if seen == skip:
                    if consume:
                        self._taken[key] = skip + 1
                    start, end = m.span(1) if not isinstance(value, str) else m.span()
                    return i, start, end
                seen += 1
        return None

    def get(self, *path: str | int) -> object:
        node: object = self.data
        for key in path:
            if isinstance(node, dict):
                node = node.get(key)
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                return None
        return node

    def line(self, *path: str | int) -> int:
        """The line as written (1-based) of the value at `path`; 0 when unknown."""
        if self.root is not None:
            node = self.root.get(*path)
            return self.source.line_of(node.line) if node is not None else 0
        at = self._toml_at(path, consume=False)
        return self.source.line_of(at[0]) if at else 0

    def replace(self, path: tuple, new: object, rule: str) -> None:
        if self.root is not None:
            node = self.root.get(*path)
            if node is not None:
                self.edits.replace(node, scalar(new, node), rule)
            return
        at = self._toml_at(path, consume=True)
        if at is not None:
            text = json.dumps(new) if isinstance(new, str) else str(new)
            self.edits.changes.append((at[0], at[1], at[0], at[2], text, rule))

    def add_default_certificate(self, cert: str, key: str) -> None:
        rule = "the run's certificate as the default (the lab's clients send no SNI)"
        value = {"certFile": cert, "keyFile": key}
        if self.root is None:
            block = [
                "",
                "[tls.stores.default.defaultCertificate]",
                f"  certFile = {json.dumps(cert)}",
                f"  keyFile = {json.dumps(key)}",
            ]
            for text in block:
                self.edits.added.append((len(self.lines), text, rule))
            return
        tls = self.root.get("tls")
        if tls is None:
            self.edits.insert_key(
                self.root, "tls", {"stores": {"default": {"defaultCertificate": value}}}, rule
            )
        elif tls.get("stores") is None:
            self.edits.insert_key(tls, "stores", {"default": {"defaultCertificate": value}}, rule)
        elif tls.get("stores", "default") is None:
            self.edits.insert_key(tls.get("stores"), "default", {"defaultCertificate": value}, rule)
        else:
            self.edits.insert_key(tls.get("stores", "default"), "defaultCertificate", value, rule)


def _url(url: str) -> tuple[str, str, int | None, str]:
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit() or (host.endswith("]") is False and ":" in host):
        host, port = authority, ""
    default = 443 if scheme == "https" else 80
    return scheme, host.strip("[]"), int(port) if port else default, slash + path


def _address(address: str) -> tuple[str, int | None]:
    host, sep, port = address.rpartition(":")
    return (host.strip("[]"), int(port)) if sep and port.isdigit() else (address, None)


def _mapping(data: object) -> dict:
    return data if isinstance(data, dict) else {}


# A servers transport's times that are Exchange time: a pooled connection's idleness, and the wait for a
# CAS's answer headers (an ActiveSync Ping's answer comes only when it ends).
SCALED_FORWARDING_TIMEOUTS = ("idleConnTimeout", "responseHeaderTimeout")


@register
class TraefikReader(Reader):
    driver = "traefik"
    label = "Traefik"
    main_file = "dynamic.yml"

    def looks_like(self, text: str) -> bool:
        """Traefik's marks, or (a file in JSON, which has none of them) http/tcp routers or services."""
        guess = guess_driver(text)
        if guess is not None:
            return guess == self.driver
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError:
                return False
        return any(
            isinstance(_mapping(data).get(k), dict) and {"routers", "services"} & set(data[k])
            for k in ("http", "tcp")
        )

    def rewrite(self, source: Source, place: Place) -> Adopted:
        doc = _Doc(source)
        problems: list[Problem] = []
        dynamic_name = "dynamic.toml" if doc.toml else "dynamic.yml"
        found: list[tuple[PoolServer, tuple, str, str, str]] = []  # server, path, kind, scheme, rest
        for kind, key in (("http", "url"), ("tcp", "address")):
            for name, service in _mapping(doc.get(kind, "services")).items():
                for i, server in enumerate(_mapping(service.get("loadBalancer")).get("servers") or []):
                    value = _mapping(server).get(key)
                    if not isinstance(value, str):
                        continue
                    path = (kind, "services", name, "loadBalancer", "servers", i, key)
                    if kind == "http":
                        scheme, host, port, rest = _url(value)
                    else:
                        (host, port), scheme, rest = _address(value), "", ""
                    line = doc.line(*path)
                    text = self._text(doc, line)
                    found.append(
                        (
                            PoolServer(name, value, host, port, source.name, line, text),
                            path,
                            kind,
                            scheme,
                            rest,
                        )
                    )
        mapping, more = map_servers([f[0] for f in found], place)
        problems += more
        servers = []
        for ps, path, kind, scheme, rest in found:
            cas = mapping.get(ps)
            if cas is None:
                continue
            port = cas_port(cas, ps.port)
            if port is None:
                problems.append(Problem(ps.file, ps.line, f"server port {ps.port} has no role", ps.text))
                continue
            new = f"{scheme}://{cas.host}:{port}{rest}" if kind == "http" else f"{cas.host}:{port}"
            doc.replace(path, new, f"server -> {cas.name}")
            servers.append(ServerMapping(ps.pool, ps.server, cas.name, ps.file, ps.line))
            check = _mapping(doc.get(*path[:4], "healthCheck")).get("port")
            if isinstance(check, int) and (hport := cas_port(cas, check)) is not None:
                doc.replace((*path[:4], "healthCheck", "port"), hport, f"health check port -> {cas.name}")

        # Rule 2: rules that name hosts.
        vips = place.vip_hosts()
        for kind in ("http", "tcp"):
            for name, router in _mapping(doc.get(kind, "routers")).items():
                rule = _mapping(router).get("rule")
                if not isinstance(rule, str):
                    continue
                new = re.sub(r"HostSNI\(`[^`]*`\)", "HostSNI(`*`)", rule) if kind == "tcp" else rule
                if kind == "http":
                    lab = " || ".join(f"Host(`{h}`)" for h in vips)
                    new = re.sub(
                        r"Host\((`[^`]*`)\)", lambda m, lab=lab: f"(Host({m.group(1)}) || {lab})", rule
                    )
                if new != rule:
                    doc.replace(
                        (kind, "routers", name, "rule"),
                        new,
                        "the lab's clients send the VIP's address as Host, no SNI",
                    )

        # Rule 4 and 5.
        files = place.tls_files
        for i, cert in enumerate(_mapping(doc.get("tls")).get("certificates") or []):
            for key, value in (("certFile", files.server_cert), ("keyFile", files.server_key)):
                if key in _mapping(cert):
                    doc.replace(("tls", "certificates", i, key), str(value), "TLS: the run's certificate")
        has_default = False
        for store, data in _mapping(doc.get("tls", "stores")).items():
            default = _mapping(_mapping(data).get("defaultCertificate"))
            for key, value in (("certFile", files.server_cert), ("keyFile", files.server_key)):
                if key in default:
                    has_default = True
                    doc.replace(
                        ("tls", "stores", store, "defaultCertificate", key),
                        str(value),
                        "TLS: the run's certificate",
                    )
        for option, data in _mapping(doc.get("tls", "options")).items():
            for i, _ca in enumerate(_mapping(_mapping(data).get("clientAuth")).get("caFiles") or []):
                doc.replace(
                    ("tls", "options", option, "clientAuth", "caFiles", i),
                    str(files.ca_pem),
                    "TLS: the run's CA",
                )
        for kind in ("http", "tcp"):
            for name, transport in _mapping(doc.get(kind, "serversTransports")).items():
                base = (kind, "serversTransports", name)
                for i, _ca in enumerate(_mapping(transport).get("rootCAs") or []):
                    doc.replace((*base, "rootCAs", i), str(files.ca_pem), "TLS: the run's CA")
                if "serverName" in _mapping(transport):
                    doc.replace((*base, "serverName"), files.server_name, "TLS: the run certificate's name")
                tls = _mapping(_mapping(transport).get("tls")) if kind == "tcp" else {}
                for i, _ca in enumerate(tls.get("rootCAs") or []):
                    doc.replace((*base, "tls", "rootCAs", i), str(files.ca_pem), "TLS: the run's CA")
                if "serverName" in tls:
                    doc.replace(
                        (*base, "tls", "serverName"), files.server_name, "TLS: the run certificate's name"
                    )
                for i, cert in enumerate(_mapping(transport).get("certificates") or []):
                    for key, value in (("certFile", files.server_cert), ("keyFile", files.server_key)):
                        if key in _mapping(cert):
                            doc.replace(
                                (*base, "certificates", i, key), str(value), "TLS: the run's certificate"
                            )
                forwarding = _mapping(_mapping(transport).get("forwardingTimeouts"))
                for key in SCALED_FORWARDING_TIMEOUTS if place.time_scale != 1 else ():
                    value = forwarding.get(key)
                    if isinstance(value, str) and (s := _seconds(value)) is not None:
                        doc.replace(
                            (*base, "forwardingTimeouts", key),
                            f"{s / place.time_scale:g}s",
                            f"Exchange time / time_scale {place.time_scale:g}",
                        )
        if place.time_scale != 1:
            for name, service in _mapping(doc.get("http", "services")).items():
                age = _mapping(
                    _mapping(_mapping(service.get("loadBalancer")).get("sticky")).get("cookie")
                ).get("maxAge")
                if isinstance(age, int) and age > 0:
                    doc.replace(
                        ("http", "services", name, "loadBalancer", "sticky", "cookie", "maxAge"),
                        max(1, round(age / place.time_scale)),
                        f"Exchange time / time_scale {place.time_scale:g}",
                    )
        https_routers = any("tls" in _mapping(r) for r in _mapping(doc.get("http", "routers")).values())
        if https_routers and not has_default:
            doc.add_default_certificate(str(files.server_cert), str(files.server_key))

        entry_points, stats_named = self._entry_points(doc, place, problems)
        if problems:
            raise ConfigRefused(problems, f"{source.name} cannot be put into the lab as written")
        main, rewrites = doc.edits.apply(dynamic_name)
        static = self._static(place, entry_points, dynamic_name, stats_named)
        static_file = AdoptedFile(
            "traefik.yml", "(the lab's static config)", "", static, tuple(0 for _ in static.splitlines())
        )
        listeners = tuple(sorted({a for role, a in entry_points.values() if role != "stats"}))
        tls, why = self._tls(doc, entry_points)
        return Adopted(self.driver, (main, static_file), tuple(rewrites), tuple(servers), listeners, tls, why)

    def _text(self, doc: _Doc, line: int) -> str:
        written = doc.source.written.splitlines()
        return written[line - 1] if 0 < line <= len(written) else ""

    def _entry_points(
        self, doc: _Doc, place: Place, problems: list[Problem]
    ) -> tuple[dict[str, tuple[str, tuple[str, int]]], bool]:
        """Entry point name -> (role, VIP address), by the rule in the module docstring; and whether the
        file routes the API on an entry point of its own."""
        named: dict[str, list[tuple[str, str, dict]]] = {}
        for kind in ("http", "tcp"):
            for name, router in _mapping(doc.get(kind, "routers")).items():
                eps = _mapping(router).get("entryPoints") or [None]
                for ep in eps:
                    named.setdefault(ep, []).append((kind, name, _mapping(router)))
        if None in named:  # routers on every entry point: the lab's one per role they need
            loose = named.pop(None)
            for kind, name, router in loose:
                ep = "websecure" if kind == "http" and "tls" in router else "web" if kind == "http" else None
                if ep is None:
                    problems.append(
                        Problem(
                            doc.source.name,
                            doc.line("tcp", "routers", name),
                            f"TCP router {name} names no entry point: name one after its port (ep59531)",
                        )
                    )
                    continue
                named.setdefault(ep, []).append((kind, name, router))
        out: dict[str, tuple[str, tuple[str, int]]] = {}
        stats_named = False
        for ep, routers in named.items():
            role = self._role(ep, routers, doc)
            if role is None:
                kind, name, _r = routers[0]
                problems.append(
                    Problem(
                        doc.source.name,
                        doc.line(kind, "routers", name, "entryPoints")
                        or doc.line(kind, "routers", name, "rule"),
                        f"entry point {ep}: the lab cannot tell its port; name it after its port "
                        "(e.g. ep443) or web/websecure/mapi/addressbook",
                    )
                )
                continue
            stats_named = stats_named or role == "stats"
            host = place.vip.host if role == "stats" else place.vip_hosts(_role_services(role))[0]
            out[ep] = (role, (host, place.vip_port(role)))
        return out, stats_named

    def _role(self, ep: str, routers: list[tuple[str, str, dict]], doc: _Doc) -> str | None:
        for number in re.findall(r"\d+", ep):
            if int(number) in PORT_ROLES:
                return PORT_ROLES[int(number)]
        if any(str(r.get("service")).endswith("@internal") for _k, _n, r in routers):
            return "stats"
        http = [r for kind, _n, r in routers if kind == "http"]
        if http:
            return "https" if any("tls" in r for r in http) else "http"
        if any(_mapping(r.get("tls")).get("passthrough") for _k, _n, r in routers):
            return "https"
        if ep.lower() in ROLE_WORDS:
            return ROLE_WORDS[ep.lower()]
        for _kind, _name, router in routers:
            service = _mapping(doc.get("tcp", "services", str(router.get("service"))))
            for server in _mapping(service.get("loadBalancer")).get("servers") or []:
                port = _address(str(_mapping(server).get("address", "")))[1]
                if port in PORT_ROLES:
                    return PORT_ROLES[port]
        return None

    def _static(self, place: Place, entry_points: dict, dynamic_name: str, stats_named: bool) -> str:
        """The lab's static config, as its driver writes it, with the file's entry points on the VIP."""
        eps = {
            name: {
                "address": f"{host}:{port}",
                "transport": {
                    "respondingTimeouts": {"readTimeout": "0s", "idleTimeout": LONG},
                    "lifeCycle": {"graceTimeOut": "0s"},
                },
            }
            for name, (_role, (host, port)) in entry_points.items()
        }
        if not stats_named:
            eps["traefik"] = {
                "address": f"{place.vip.host}:{place.vip.stats_port}",
                "transport": {"lifeCycle": {"graceTimeOut": "0s"}},
            }
        static = {
            "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
            "entryPoints": eps,
            "providers": file_provider(place.folder / dynamic_name),
            "api": {"insecure": not stats_named, "dashboard": False},
            "log": {"level": "WARN", "noColor": True},
            "accessLog": {"filePath": str(place.folder / "access.log"), "format": "json"},
        }
        return json.dumps(static, indent=2) + "\n"

    def _tls(self, doc: _Doc, entry_points: dict) -> tuple[str, str]:
        for name, router in _mapping(doc.get("http", "routers")).items():
            eps = router.get("entryPoints") or list(entry_points)
            if "tls" in router and any(entry_points.get(e, ("",))[0] == "https" for e in eps):
                line = doc.line("http", "routers", name, "rule")
                service = _mapping(doc.get("http", "services", str(router.get("service"))))
                urls = [
                    str(_mapping(s).get("url", ""))
                    for s in _mapping(service.get("loadBalancer")).get("servers") or []
                ]
                if any(u.startswith("https://") for u in urls):
                    return "bridge", f"router {name} (line {line}) ends TLS and its servers speak HTTPS"
                return "offload", f"router {name} (line {line}) ends TLS"
        for name, router in _mapping(doc.get("tcp", "routers")).items():
            if _mapping(router.get("tls")).get("passthrough"):
                return (
                    "passthrough",
                    f"TCP router {name} (line {doc.line('tcp', 'routers', name, 'rule')}) passes TLS through",
                )
        return "none", "no router ends TLS: the clients speak plain HTTP"

    # -- the safety check's reading --------------------------------------------------------------------

    def addresses(self, files: dict[str, str]) -> list[Address]:
        out = []
        for name, text in files.items():
            source = Source(name, Path(name), text, text, tuple(range(1, text.count("\n") + 2)))
            if name == "traefik.yml":
                static = json.loads(text)
                for ep, data in static.get("entryPoints", {}).items():
                    host, port = _address(data.get("address", ""))
                    out.append(
                        Address(name, 1, "listen", f"entry point {ep}", host, port, data.get("address", ""))
                    )
                continue
            doc = _Doc(source)

            def add(
                path: tuple, kind: str, what: str, host: str, port: int | None, doc=doc, name=name
            ) -> None:
                line = doc.line(*path)
                lines = doc.lines
                out.append(
                    Address(
                        name, line, kind, what, host, port, lines[line - 1] if 0 < line <= len(lines) else ""
                    )
                )

            for kind, key in (("http", "url"), ("tcp", "address"), ("udp", "address")):
                for sname, service in _mapping(doc.get(kind, "services")).items():
                    for i, server in enumerate(
                        _mapping(_mapping(service).get("loadBalancer")).get("servers") or []
                    ):
                        value = str(_mapping(server).get(key, ""))
                        host, port = _url(value)[1:3] if kind == "http" else _address(value)
                        add(
                            (kind, "services", sname, "loadBalancer", "servers", i, key),
                            "connect",
                            f"{kind} server",
                            host,
                            port,
                        )
            for mname, middleware in _mapping(doc.get("http", "middlewares")).items():
                for what, data in _mapping(middleware).items():
                    address = _mapping(data).get("address") if what == "forwardAuth" else None
                    if isinstance(address, str):
                        _s, host, port, _r = _url(address)
                        add(
                            ("http", "middlewares", mname, what, "address"),
                            "connect",
                            "forwardAuth",
                            host,
                            port,
                        )
                    elif what == "plugin":
                        add(("http", "middlewares", mname, what), "name", "plugin middleware", mname, None)
        return out

    # -- explaining ------------------------------------------------------------------------------------

    def notes(self, source: Source, place: Place) -> list[str]:
        """The static config's read timeout, which the file under test cannot set: the lab's entry points
        have none, and Traefik v3's default (60 s) would end Outlook Anywhere channels in production. It
        bounds an HTTP request only: a TCP router passing the port through is not read from (measured)."""
        rpc = next(r for r in self.readings(source, place) if r.service == "rpchttp")
        if rpc.pool is None or rpc.tcp:
            return []
        return [
            "Traefik's static config is not under test and the lab's entry points have readTimeout 0s: "
            "Traefik v3's default readTimeout (60s) ends every Outlook Anywhere IN channel a minute after "
            "it opens, busy or not (measured here with Traefik 3.7), so production needs "
            "entryPoints.<name>.transport.respondingTimeouts.readTimeout: 0s where this file runs"
        ]

    def readings(self, source: Source, place: Place) -> list[Reading]:
        doc = _Doc(source)
        problems: list[Problem] = []
        entry_points, _stats = self._entry_points(doc, place, problems)
        routers = _mapping(doc.get("http", "routers"))
        https = [e for e, (role, _a) in entry_points.items() if role == "https"]
        front_role = "https" if https else "http"
        front = {  # the HTTP routers on the web entry points
            name: router
            for name, router in routers.items()
            if any(
                entry_points.get(e, ("",))[0] == front_role for e in router.get("entryPoints") or entry_points
            )
        }
        # Layer 4: with none, a TCP router there takes the web port, each connection placed once.
        passed = None if front else self._passed_through(doc, entry_points, front_role)
        out = []
        for service, path in CLIENT_PATHS.items():
            if passed is not None:
                out.append(dataclasses.replace(passed, service=service))
                continue
            candidates = []
            for name, router in front.items():
                hit = _rule_matches(str(router.get("rule", "")), path)
                rule = str(router.get("rule", ""))
                priority = router.get("priority") or len(rule)
                candidates.append((hit, priority, name, router))
            unknown = [
                f"router {n}: a rule the lab cannot read" for hit, _p, n, _r in candidates if hit is None
            ]
            hits = sorted([c for c in candidates if c[0]], key=lambda c: -c[1])
            if not hits:
                out.append(
                    Reading(
                        service, None, "no router takes it: Traefik answers 404", None, "", (), tuple(unknown)
                    )
                )
                continue
            _hit, _p, name, router = hits[0]
            sname = str(router.get("service", ""))
            how = f"router {name} (line {doc.line('http', 'routers', name, 'rule')}): {router.get('rule')}"
            persistence, words, rule, timeouts, unread = self._balance(doc, sname)
            out.append(
                Reading(
                    service, sname, how, persistence, words, tuple(timeouts), tuple(unknown + unread), rule
                )
            )
        for service in ("mapi", "addressbook"):
            eps = [e for e, (role, _a) in entry_points.items() if role == service]
            router = next(
                (
                    (n, r)
                    for n, r in _mapping(doc.get("tcp", "routers")).items()
                    if set(r.get("entryPoints") or entry_points) & set(eps)
                ),
                None,
            )
            if router is None:
                out.append(Reading(service, None, f"no TCP router on a {service} entry point", None, ""))
                continue
            name, r = router
            sname = str(r.get("service", ""))
            how = f"TCP router {name} (line {doc.line('tcp', 'routers', name, 'rule')}): service {sname}"
            out.append(
                Reading(
                    service, sname, how, Persistence("none"), "round robin (TCP services only round-robin)"
                )
            )
        return out

    def _passed_through(self, doc: _Doc, entry_points: dict, role: str) -> Reading | None:
        """The TCP router on an entry point of `role` that no HTTP router uses (TLS passthrough, or plain TCP
        forwarding), as the reading of every web service: Traefik's TCP services only round-robin."""
        for name, router in _mapping(doc.get("tcp", "routers")).items():
            eps = router.get("entryPoints") or list(entry_points)
            if any(entry_points.get(e, ("",))[0] == role for e in eps):
                sname = str(router.get("service", ""))
                how = f"TCP router {name} (line {doc.line('tcp', 'routers', name, 'rule')}): service {sname}"
                return Reading(
                    "",
                    sname,
                    f"{how}: {PASSED_THROUGH}",
                    Persistence("none"),
                    "round robin (TCP services only round-robin)",
                    tcp=True,
                )
        return None

    def _balance(self, doc: _Doc, name: str) -> tuple[Persistence | None, str, str, list[Timeout], list[str]]:
        service = _mapping(doc.get("http", "services", name))
        if "weighted" in service or "mirroring" in service or "failover" in service:
            kind = next(k for k in ("weighted", "mirroring", "failover") if k in service)
            return None, f"{kind} service", "", [], [f"a {kind} service: the lab reads no further"]
        lb = _mapping(service.get("loadBalancer"))
        cookie = _mapping(_mapping(lb.get("sticky")).get("cookie")) if "sticky" in lb else None
        timeouts = self._response_header_timeout(doc, str(lb.get("serversTransport") or ""))
        if cookie is not None:
            cname = str(cookie.get("name") or f"(Traefik's name for {name})")
            age = cookie.get("maxAge")
            words = f"sticky.cookie {cname}" + (f" maxAge {age}" if age else "")
            if isinstance(age, int) and age > 0:
                timeouts.append(
                    Timeout(
                        "sticky cookie maxAge",
                        float(age),
                        doc.line("http", "services", name, "loadBalancer", "sticky", "cookie", "maxAge"),
                    )
                )
            return (
                Persistence(
                    "lb-cookie", timeout_s=float(age) if isinstance(age, int) and age > 0 else 1800.0
                ),
                words,
                f"cookie {cname}",
                timeouts,
                [],
            )
        strategy = str(lb.get("strategy") or "wrr")
        if strategy == "hrw":
            return (
                Persistence("source-ip"),
                "strategy hrw (on the client address)",
                f"hrw over {name}",
                timeouts,
                [],
            )
        if strategy == "p2c":
            return (
                None,
                "strategy p2c (two random servers, the less loaded)",
                "",
                timeouts,
                ["p2c: not one of the lab's methods"],
            )
        return Persistence("none"), f"strategy {strategy}", "", timeouts, []

    @staticmethod
    def _response_header_timeout(doc: _Doc, transport: str) -> list[Timeout]:
        """The servers transport's `responseHeaderTimeout`: how long Traefik waits for the CAS's answer to
        begin, so a held Ping is cut at it (a 504; measured with Traefik 3.7). Once headers came (an
        RPC_OUT_DATA channel), or while a body streams in (RPC_IN_DATA), nothing of it applies. A service
        without a transport of this file's takes the static config's default, which is not under test;
        Traefik's own is 0s, none."""
        name = transport.removesuffix("@file")
        path = ("http", "serversTransports", name, "forwardingTimeouts", "responseHeaderTimeout")
        value = doc.get(*path) if name else None
        seconds = _seconds(str(value)) if value is not None else None
        return [Timeout("responseHeaderTimeout", seconds, doc.line(*path))] if seconds else []

    def server_lines(self, place: Place, role: str = "http", options: str = "") -> str:
        """The farm as `servers` items in YAML flow style (also TOML inline tables, written with `=`)."""
        scheme = "https" if role == "https" else "http"
        if role in ("mapi", "addressbook"):
            return "\n".join(f'- {{address: "{c.host}:{Place.cas_port(c, role)}"}}' for c in place.servers)
        return "\n".join(f'- {{url: "{scheme}://{c.host}:{Place.cas_port(c, role)}"}}' for c in place.servers)


def _role_services(role: str) -> tuple[str, ...]:
    from lab.balancers.userconfig import ROLE_SERVICES

    return ROLE_SERVICES[role]


def _seconds(value: str) -> float | None:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value.strip())
    if not m:
        return float(value) if value.isdigit() else None
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _rule_matches(rule: str, path: str) -> bool | None:
    """Whether a router rule takes `path` from the lab's clients; None when it uses matchers the lab cannot
    evaluate. Reads Host (true: rule 2 makes every Host matcher take the VIP's address), Path, PathPrefix,
    PathRegexp, &&, || and !; the rest (headers, client IP, queries) is unknown."""

    def regexp(m: re.Match[str]) -> str:
        try:
            return str(re.search(m.group(1), path) is not None)
        except re.error:
            return "None"

    expr = re.sub(r"\bHost\(`[^`]*`\)", "True", rule)
    expr = re.sub(r"\bPathPrefix\(`([^`]*)`\)", lambda m: str(path.startswith(m.group(1))), expr)
    expr = re.sub(r"\bPath\(`([^`]*)`\)", lambda m: str(path == m.group(1)), expr)
    expr = re.sub(r"\bPathRegexp\(`([^`]*)`\)", regexp, expr)
    expr = expr.replace("&&", " and ").replace("||", " or ").replace("!", " not ")
    words = re.findall(r"\w+|\S", expr)
    if not words or any(w not in ("True", "False", "None", "and", "or", "not", "(", ")") for w in words):
        return None
    # Only booleans, None and operators are left: Python's own evaluation of them is Traefik's logic.
    value = eval(" ".join(words), {"__builtins__": {}}, {})
    return bool(value) if value is not None else None
