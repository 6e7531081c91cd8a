"""The reader of users' nginx configs (lab.balancers.userconfig has the contract and rules 1-7).

How each rule reads in nginx (README, "Your own balancer config"):
1. Servers: the `server` lines of each `upstream` (http and stream) become the farm's CAS; a server's
   port picks the CAS port by its role (no port: 80). A `proxy_pass` straight to a host (not an
   upstream) becomes the CAS that host became as a server of an upstream; to any other host it stays
   and is refused by the safety check.
2. Listeners: each `listen` moves to the VIP by the role of its port (`listen 443 ssl http2`,
   `listen [::]:443`, `listen 10.1.2.3:443 default_server`: the options stay), one `listen` per VIP
   address of the services its server block routes (one on single-vip). The IPv6 twin of a listener
   in the same server block is dropped (the VIP is IPv4), and `ipv6only=` with it. Server blocks that
   listen on one address share it (name-based servers); blocks on different addresses that would land
   on one VIP address are refused.
3. Stats: a server block that only shows `stub_status` is the stats listener and moves to the VIP's
   stats port. The lab counts requests per CAS from access logs: the file as run gets the lab's
   `log_format caslab_counts` and `access_log access.log` (stream: `stream.log`) at the top of `http`
   and `stream`, and again beside each `access_log` of a server or location (nginx does not inherit an
   access log into a block that names its own); `access_log off` becomes the lab's log only.
4. TLS: `ssl_certificate` / `proxy_ssl_certificate` -> the run's certificate chain, the `_key`s -> its
   key, `ssl_trusted_certificate`, `ssl_client_certificate` and `proxy_ssl_trusted_certificate` -> its
   CA, `proxy_ssl_name` -> the run certificate's name.
5. Time: keepalive_timeout, proxy_read_timeout, proxy_send_timeout, client_body_timeout, send_timeout
   and the stream's proxy_timeout are divided by the time scale; each that `http {}` or `stream {}`
   does not set itself gets nginx's default there (60 s; keepalive 75 s; proxy_timeout 10 min), scaled:
   left alone it would be 60 real seconds, hours of Exchange time (measured: with client_body_timeout
   1s, nginx closed an Outlook Anywhere IN channel idle for 3 s).
6. Run folder: `error_log` -> the balancer's output (stderr, its level kept, syslog too); `access_log`
   files keep their name in the run folder (access.log and stream.log are the lab's: yours become
   user-access.log...), a syslog access log becomes syslog-access.log; `pid` -> nginx.pid; temp and
   cache paths -> temp/; `user`, `daemon` (the lab runs nginx in the foreground), `lock_file` and
   `working_directory` are dropped. The lab adds the temp paths nginx needs and, where the file has a
   `stream` block, the stream module (Debian builds it as a module; an include of modules-enabled/*.conf
   becomes that line).
A conf.d file (what most Exchange guides give: `server` and `upstream` blocks at its top, no `http`
block, for nginx.conf's `include conf.d/*.conf;` inside `http`) is read as the inside of `http`, and runs
inside `events {}` and `http { }` the lab adds around it (said before the run and by explain).
7. Refused: `resolver` (and so host names anywhere), `proxy_pass` to a variable that no `map` turns into
   an upstream, syslog targets the lab cannot redirect, includes of globs or of files that are not
   there (read relative to the main file's folder; mime.types, proxy_params and fastcgi_params fall back
   to the lab's nginx package), files named that are not there (ssl_dhparam, ssl_crl...).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lab.balancers.userconfig import (
    PASSED_THROUGH,
    PORT_ROLES,
    Address,
    Adopted,
    AdoptedFile,
    ConfigRefused,
    ConnectionLimit,
    Lines,
    Place,
    Problem,
    Reader,
    Reading,
    Rewrite,
    ServerMapping,
    Source,
    Timeout,
    register,
)
from lab.balancers.userconfig.farm import CLIENT_PATHS, PoolServer, cas_port, map_servers, vip_for
from lab.balancers.userconfig.nginx import routes
from lab.balancers.userconfig.nginx.tree import (
    Directive,
    include_path,
    parse,
    replace_statement,
    run_name,
    statement,
    walk,
)

STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
# The top of a conf.d file: blocks and maps of nginx's http context, and none of the main context's blocks.
HTTP_ONLY_TOP = {"server", "upstream", "map", "geo", "split_clients", "log_format", "proxy_cache_path"}
MAIN_BLOCKS = {"http", "events", "stream", "mail"}
SNIPPET_NOTE = (
    "{name} has {blocks} at its top and no `http` block: a conf.d file, read as the inside of nginx.conf's "
    "`http {{ }}`, and run inside the `events {{}}` and `http {{ }}` the lab adds around it"
)
COUNTS = "caslab_counts"  # the lab's log format for counters (lab.balancers.drivers.nginx reads these logs)
HTTP_LOG = '"$upstream_addr" "$upstream_bytes_received" $status "$request_method $uri" $remote_addr'
STREAM_LOG = '"$upstream_addr" "$upstream_bytes_received" $status $remote_addr'
LAB_LOGS = {"http": "access.log", "stream": "stream.log"}
TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
TLS_FILES = {
    "ssl_certificate": "server_cert",
    "ssl_certificate_key": "server_key",
    "ssl_trusted_certificate": "ca_pem",
    "ssl_client_certificate": "ca_pem",
    "proxy_ssl_certificate": "server_cert",
    "proxy_ssl_certificate_key": "server_key",
    "proxy_ssl_trusted_certificate": "ca_pem",
}
FILES_NAMED = (
    "ssl_dhparam",
    "ssl_crl",
    "proxy_ssl_crl",
    "ssl_session_ticket_key",
    "ssl_password_file",
    "proxy_ssl_password_file",
    "auth_basic_user_file",
    "ssl_stapling_file",
)
IDLE_TIMEOUTS = (
    "keepalive_timeout",
    "proxy_read_timeout",
    "proxy_send_timeout",
    "client_body_timeout",
    "send_timeout",
    "proxy_timeout",
)
# nginx's own values of the idle timeouts above where a file sets none (its documentation): Exchange time
# like any other, so the file as run gets them scaled (rule 5), and explain shows them.
DEFAULT_TIMEOUTS = {
    "http": {
        "keepalive_timeout": 75.0,
        "proxy_read_timeout": 60.0,
        "proxy_send_timeout": 60.0,
        "client_body_timeout": 60.0,
        "send_timeout": 60.0,
    },
    "stream": {"proxy_timeout": 600.0},
}
DROPPED = {
    "user": "the lab runs nginx as itself",
    "daemon": "the lab runs nginx in the foreground",
    "lock_file": "no lock file",
    "working_directory": "the run folder is nginx's folder",
}
PASSES = ("proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass", "memcached_pass")
# Directives that reach a host by name: refused (rule 7), as is a syslog target.
REMOTE = ("ssl_stapling_responder", "ssl_ocsp_responder", "auth_http", "zone_sync_server")
WILD = {"", "*", "0.0.0.0", "[::]", "::"}


@dataclass
class _File:
    """One file of the user's config, parsed, with the edits the rules make to it."""

    source: Source
    directives: list[Directive]
    name: str  # as run
    edits: dict[int, list[tuple[Directive, str, str]]] = field(
        default_factory=dict
    )  # index -> (d, new, rule)
    added: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # after index (-1: first) -> lines

    def edit(self, d: Directive, new: str, rule: str) -> None:
        self.edits.setdefault(d.index, []).append((d, new, rule))

    def add(self, after: int, text: str, rule: str) -> None:
        self.added.setdefault(after, []).append((text, rule))

    def opening(self, d: Directive) -> int:
        """The line index of the `{` that opens block directive `d`."""
        lines = self.source.text.splitlines()
        return next((i for i in range(d.index, len(lines)) if "{" in lines[i]), d.index)


@dataclass
class _Config:
    """A user's nginx config: its files (main first) and what the rules read from all of them."""

    files: list[_File]
    by_name: dict[str, _File]
    includes: dict[int, _File]  # id(include directive) -> the file it reads
    snippet: bool = False  # the main file is a conf.d file: the inside of `http` (see the docstring)

    def included(self, d: Directive) -> list[Directive] | None:
        f = self.includes.get(id(d))
        return f.directives if f else None

    def all(self) -> list[Directive]:
        return list(walk(self.files[0].directives, self.included))

    def file_of(self, d: Directive) -> _File:
        return self.by_name[d.file]


def _parse_address(word: str, default_port: int | None = 80) -> tuple[str, int | None] | None:
    """(host, port) of `host:port`, `[v6]:port`, `port`, `host`; None for unix sockets and variables."""
    if word.startswith("unix:") or "$" in word:
        return None
    if word.startswith("["):
        host, _, rest = word[1:].partition("]")
        return f"[{host}]", int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    if word.isdigit():
        return "", int(word)
    host, sep, port = word.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return word, default_port


def _url_host(url: str) -> tuple[str, str, int | None, str]:
    """scheme, host, port, rest of a proxy_pass URL (`https://10.0.0.11:443/owa` -> https, 10.0.0.11, 443,
    /owa); the scheme is "" for a stream proxy_pass (`host:port`)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority, slash, path = rest.partition("/")
    default = 443 if scheme == "https" else 80 if scheme else None
    parsed = _parse_address(authority, default)
    host, port = parsed if parsed else (authority, None)
    return scheme, host, port, (slash + path)


@register
class NginxReader(Reader):
    driver = "nginx"
    label = "nginx"
    main_file = "nginx.conf"

    # -- reading ---------------------------------------------------------------------------------------

    def _load(self, source: Source, place: Place) -> _Config:
        """The main file and every file it includes, parsed; includes refused by the rule (tree)."""
        directives = parse(source.text, source.name)
        snippet = _is_conf_d(directives)
        if snippet:
            _refuse_stream_snippet(source, directives)
            directives = parse(source.text, source.name, ("http",))
        main = _File(source, directives, self.main_file)
        config = _Config([main], {source.name: main}, {}, snippet)
        taken = {self.main_file, "access.log", "stream.log", "nginx.pid", "nginx.log"}
        base = source.path.parent
        seen = {source.path.resolve()}

        def included(d: Directive) -> list[Directive] | None:
            if id(d) in config.includes:
                return config.includes[id(d)].directives
            f = config.file_of(d)
            word = d.args[0] if d.args else ""
            line = f.source.line_of(d.index)
            if _is_modules_glob(word):
                return None  # becomes the lab's load_module line (rewrite)
            path = include_path(word, base, f.source.name, line, d.text)
            if path.resolve() in seen:
                raise ConfigRefused([Problem(f.source.name, line, f"include {word} includes itself", d.text)])
            seen.add(path.resolve())
            inner_source = self.open(path, place, word)
            inner = _File(inner_source, parse(inner_source.text, word, d.context), run_name(word, taken))
            config.files.append(inner)
            config.by_name[word] = inner
            config.includes[id(d)] = inner
            return inner.directives

        for _ in walk(main.directives, included):
            pass
        return config

    # -- rewriting -------------------------------------------------------------------------------------

    def rewrite(self, source: Source, place: Place) -> Adopted:
        config = self._load(source, place)
        directives = config.all()
        problems: list[Problem] = []
        upstreams = {d.args[0]: d for d in directives if d.name == "upstream" and d.args}
        maps = {d.args[1]: d for d in directives if d.name == "map" and len(d.args) > 1}

        def where(d: Directive) -> tuple[str, int, str]:
            f = config.file_of(d)
            return f.source.name, f.source.line_of(d.index), d.text

        # Rule 1: servers.
        pool_servers: dict[int, PoolServer] = {}
        for up in upstreams.values():
            for s in up.all("server"):
                address = _parse_address(s.args[0]) if s.args else None
                if address is None:
                    continue
                file, line, text = where(s)
                pool_servers[id(s)] = PoolServer(
                    up.args[0], s.args[0], address[0], address[1], file, line, text
                )
        mapping, found = map_servers(list(pool_servers.values()), place)
        problems += found
        host_cas = {ps.host: cas for ps, cas in mapping.items()}
        mappings = []
        for up in upstreams.values():
            for s in up.all("server"):
                ps = pool_servers.get(id(s))
                if ps is None or ps not in mapping:
                    continue
                cas = mapping[ps]
                port = cas_port(cas, ps.port)
                if port is None:
                    problems.append(
                        Problem(
                            ps.file, ps.line, f"server port {ps.port} has no role ({_roles_hint()})", ps.text
                        )
                    )
                    continue
                new = statement("server", [f"{cas.host}:{port}", *s.args[1:]])
                config.file_of(s).edit(s, new, f"server -> {cas.name}")
                mappings.append(ServerMapping(up.args[0], s.args[0], cas.name, ps.file, ps.line))

        # proxy_pass straight to a host that is a server of an upstream.
        for d in directives:
            if d.name != "proxy_pass" or not d.args or "$" in d.args[0]:
                continue
            scheme, host, port, rest = _url_host(d.args[0])
            if host in upstreams or f"{host}:{port}" in upstreams:
                continue
            cas = host_cas.get(host)
            if cas is None:
                continue  # left as written: the safety check refuses it with its line
            cport = cas_port(cas, port)
            if cport is None:
                problems.append(Problem(*where(d)[:2], f"proxy_pass port {port} has no role", d.text))
                continue
            url = f"{scheme}://{cas.host}:{cport}{rest}" if scheme else f"{cas.host}:{cport}"
            config.file_of(d).edit(d, statement("proxy_pass", [url]), f"proxy_pass to a server -> {cas.name}")

        # Rule 2 and 3: listeners.
        listeners, tls, tls_reason = self._listeners(config, directives, upstreams, maps, place, problems)

        # Rules 3-7, directive by directive.
        has_stream = any(d.name == "stream" for d in directives)
        stream_loaded = False
        for d in directives:
            f = config.file_of(d)
            file, line, text = where(d)
            top = not d.context
            if top and d.name in DROPPED:
                f.edit(d, "", DROPPED[d.name])
            elif top and d.name == "pid":
                f.edit(d, "pid nginx.pid;", "pid file in the run folder")
            elif d.name == "load_module" and d.args and d.args[0].endswith("ngx_stream_module.so"):
                stream_loaded = True
                if d.args[0] != STREAM_MODULE:
                    f.edit(d, statement("load_module", [STREAM_MODULE]), "the lab's stream module")
            elif d.name == "include" and d.args and _is_modules_glob(d.args[0]):
                new = statement("load_module", [STREAM_MODULE]) if has_stream and not stream_loaded else ""
                stream_loaded = stream_loaded or bool(new)
                f.edit(d, new, "modules: the lab's nginx modules")
            elif d.name == "include" and id(d) in config.includes:
                f.edit(d, statement("include", [config.includes[id(d)].name]), "the included file as run")
            elif d.name == "error_log":
                level = [a for a in d.args[1:2] if not a.startswith("syslog:")]
                f.edit(d, statement("error_log", ["stderr", *level]), "errors to the balancer's output")
            elif d.name == "access_log":
                self._access_log(f, d)
            elif d.name.endswith("_temp_path") and d.name[: -len("_temp_path")] in TEMP_KINDS and d.args:
                kind = d.name[: -len("_temp_path")]
                f.edit(d, statement(d.name, [f"temp/{kind}", *d.args[1:]]), "temp files in the run folder")
            elif d.name == "proxy_cache_path" and d.args:
                name = Path(d.args[0]).name or "cache"
                f.edit(d, statement(d.name, [f"temp/cache-{name}", *d.args[1:]]), "cache in the run folder")
            elif d.name in TLS_FILES:
                path = str(getattr(place.tls_files, TLS_FILES[d.name]))
                f.edit(d, statement(d.name, [path]), f"TLS: the run's {TLS_FILES[d.name].replace('_', ' ')}")
            elif d.name == "proxy_ssl_name":
                f.edit(d, statement(d.name, [place.tls_files.server_name]), "TLS: the run certificate's name")
            elif d.name in FILES_NAMED and d.args:
                path = Path(d.args[0])
                if not (path.is_absolute() and path.is_file()):
                    problems.append(
                        Problem(
                            file,
                            line,
                            f"{d.name}: {d.args[0]} is not there (give an "
                            "absolute path to a file that is, or drop the line)",
                            text,
                        )
                    )
            elif d.name in IDLE_TIMEOUTS and d.args and place.time_scale != 1:
                values = [routes.seconds(a) for a in d.args]
                if all(v is not None for v in values):
                    new = [routes.duration(v / place.time_scale) for v in values if v is not None]
                    f.edit(d, statement(d.name, new), f"Exchange time / time_scale {place.time_scale:g}")
        self._added(config, directives, has_stream and not stream_loaded, place.time_scale)
        if config.snippet:
            main = config.files[0]
            main.add(len(main.source.text.splitlines()) - 1, "}", "a conf.d file: the end of http { }")
        if problems:
            raise ConfigRefused(problems, f"{source.name} cannot be put into the lab as written")
        adopted_files, rewrites = [], []
        for f in config.files:
            af, rw = _apply(f)
            adopted_files.append(af)
            rewrites += rw
        return Adopted(
            self.driver,
            tuple(adopted_files),
            tuple(rewrites),
            tuple(mappings),
            tuple(sorted(listeners)),
            tls,
            tls_reason,
        )

    def _access_log(self, f: _File, d: Directive) -> None:
        kind = "stream" if "stream" in d.context else "http"
        lab_log = statement("access_log", [LAB_LOGS[kind], COUNTS])
        if d.args[:1] == ["off"]:
            f.edit(d, lab_log, "counters: the lab's access log only")
            return
        target = d.args[0] if d.args else ""
        if target.startswith("syslog:"):
            name = "syslog-access.log"
        else:
            name = Path(target).name or "user.log"
            if name in (*LAB_LOGS.values(), "nginx.log"):
                name = f"user-{name}"
        f.edit(d, statement("access_log", [name, *d.args[1:]]), "access log in the run folder")
        if len(d.context) > 1:  # nginx does not inherit the lab's log into a block that names its own
            f.add(d.index, _indent(f, d) + lab_log, "counters: the lab's access log here too")

    def _added(
        self, config: _Config, directives: list[Directive], load_stream: bool, time_scale: float
    ) -> None:
        main = config.files[0]
        if load_stream:
            main.add(
                -1, statement("load_module", [STREAM_MODULE]), "the stream module (Debian builds it apart)"
            )
        blocks: list[tuple[_File, int, str, str, set[str]]] = []  # (file, after line, indent, kind, set)
        if config.snippet:
            main.add(-1, "events {}", "a conf.d file: nginx.conf's events { } around it")
            main.add(-1, "http {", "a conf.d file: nginx.conf's http { } around it")
            top = {d.name for d in main.directives}
            blocks.append((main, -1, "    ", "http", top))
        for d in directives:
            if d.name in ("http", "stream") and not d.context:
                f = config.file_of(d)
                blocks.append(
                    (f, f.opening(d), _indent(f, d) + "    ", d.name, {x.name for x in d.block or ()})
                )
        for f, at, pad, kind, have in blocks:
            log = HTTP_LOG if kind == "http" else STREAM_LOG
            f.add(at, f"{pad}log_format {COUNTS} '{log}';", "counters: the lab's log format")
            f.add(
                at,
                pad + statement("access_log", [LAB_LOGS[kind], COUNTS]),
                "counters: the lab's access log",
            )
            if kind == "http":
                for temp in TEMP_KINDS:
                    if f"{temp}_temp_path" not in have:
                        f.add(at, f"{pad}{temp}_temp_path temp/{temp};", "temp files in the run folder")
            if time_scale != 1:  # rule 5 for what the file leaves to nginx: its defaults are Exchange time
                for name, default in DEFAULT_TIMEOUTS[kind].items():
                    if name not in have:
                        f.add(
                            at,
                            pad + statement(name, [routes.duration(default / time_scale)]),
                            f"nginx's default {name} {routes.duration(default)}, which the file does not "
                            f"set: Exchange time / time_scale {time_scale:g}",
                        )

    def _listeners(
        self,
        config: _Config,
        directives: list[Directive],
        upstreams: dict[str, Directive],
        maps: dict[str, Directive],
        place: Place,
        problems: list[Problem],
    ) -> tuple[set[tuple[str, int]], str, str]:
        """Rule 2 (and 3 for stub_status servers) on every `listen`; the listeners as run and the TLS
        mode the file amounts to."""
        landed: dict[tuple[str, int], tuple[str, int, str]] = {}  # VIP address -> written key, line
        listeners: set[tuple[str, int]] = set()
        https_ends, https_plain, bridge = None, None, None
        for server in _servers(directives):
            stream = server.context[-1] == "stream"
            stats = _is_stats(server)
            services = () if stream or stats else self._served(server, upstreams, maps)
            mine: set[tuple[str, int]] = set()
            for d in server.all("listen"):
                f = config.file_of(d)
                line = f.source.line_of(d.index)
                address = _parse_address(d.args[0]) if d.args else None
                if address is None:
                    continue  # a unix socket: the safety check reads it
                host, port = address
                role = "stats" if stats else PORT_ROLES.get(port)
                if role is None or (role == "stats" and not stats):
                    problems.append(
                        Problem(
                            f.source.name,
                            line,
                            f"listen on port {port}, a port of no role ({_roles_hint()})",
                            d.text,
                        )
                    )
                    continue
                vips = vip_for(place, role, services)
                params = [
                    a for a in d.args[1:] if not (a.startswith("ipv6only=") and not host.startswith("["))
                ]
                if host.startswith("["):
                    params = [a for a in d.args[1:] if not a.startswith("ipv6only=")]
                if all(v in mine for v in vips):
                    f.edit(d, "", "the IPv6 twin of a listener of this server (the VIP is IPv4)")
                    continue
                written = ("*" if host in WILD else host.strip("[]"), port)
                for v in vips:
                    other = landed.get(v)
                    if other is not None and other[0] != written:
                        problems.append(
                            Problem(
                                f.source.name,
                                line,
                                f"listen {written[0]}:{port} would land on "
                                f"{v[0]}:{v[1]} like line {other[1]} ({other[2]}): two listeners "
                                "on one VIP address",
                                d.text,
                            )
                        )
                    landed.setdefault(v, (written, line, d.text))
                mine.update(vips)
                listeners.update(vips)
                pad = "\n" + _indent(f, d)
                new = pad.join(statement("listen", [f"{h}:{p}", *params]) for h, p in vips)
                f.edit(d, new, f"listener -> VIP {role}")
                if role == "https":
                    ends = "ssl" in d.args[1:] or (
                        server.first("ssl") is not None and server.first("ssl").args == ["on"]
                    )
                    if ends and https_ends is None:
                        https_ends = f"line {line} ends TLS ({d.text})"
                    elif not ends and stream and https_plain is None:
                        https_plain = f"line {line} forwards TLS as TCP ({d.text})"
            if not stream and not stats:
                for loc in walk(server.all("location")):
                    p = loc.first("proxy_pass") if loc.name == "location" else None
                    if p is not None and p.args and p.args[0].startswith("https://") and bridge is None:
                        at = config.file_of(p).source.line_of(p.index)
                        bridge = f"line {at} speaks TLS to the CAS ({p.text})"
        if https_ends:
            return (
                listeners,
                ("bridge" if bridge else "offload"),
                https_ends + (f"; {bridge}" if bridge else ""),
            )
        if https_plain:
            return listeners, "passthrough", https_plain
        return listeners, "none", "no listener on an HTTPS port ends TLS: the clients speak plain HTTP"

    def _served(
        self, server: Directive, upstreams: dict[str, Directive], maps: dict[str, Directive]
    ) -> list[str]:
        """The HTTP services a server block sends to an upstream (by the paths the lab's clients send)."""
        out = []
        for service, path in CLIENT_PATHS.items():
            location, _ = routes.location_for(server, path)
            if routes.target(location, upstreams, maps).upstream is not None:
                out.append(service)
        return out

    # -- the safety check's reading --------------------------------------------------------------------

    def addresses(self, files: dict[str, str]) -> list[Address]:
        parsed = {name: parse(text, name) for name, text in files.items()}
        main = next(iter(parsed))

        def included(d: Directive) -> list[Directive] | None:
            return parsed.get(d.args[0]) if d.args else None

        directives = list(walk(parsed[main], included))
        upstreams = {d.args[0] for d in directives if d.name == "upstream" and d.args}
        maps = {d.args[1]: d for d in directives if d.name == "map" and len(d.args) > 1}
        lines = {name: text.splitlines() for name, text in files.items()}
        out = []

        def add(d: Directive, kind: str, what: str, host: str, port: int | None) -> None:
            text = lines[d.file][d.index] if d.index < len(lines[d.file]) else d.text
            out.append(Address(d.file, d.index + 1, kind, what, host, port, text))

        for d in directives:
            if not d.args:
                continue
            word = d.args[0]
            if d.name == "listen":
                if word.startswith("unix:"):
                    add(d, "unix", "listen", word[5:], None)
                else:
                    host, port = _parse_address(word) or ("", None)
                    add(d, "listen", "listen", host.strip("[]") if host not in WILD else host, port)
            elif d.name == "server" and d.parent is not None and d.parent.name == "upstream":
                if word.startswith("unix:"):
                    add(d, "unix", "server", word[5:], None)
                else:
                    host, port = _parse_address(word) or (word, None)
                    add(d, "connect", "server", host, port)
            elif d.name in PASSES:
                _scheme, host, port, _ = _url_host(word)
                if host.startswith("unix:"):
                    add(d, "unix", d.name, host[5:], None)
                elif "$" in host:
                    m = maps.get(host)
                    values = [x.args[0] if x.args else x.name for x in (m.block or [])] if m else []
                    if not m or any(v not in upstreams for v in values):
                        add(d, "name", d.name, word, None)  # its value could be any address
                elif host not in upstreams and f"{host}:{port}" not in upstreams:
                    add(d, "connect", d.name, host, port)
            elif d.name == "resolver":
                add(d, "name", "resolver", " ".join(d.args), None)
            elif d.name in REMOTE or (d.name in ("error_log", "access_log") and word.startswith("syslog:")):
                add(d, "name", d.name, word, None)
        return out

    # -- explaining ------------------------------------------------------------------------------------

    def readings(self, source: Source, place: Place) -> list[Reading]:
        config = self._load(source, place)
        directives = config.all()
        upstreams = {d.args[0]: d for d in directives if d.name == "upstream" and d.args}
        maps = {d.args[1]: d for d in directives if d.name == "map" and len(d.args) > 1}
        servers = [s for s in _servers(directives) if not _is_stats(s)]
        web = [s for s in servers if s.context[-1] == "http"]
        tcp = [s for s in servers if s.context[-1] == "stream"]

        def line(d: Directive) -> int:
            return config.file_of(d).source.line_of(d.index)

        front, role, listening = _web_front(web)
        notes = []
        sharing = [s for s in web if id(s) in listening]
        if front is not None and len(sharing) > 1 and any(s.first("server_name") for s in sharing):
            names = front.first("server_name")
            shown = f" ({names.text}, line {line(names)})" if names else ""
            notes.append(
                f"the lab's clients send the VIP's address as Host: they reach the default {role} "
                f"server (line {line(front)}){shown}, whatever the other server_name lines say"
            )
        # Layer 4: no http server on the web ports, a stream server there passes TLS (or HTTP) through.
        passed = None if front is not None else _stream_server(tcp, "https") or _stream_server(tcp, "http")
        out = []
        for service, path in CLIENT_PATHS.items():
            if passed is not None:
                out.append(self._stream_reading(service, passed, upstreams, maps, line, passthrough=True))
                continue
            if front is None:
                out.append(Reading(service, None, f"no server listens on an {role.upper()} port", None, ""))
                continue
            location, unknown = routes.location_for(front, path)
            t = routes.target(location, upstreams, maps)
            out.append(
                self._reading(
                    service, t, upstreams, maps, location or front, [*notes, *unknown, *t.unknown], line
                )
            )
        for service in ("mapi", "addressbook"):
            server = _stream_server(tcp, service)
            if server is None:
                out.append(Reading(service, None, f"no stream server listens on a {service} port", None, ""))
                continue
            out.append(self._stream_reading(service, server, upstreams, maps, line))
        return out

    def _stream_reading(
        self,
        service: str,
        server: Directive,
        upstreams: dict[str, Directive],
        maps: dict[str, Directive],
        line,
        passthrough: bool = False,
    ) -> Reading:
        """A service behind a stream server (MAPI, Address Book; every web service when the web port's
        server is a stream one: `passthrough`, placed per connection)."""
        proxy = server.first("proxy_pass")
        name = proxy.args[0] if proxy and proxy.args else ""
        how = f"stream server (line {line(server)}): proxy_pass {name}"
        how += f": {PASSED_THROUGH}" if passthrough else ""
        t = routes.Target(name if name in upstreams else None, how, server)
        reading = self._reading(service, t, upstreams, maps, server, [], line)
        return dataclasses.replace(reading, tcp=True) if passthrough else reading

    def notes(self, source: Source, place: Place) -> list[str]:
        """Outlook Anywhere's location when it cannot carry RPC/HTTP channels: each channel is one request
        that declares about 1 GB (RPC_IN_DATA) and streams calls for as long as Outlook runs. nginx
        refuses such a body over `client_max_body_size` (1m by default) with 413; with
        `proxy_request_buffering on` (the default) it reads the whole body before it passes anything on,
        and with `proxy_buffering on` (the default) it holds the answer's pieces; the lab's own config
        sets all three (lab/balancers/drivers/nginx.py)."""
        config = self._load(source, place)
        web = [s for s in _servers(config.all()) if not _is_stats(s) and s.context[-1] == "http"]
        front, _role, _listening = _web_front(web)
        blocks = ", ".join(
            f"`{n}`" for n in sorted({d.name for d in config.files[0].directives} & HTTP_ONLY_TOP)
        )
        read_as = [SNIPPET_NOTE.format(name=source.name, blocks=blocks)] if config.snippet else []
        if front is None:
            return read_as
        location, _unknown = routes.location_for(front, CLIENT_PATHS["rpchttp"])
        scope = location or front
        line = config.file_of(scope).source.line_of(scope.index)
        where = f"{'location' if location else 'server'} of line {line}"
        out = read_as
        size = scope.inherited("client_max_body_size")
        size_word = size.args[0] if size and size.args else "1m"
        if size_word != "0" and _bytes(size_word) < RPC_IN_DATA_BYTES:
            out.append(
                f"Outlook Anywhere's {where}: client_max_body_size {size_word} is below the ~1 GB an "
                "RPC_IN_DATA channel declares, so nginx answers 413 and no Outlook Anywhere connection "
                "opens (client_max_body_size 0 lifts it)"
            )
        for directive, what in (
            ("proxy_request_buffering", "reads a whole RPC_IN_DATA channel before passing it on and no "
             "call reaches the CAS"),
            ("proxy_buffering", "keeps what the CAS sends down RPC_OUT_DATA in its buffer and Outlook "
             "never sees its connection open (measured: no virtual connection joined)"),
        ):  # fmt: skip
            d = scope.inherited(directive)
            if not (d and d.args and d.args[0] == "off"):
                out.append(
                    f"Outlook Anywhere's {where}: {directive} is on, so nginx {what}; {directive} off "
                    "streams it"
                )
        return out

    def connection_limit(self, source: Source, place: Place) -> ConnectionLimit:
        """nginx's worker processes (`worker_processes`: 1 when unset, `auto` one per core here) and the
        connections each may hold (`worker_connections` in `events`: 512 when unset), as the file sets
        them: the lab runs both as written."""
        config = self._load(source, place)
        directives = config.all()

        def setting(name: str, context: tuple[str, ...]) -> tuple[str, str]:
            """(the directive's word or "", where it is: its line or nginx's default)."""
            d = next((d for d in directives if d.name == name and d.context == context and d.args), None)
            if d is None:
                return "", "nginx's default"
            return d.args[0], f"line {config.file_of(d).source.line_of(d.index)}"

        word, where = setting("worker_processes", ())
        cores = len(os.sched_getaffinity(0))
        processes = cores if word == "auto" else _count(word, 1)
        per_core = f" (one per core here: {cores})" if word == "auto" else ""
        processes_words = f"worker_processes {word or processes}{per_core} ({where})"
        word, where = setting("worker_connections", ("events",))
        per_process = _count(word, 512)
        connections_words = f"worker_connections {word or per_process} ({where})"
        return ConnectionLimit(processes, per_process, f"{processes_words}, {connections_words}")

    def _reading(
        self,
        service: str,
        t: routes.Target,
        upstreams: dict[str, Directive],
        maps: dict[str, Directive],
        scope: Directive,
        unread: list[str],
        line,
    ) -> Reading:
        timeouts = []
        defaults = DEFAULT_TIMEOUTS["stream" if "stream" in (*scope.context, scope.name) else "http"]
        for name in IDLE_TIMEOUTS:
            d = scope.inherited(name)
            if d is not None and d.args and (value := routes.seconds(d.args[0])) is not None:
                timeouts.append(Timeout(name, value, line(d)))
            elif d is None and name in defaults:
                timeouts.append(Timeout(f"{name} (nginx's default)", defaults[name], 0))
        if t.upstream is None:
            return Reading(service, None, t.how, None, "", tuple(timeouts), tuple(unread))
        method, words, rule, more = routes.persistence(upstreams[t.upstream], maps, t.via_map, t.location)
        return Reading(
            service, t.upstream, t.how, method, words, tuple(timeouts), tuple([*unread, *more]), rule
        )

    def server_lines(self, place: Place, role: str = "http", options: str = "") -> str:
        tail = f" {options}" if options else ""
        return "\n".join(f"server {c.host}:{Place.cas_port(c, role)}{tail};" for c in place.servers)


RPC_IN_DATA_BYTES = 1 << 30  # the Content-Length Outlook declares for an IN channel, as the lab's clients do
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _count(word: str, default: int) -> int:
    """A positive count as nginx writes it, or `default` for anything else (nginx itself refuses it)."""
    return int(word) if word.isdigit() and int(word) > 0 else default


def _bytes(size: str) -> int:
    """nginx's size syntax (`1m`, `512k`, `2g`, `1024`) in bytes; 0 for what is not one."""
    match = re.fullmatch(r"(\d+)([kmg]?)", size.lower())
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)] if match else 0


def _ports(group: list[Directive], role: str) -> dict[int, int]:
    """id() of each server block of `group` that listens on a port of `role` -> that port."""
    out = {}
    for s in group:
        for d in s.all("listen"):
            address = _parse_address(d.args[0]) if d.args else None
            if address and PORT_ROLES.get(address[1]) == role:
                out[id(s)] = address[1]
    return out


def _stream_server(tcp: list[Directive], role: str) -> Directive | None:
    """The first stream server block listening on a port of `role`."""
    owners = _ports(tcp, role)
    return next((s for s in tcp if id(s) in owners), None)


def _web_front(web: list[Directive]) -> tuple[Directive | None, str, dict[int, int]]:
    """The http server block the lab's clients reach (the default server of the HTTPS port when there is
    one, else of the HTTP port), its role, and the blocks listening on that role's ports."""
    https = _ports(web, "https")
    listening = https or _ports(web, "http")
    return routes.default_server(web, listening), "https" if https else "http", listening


def _servers(directives: list[Directive]) -> list[Directive]:
    """The server blocks of http and stream."""
    return [
        d
        for d in directives
        if d.name == "server" and d.block is not None and d.context[-1:] in (("http",), ("stream",))
    ]


def _is_stats(server: Directive) -> bool:
    """A server block that shows stub_status (or the nginx Plus api) and proxies nothing."""
    inner = list(walk(server.block or []))
    shows = any(d.name in ("stub_status", "api") for d in inner)
    return shows and not any(d.name in PASSES for d in inner)


def _is_conf_d(top: list[Directive]) -> bool:
    """Whether a main file is a conf.d file: blocks of the http context at its top, no main-context block."""
    names = {d.name for d in top}
    return bool(names & HTTP_ONLY_TOP) and not names & MAIN_BLOCKS


def _refuse_stream_snippet(source: Source, top: list[Directive]) -> None:
    """ConfigRefused for a conf.d file of the stream context (TCP proxying: a server that passes to a
    host without a scheme and has no location), which the lab would otherwise read as http."""
    for server in (d for d in top if d.name == "server" and d.block is not None):
        proxy = server.first("proxy_pass")
        if proxy is not None and proxy.args and "://" not in proxy.args[0] and not server.all("location"):
            raise ConfigRefused(
                [
                    Problem(
                        source.name,
                        source.line_of(server.index),
                        "a `server` that proxies TCP (proxy_pass without a scheme, no location) at the "
                        "top of a file with no `stream` block: the lab reads such a file as the inside of "
                        "`http`; put it inside `stream { }` in your main nginx.conf and give that",
                        server.text,
                    )
                ],
                f"{source.name} is a stream conf.d file",
            )


def _is_modules_glob(word: str) -> bool:
    return bool(re.search(r"modules-enabled/\*(\.conf)?$", word))


def _indent(f: _File, d: Directive) -> str:
    lines = f.source.text.splitlines()
    text = lines[d.index] if d.index < len(lines) else ""
    return text[: len(text) - len(text.lstrip())]


def _roles_hint() -> str:
    return "80, 443, 135, 6001-6004, 59531, 59532 or the lab's own ports"


def _apply(f: _File) -> tuple[AdoptedFile, list[Rewrite]]:
    """The file as run: each line with its edits applied, the lab's lines added after theirs."""
    out = Lines(f.source)
    written = f.source.written.splitlines()
    for text, rule in f.added.get(-1, []):
        out.put(text, 0)
        out.note(0, "", text, rule)
    for index, text in enumerate(out.lines):
        edits = sorted(f.edits.get(index, []), key=lambda e: -e[0].occurrence)
        if edits:
            new = text
            for d, statement_text, _rule in edits:
                replaced = replace_statement(new, d, statement_text)
                if replaced is None:  # the statement spans lines: replace the whole line
                    replaced = _indent(f, d) + statement_text
                new = replaced
            if new == text:  # already the lab's (a config the lab rendered, a placeholder's line)
                out.keep(index)
                for added, rule in f.added.get(index, []):
                    out.put(added, 0)
                    out.note(0, "", added, rule)
                continue
            origin = f.source.line_of(index)
            was = written[origin - 1] if 0 < origin <= len(written) else text
            rule = "; ".join(dict.fromkeys(r for _d, _s, r in edits))
            if new.strip() and not new.strip().startswith("#"):
                for part in new.split("\n"):
                    out.put(part, origin)
                out.note(origin, was, new, rule)
            else:
                out.note(origin, was, "", rule)
        else:
            out.keep(index)
        for added, rule in f.added.get(index, []):
            out.put(added, 0)
            out.note(0, "", added, rule)
    return out.file(f.name), out.rewrites
