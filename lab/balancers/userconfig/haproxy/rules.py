"""The rules that put the lab into an HAProxy file (lab.balancers.userconfig, rules 1-7), line by line.

What each rule does to HAProxy's lines:
1. `server NAME ADDR[:PORT] ...` in a backend/listen: ADDR becomes its CAS's address, PORT the CAS port
   of its role (80 -> HTTP, 443 -> HTTPS, 135/6001-6004/59531 -> MAPI, 59532 -> Address Book; no port
   stays no port). A server already on a CAS's address is that CAS. `addr` (check address) becomes the
   CAS's address, `port` (check port) the CAS port of its role.
2. `bind ADDR:PORT[,...]` in a frontend/listen: each address becomes the VIP address(es) of the port's
   role (on vip-per-service, of the services the section routes), with the VIP's port; a port range is
   one line per role; an address that is already the lab's stays. `interface`, `namespace`,
   `transparent`, `v4v6` and `v6only` go (the VIP is on loopback).
3. The stats listener (a section showing `stats` and sending nothing to a backend) binds the VIP's stats
   port. `stats socket` lines become the lab's one (`stats socket unix@haproxy.sock mode 600 level admin`,
   in the run folder; the lab reads its counters there), added to `global` when the file has none.
4. `crt`, `crt-list` -> the run's key + chain; `ca-file` -> the run's CA; `crl-file` goes; `sni str(..)`,
   `verifyhost`, `check-sni` name the run's certificate; `ssl-dh-param-file` goes.
5. `timeout client|server|tunnel|http-keep-alive|client-fin|server-fin`, `stick-table ... expire`, `cookie
   ... maxidle|maxlife` are divided by time_scale.
6. Global `maxconn` and `ulimit-n` above what this machine's open-file limit allows are lowered to fit
   (HAProxy would not start). `log TARGET` (a syslog server, /dev/log) -> `log stdout` (with `format
   short` when no format is given), the balancer's log in the run folder. `chroot`, `user`, `group`,
   `uid`, `gid`, `daemon`, `pidfile`, `unix-bind`, `master-worker`, `server-state-file`,
   `server-state-base`, `load-server-state-from-file` go; `cookie ... domain` goes (the lab's clients
   reach the VIP by address, where a cookie for a domain would never be sent back).
7. Refused by name: resolvers, peers, mailers, ring, program and log-forward sections; `lua-load`,
   external checks, `server-template`, `source`/`usesrc`, `dispatch`, `do-resolve`, `set-dst`,
   `email-alert`, `resolvers` on a server, `socks4`; environment variables; files named in the config
   (`errorfile`, `-f` pattern files, maps, SPOE configs) that are not there. A relative file name is
   looked up beside the config and copied into the run folder under the same name.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path

from lab.balancers.userconfig import (
    PORT_ROLES,
    Adopted,
    AdoptedFile,
    ConfigRefused,
    Lines,
    Place,
    Problem,
    ServerMapping,
    Source,
)
from lab.balancers.userconfig.haproxy import layout
from lab.balancers.userconfig.haproxy.parse import Line, Section, edited, haproxy_time, parse, seconds, word
from lab.balancers.userconfig.haproxy.routes import REQUESTS, request_for, route
from lab.model import CasEndpoint

STATS_SOCKET = "stats socket unix@haproxy.sock mode 600 level admin"  # as the driver renders it
REFUSED_SECTIONS = {
    "resolvers": "resolves names with DNS servers: a query would leave the lab",
    "peers": "syncs stick tables with other balancers: the lab runs one",
    "mailers": "sends mail: the lab has no mail server",
    "ring": "forwards logs to servers the lab does not run",
    "program": "runs a program the lab cannot see into",
    "log-forward": "forwards logs to servers the lab does not run",
}
DROPPED = {
    "chroot": "the lab runs HAProxy in the run folder",
    "user": "the lab runs HAProxy as itself",
    "group": "the lab runs HAProxy as itself",
    "uid": "the lab runs HAProxy as itself",
    "gid": "the lab runs HAProxy as itself",
    "daemon": "the lab runs HAProxy in the foreground",
    "master-worker": "the lab runs HAProxy in the foreground",
    "pidfile": "the lab keeps the process itself",
    "unix-bind": "sockets go to the run folder",
    "ssl-dh-param-file": "TLS files are the run's",
    "server-state-file": "no state from production",
    "server-state-base": "no state from production",
    "load-server-state-from-file": "no state from production",
}
REFUSED_KEYWORDS = {
    "lua-load": "a Lua script can open connections the lab cannot see; the lab runs no scripts",
    "lua-load-per-thread": "a Lua script can open connections the lab cannot see; the lab runs no scripts",
    "lua-prepend-path": "the lab runs no Lua scripts",
    "external-check": "an external check runs a program that can reach any host",
    "server-template": "server-template resolves servers by DNS; list one server line per CAS, or use "
    "{{ cas_servers }}",
    "source": "source addresses and transparent proxying (usesrc) need addresses the lab does not have",
    "dispatch": "dispatch sends to a fixed address; use server lines",
    "email-alert": "mail alerts need a mail server",
    "parse-resolv-conf": "reads the machine's DNS servers: a query would leave the lab",
}
REFUSED_ACTIONS = {
    "do-resolve": "resolves names with DNS: a query would leave the lab",
    "set-dst": "sets the destination at run time: the lab cannot tell where it goes",
    "set-dst-port": "sets the destination at run time: the lab cannot tell where it goes",
}
SERVER_REFUSED = {
    "source": "a source address the lab does not have",
    "usesrc": "transparent proxying needs routing the lab does not set up",
    "resolvers": "resolves the server by DNS",
    "socks4": "connects through a SOCKS proxy the lab does not run",
}
BIND_DROPPED = {"interface": 1, "namespace": 1, "transparent": 0, "v4v6": 0, "v6only": 0}
SCALED_TIMEOUTS = ("client", "server", "tunnel", "http-keep-alive", "client-fin", "server-fin")
FD_RESERVE = 1000  # files HAProxy keeps besides two per connection (listeners, checks, logs)
LOG_KEEP = ("global", "stdout", "stderr", "fd@1", "fd@2")
NO_ROLE = (
    "is none of the services the lab serves (80/443 web, 135/6001-6004/59531 MAPI, 59532 Address Book): "
    "remove this listener from the candidate, or place it with placeholders"
)
SOCKET_LISTENER = (
    "listens on a socket; the lab's clients use the VIP (abns@ sockets between sections are fine)"
)
ROLE_NAMES = {
    "http": "HTTP",
    "https": "HTTPS",
    "mapi": "MAPI",
    "addressbook": "Address Book",
    "stats": "stats",
}


def adopt(source: Source, place: Place, main_file: str) -> Adopted:
    """The file with the lab put into it; ConfigRefused naming every line no rule can make the lab's."""
    _lines, sections = parse(source.text)
    rules = _Rules(source, place, sections)
    adopted = rules.run(main_file)
    if rules.problems:
        raise ConfigRefused(rules.problems, f"{source.name} cannot run in the lab as it is")
    return adopted


class _Rules:
    def __init__(self, source: Source, place: Place, sections: list[Section]) -> None:
        self.source, self.place, self.sections = source, place, sections
        self.problems: list[Problem] = []
        self.out = Lines(source)
        self.mappings: list[ServerMapping] = []
        self.servers: dict[int, CasEndpoint] = {}  # line index -> its CAS
        self.binds: dict[int, list[tuple[str, int]]] = {}  # line index -> VIP addresses it becomes
        self.data_files: list[AdoptedFile] = []

    def line_of(self, index: int) -> int:
        return self.source.line_of(index)

    def refuse(self, line: Line, why: str) -> None:
        self.problems.append(Problem(self.source.name, self.line_of(line.index), why, line.raw))

    def run(self, main_file: str) -> Adopted:
        self._map_servers()
        self._plan_binds()
        where = {line.index: (s, line) for s in self.sections for line in [s.header, *s.lines]}
        has_socket = any(s.kind == "global" and s.all("stats", "socket") for s in self.sections)
        if not any(s.kind == "global" for s in self.sections):
            self.out.put("global", 0)
            self.out.put(f"    {STATS_SOCKET}", 0)
            self.out.note(0, "", f"global\n    {STATS_SOCKET}", "the lab's stats socket (counters)")
            has_socket = True
        socket_done = False
        for index in range(len(self.out.lines)):
            section, line = where.get(index, (None, None))
            if section is None or line is None or not line.words:
                self.out.keep(index)
            elif line is section.header:
                self._header(section, line)
                if section.kind == "global" and not has_socket:
                    self.out.put(f"    {STATS_SOCKET}", 0)
                    self.out.note(0, "", STATS_SOCKET, "the lab's stats socket (counters)")
            elif section.kind == "global" and line.texts()[:2] == ["stats", "socket"]:
                if socket_done:
                    self._drop(line, "one stats socket, the lab's")
                else:
                    self._replace(line, [f"{line.indent}{STATS_SOCKET}"], "the lab's stats socket (counters)")
                    socket_done = True
            else:
                self._line(section, line)
        main = self.out.file(main_file)
        mode, why = layout.tls_mode(self.sections, self.line_of)
        listeners = tuple(dict.fromkeys(a for targets in self.binds.values() for a in targets))
        return Adopted(
            driver="haproxy",
            files=(main, *self.data_files),
            rewrites=tuple(self.out.rewrites),
            servers=tuple(self.mappings),
            listeners=listeners,
            tls=mode,
            tls_reason=why,
        )

    # -- one line at a time ---------------------------------------------------------------------------

    def _header(self, section: Section, line: Line) -> None:
        if section.kind in REFUSED_SECTIONS:
            self.refuse(line, f"a {section.kind} section {REFUSED_SECTIONS[section.kind]}; remove it")
        self._keep(line)

    def _line(self, section: Section, line: Line) -> None:
        keyword, texts = line.keyword, line.texts()
        self._refuse_named(section, line)
        if keyword in DROPPED and section.kind in ("global", "defaults", "backend", "listen"):
            self._drop(line, DROPPED[keyword])
        elif keyword == "log" and line.args and line.args[0] not in LOG_KEEP and section.kind != "ring":
            self._log(line)
        elif keyword == "bind" and section.kind in ("frontend", "listen"):
            self._bind(section, line)
        elif keyword == "server" and line.index in self.servers:
            self._server(line, self.servers[line.index])
        elif keyword == "default-server":
            self._options(line, {}, [])
        elif (
            keyword in ("maxconn", "ulimit-n") and section.kind == "global" and "".join(texts[1:2]).isdigit()
        ):
            self._fit_files(line)
        elif keyword == "timeout" and len(texts) > 2 and texts[1] in SCALED_TIMEOUTS:
            self._scaled(line, {2}, f"timeout {texts[1]}")
        elif keyword == "stick-table":
            self._scaled(
                line, {i + 1 for i, t in enumerate(texts[:-1]) if t == "expire"}, "stick-table expire"
            )
        elif keyword == "cookie":
            self._cookie(line)
        else:
            self._keep(line)
        self._files(line)

    def _refuse_named(self, section: Section, line: Line) -> None:
        texts = line.texts()
        if "${" in line.raw.split("#")[0] or any(t.startswith("$") and t[1:2].isalpha() for t in texts):
            self.refuse(line, "an environment variable the lab cannot know; write the value or a placeholder")
        if line.keyword in REFUSED_KEYWORDS:
            self.refuse(line, f"{line.keyword}: {REFUSED_KEYWORDS[line.keyword]}")
        if texts[:2] == ["option", "external-check"]:
            self.refuse(line, f"option external-check: {REFUSED_KEYWORDS['external-check']}")
        if line.keyword in ("http-request", "tcp-request", "http-response") and len(texts) > 2:
            action = texts[2] if line.keyword == "tcp-request" else texts[1]
            name = action.split("(")[0]
            if name in REFUSED_ACTIONS:
                self.refuse(line, f"{name}: {REFUSED_ACTIONS[name]}")
        if line.keyword == "stick-table" and line.has("peers"):
            self.refuse(line, "stick-table ... peers: syncs with other balancers; the lab runs one")

    # -- the rules ------------------------------------------------------------------------------------

    def _keep(self, line: Line) -> None:
        self.out.keep(line.index)

    def _drop(self, line: Line, why: str) -> None:
        self.out.note(self.line_of(line.index), line.raw, "", why)

    def _replace(self, line: Line, new: list[str], rule: str) -> None:
        for text in new:
            self.out.put(text, self.line_of(line.index))
        if new != [line.raw]:
            self.out.note(self.line_of(line.index), line.raw, "\n".join(new), rule)

    def _log(self, line: Line) -> None:
        # `format short` right after the target when the line gives none (as the driver renders it)
        changes: dict[int, str | None] = {1: "stdout" if line.has("format") else "stdout format short"}
        self._replace(line, [edited(line, changes)], "logs go to the balancer's log in the run folder")

    def _scaled(self, line: Line, positions: set[int], what: str) -> None:
        scale = self.place.time_scale
        changes: dict[int, str | None] = {}
        for i in positions:
            value = seconds(line.words[i].text)
            if value is not None and scale != 1:
                changes[i] = haproxy_time(value / scale)
        if changes:
            self._replace(
                line, [edited(line, changes)], f"{what} in Exchange time: divided by time_scale {scale:g}"
            )
        else:
            self._keep(line)

    def _fit_files(self, line: Line) -> None:
        """Global maxconn / ulimit-n within this machine's open-file limit (HAProxy needs about two files
        per connection and refuses to start above the limit)."""
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard == resource.RLIM_INFINITY:
            self._keep(line)
            return
        value = int(line.args[0])
        fits = (hard - FD_RESERVE) // 2 if line.keyword == "maxconn" else hard
        if value <= fits:
            self._keep(line)
            return
        rule = f"{line.keyword} within this machine's open-file limit ({hard})"
        self._replace(line, [edited(line, {1: str(fits)})], rule)

    def _cookie(self, line: Line) -> None:
        texts = line.texts()
        changes: dict[int, str | None] = {}
        rules = []
        for i, text in enumerate(texts[:-1]):
            if text in ("maxidle", "maxlife") and self.place.time_scale != 1:
                value = seconds(texts[i + 1])
                if value is not None:
                    changes[i + 1] = haproxy_time(value / self.place.time_scale)
                    rules.append(f"cookie {text} divided by time_scale {self.place.time_scale:g}")
            if text == "domain":
                changes[i], changes[i + 1] = None, None
                rules.append("cookie domain dropped: the lab's clients reach the VIP by address")
        if changes:
            self._replace(line, [edited(line, changes)], "; ".join(rules))
        else:
            self._keep(line)

    def _tls_options(self, line: Line, changes: dict[int, str | None]) -> list[str]:
        """Changes for the TLS files and names a line holds; returns the rules applied."""
        files, texts, rules = self.place.tls_files, line.texts(), []
        crt_seen = False
        for i, text in enumerate(texts[:-1]):
            if i == 0:
                continue
            if text in ("crt", "crt-list"):
                if crt_seen:
                    changes[i], changes[i + 1] = None, None
                else:
                    changes[i], changes[i + 1] = "crt", word(str(files.server_pem))
                    crt_seen = True
                rules.append("certificate -> the run's")
            elif text in ("ca-file", "ca-verify-file"):
                changes[i + 1] = word(str(files.ca_pem))
                rules.append("CA -> the run's")
            elif text == "crl-file":
                changes[i], changes[i + 1] = None, None
                rules.append("crl-file dropped (the run's CA revokes nothing)")
            elif text == "sni" and texts[i + 1].startswith("str("):
                changes[i + 1] = f"str({files.server_name})"
                rules.append("SNI -> the run certificate's name")
            elif text in ("verifyhost", "check-sni"):
                changes[i + 1] = files.server_name
                rules.append(f"{text} -> the run certificate's name")
        return rules

    def _options(self, line: Line, changes: dict[int, str | None], rules: list[str]) -> None:
        """A server or default-server line with `changes` and its options made the lab's."""
        rules = rules + self._tls_options(line, changes)
        texts = line.texts()
        for i, text in enumerate(texts):
            if i > 2 and text in SERVER_REFUSED:
                self.refuse(line, f"{line.keyword} ... {text}: {SERVER_REFUSED[text]}")
            if line.keyword == "default-server" and text == "addr":
                self.refuse(line, "default-server addr: every CAS has its own address; set addr per server")
            if text == "port" and i + 1 < len(texts) and texts[i + 1].isdigit():
                port_role = PORT_ROLES.get(int(texts[i + 1]))
                if port_role in ("http", "https", "mapi", "addressbook"):
                    new = str(Place.cas_port(self.place.servers[0], port_role))
                    if new != texts[i + 1]:
                        changes[i + 1] = new
                        rules.append(f"check port -> the CAS {ROLE_NAMES[port_role]} port")
                else:
                    self.refuse(line, f"check port {texts[i + 1]} is none of the CAS's service ports")
            if text == "namespace" and i + 1 < len(texts):
                changes[i], changes[i + 1] = None, None
                rules.append("namespace dropped")
        if changes:
            self._replace(line, [edited(line, changes)], "; ".join(dict.fromkeys(rules)))
        else:
            self._keep(line)

    def _server(self, line: Line, cas: CasEndpoint) -> None:
        e = layout.endpoint(line.args[1])
        assert e is not None  # _map_servers refused the others
        changes: dict[int, str | None] = {}
        rules = []
        if e.port is None:
            address, port = cas.host, "no port: the client's"
        else:
            port_role = PORT_ROLES[e.port]
            address, port = f"{cas.host}:{Place.cas_port(cas, port_role)}", f"{ROLE_NAMES[port_role]} port"
        if address != line.args[1]:
            changes[2] = address
            rules.append(f"server -> {cas.name} ({port})")
        texts = line.texts()
        for i, text in enumerate(texts[:-1]):
            if text == "addr" and i > 2 and texts[i + 1] != cas.host:
                changes[i + 1] = cas.host
                rules.append(f"check addr -> {cas.name}")
        self._options(line, changes, rules)

    def _bind(self, section: Section, line: Line) -> None:
        targets = self.binds.get(line.index)
        if targets is None:  # refused, or a local socket: as written
            self._keep(line)
            return
        if not targets:
            self._drop(line, "merged: an earlier bind of this section has its VIP address")
            return
        changes: dict[int, str | None] = {}
        rules = self._tls_options(line, changes)
        texts = line.texts()
        for i, text in enumerate(texts):
            if i > 1 and text in BIND_DROPPED:
                changes[i] = None
                if BIND_DROPPED[text]:
                    changes[i + 1] = None
                rules.append(f"{text} dropped (the VIP is on loopback)")
        new = []
        for host, port in targets:
            changes[1] = f"{host}:{port}"
            new.append(edited(line, changes))
        roles = {self._role_of(section, port) for _host, port in targets}
        rule = "listener -> VIP " + ", ".join(ROLE_NAMES.get(r or "", "?") for r in sorted(roles, key=str))
        if rules:
            rule += "; " + "; ".join(dict.fromkeys(rules))
        self._replace(line, new, rule)

    def _role_of(self, section: Section, port: int) -> str | None:
        if layout.is_stats(section):
            return "stats"
        return next(
            (r for r in ("http", "https", "mapi", "addressbook") if self.place.vip_port(r) == port), None
        )

    # -- files the config names -----------------------------------------------------------------------

    def _files(self, line: Line) -> None:
        for name in _named_files(line):
            path = Path(name)
            if path.is_absolute():
                if not path.is_file():
                    self.refuse(line, f"names {name}, which is not on this machine: put it beside the config "
                                "and name it relatively")  # fmt: skip
                continue
            beside = (self.source.path.parent / path).resolve()
            if not beside.is_relative_to(self.source.path.parent.resolve()) or not beside.is_file():
                self.refuse(line, f"names {name}, which is not beside the config ({self.source.path.parent})")
                continue
            if any(f.name == name for f in self.data_files):
                continue
            text = beside.read_text(encoding="utf-8", errors="replace")
            self.data_files.append(AdoptedFile(name, name, text, text, tuple(range(1, text.count("\n") + 2))))

    # -- planning the servers and the listeners -------------------------------------------------------

    def _map_servers(self) -> None:
        """Each server line of each pool -> its CAS (rule 1), refusing what cannot be mapped."""
        place, n = self.place, len(self.place.servers)
        by_host = {cas.host: cas for cas in place.servers}
        pools: list[tuple[Section, list[tuple[Line, str, layout.Endpoint]]]] = []
        for pool in layout.pools(self.sections):
            entries = []
            for line in pool.all("server"):
                if len(line.args) < 2:
                    continue
                e = layout.endpoint(line.args[1])
                if e is None:
                    self.refuse(line, f"cannot read the server address {line.args[1]!r}")
                    continue
                if e.local:
                    continue  # a local socket (another frontend of this file): not a CAS
                if e.offset:
                    self.refuse(
                        line,
                        "a port relative to the client's (+N/-N): give the port, or use {{ cas_servers }}",
                    )
                    continue
                if e.port is not None and PORT_ROLES.get(e.port) not in (
                    "http",
                    "https",
                    "mapi",
                    "addressbook",
                ):
                    ports = "80, 443, 135, 6001-6004, 59531, 59532 (or the lab's 8080, 8443)"
                    self.refuse(line, f"server port {e.port} is none of the CAS's service ports ({ports}): "
                                "if it is no CAS (an ACME responder, a status page), drop its backend; if it "
                                "is, give its service port or use {{ cas_servers }}")  # fmt: skip
                    continue
                if e.port is None and not place.same_ports():
                    self.refuse(line, "a server without a port, while the CAS's ports differ from the VIP's")
                    continue
                entries.append((line, line.args[0], e))
            if entries:
                pools.append((pool, entries))
        if not pools:
            return
        name_sets = {frozenset(name for _l, name, _e in entries) for _p, entries in pools}
        by_name = len(name_sets) == 1
        if by_name:
            names = list(dict.fromkeys(name for _p, entries in pools for _l, name, _e in entries))
            if len(names) != n:
                first = pools[0][1][0][0]
                why = f"the backends name {len(names)} servers ({', '.join(names)}), the farm has {n} CAS"
                self.refuse(first, f"{why}: set [farm] servers = {len(names)}, or list one server per CAS")
                return
            cas_of = {name: place.servers[k] for k, name in enumerate(names)}
        else:
            counts = {len(entries) for _p, entries in pools}
            hint = f"set [farm] servers = {counts.pop()}, or " if len(counts) == 1 else ""
            for pool, entries in pools:
                if len(entries) != n:
                    where = ", ".join(str(self.line_of(line.index)) for line, _n, _e in entries)
                    why = (
                        f"{pool.kind} {pool.name} lists {len(entries)} servers (lines {where}), the farm has"
                    )
                    why += f" {n} CAS"
                    todo = (
                        "list one server per CAS in every backend (or the same server names in every backend)"
                    )
                    self.refuse(pool.header, f"{why}: {hint}{todo}")
            if self.problems:
                return
        for pool, entries in pools:
            for i, (line, name, e) in enumerate(entries):
                cas = by_host.get(e.host) or (cas_of[name] if by_name else place.servers[i])
                self.servers[line.index] = cas
                self.mappings.append(
                    ServerMapping(pool.name, name, cas.name, self.source.name, self.line_of(line.index))
                )

    def _plan_binds(self) -> None:
        """Each bind line -> the VIP addresses it becomes (rule 2, 3), refusing what cannot be placed."""
        place = self.place
        lab = place.listen_addresses()
        claimed: dict[tuple[str, int], Line] = {}
        for section in layout.listeners(self.sections):
            stats = layout.is_stats(section)
            mine: set[tuple[str, int]] = set()
            for line in section.all("bind"):
                if not line.args:
                    continue
                endpoints = layout.bind_endpoints(line.args[0])
                if endpoints is None:
                    what = f"a port range of at most {layout.MAX_RANGE} ports, or an address:port list"
                    self.refuse(line, f"cannot read the listen address {line.args[0]!r} ({what})")
                    continue
                if any(e.local for e in endpoints):
                    if not all(e.local.startswith("abns@") for e in endpoints):
                        self.refuse(line, SOCKET_LISTENER)
                    continue
                targets: list[tuple[str, int]] = []
                for e in endpoints:
                    assert e.port is not None
                    if (e.host, e.port) in lab and not stats:
                        targets.append((e.host, e.port))
                        continue
                    role = "stats" if stats else PORT_ROLES.get(e.port)
                    if role is None:
                        self.refuse(line, f"port {e.port} {NO_ROLE}")
                        continue
                    if role == "stats":
                        hosts: tuple[str, ...] = (place.vip.host,)
                    elif role in ("mapi", "addressbook"):
                        hosts = place.vip_hosts((role,))
                    else:
                        hosts = place.vip_hosts(self._served(section))
                    targets += [(host, place.vip_port(role)) for host in hosts]
                targets = [t for t in dict.fromkeys(targets) if t not in mine]
                for target in targets:
                    other = claimed.get(target)
                    if other is not None:
                        at = f"VIP {target[0]}:{target[1]}, as line {self.line_of(other.index)} does already"
                        self.refuse(line, f"becomes {at}: the lab has one VIP address per service and port")
                    claimed[target] = line
                mine.update(targets)
                self.binds[line.index] = targets

    def _served(self, section: Section) -> tuple[str, ...]:
        """The HTTP services a listener sends to a backend (all of them when it routes none)."""
        if self.place.topology == "single-vip":
            return ()
        tls = any(layout.terminates_tls(b) for b in section.all("bind"))
        served = tuple(
            s
            for s in REQUESTS
            if route(
                section, request_for(s, self.place.vip.host, tls, section.mode == "http"), self.line_of
            ).pool
        )
        return served


def _named_files(line: Line) -> list[str]:
    """Files a line names that HAProxy reads (pattern files, maps, error pages, SPOE configs)."""
    texts = line.texts()
    out = [texts[i + 1] for i, text in enumerate(texts[:-1]) if text == "-f"]
    if line.keyword == "errorfile" and len(texts) > 2:
        out.append(texts[2])
    if texts[:2] == ["filter", "spoe"] and line.option("config"):
        out.append(line.option("config") or "")
    for text in texts:
        out += _FILE_CALLS.findall(text)
    return out


_FILE_CALLS = re.compile(r"\b(?:map(?:_[a-z]+)?|set-map|del-map|add-acl|del-acl)\(([^,)]+)")
