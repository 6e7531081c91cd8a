"""nginx 1.22 OSS (Debian nginx-light + libnginx-mod-stream): HTTP in `http {}`, MAPI, Address Book and
TLS passthrough in `stream {}`. One upstream per pool of lab.balancers.layout.

How each method is rendered, and where its users are after their CAS failed and came back:
- none: round robin. leastconn: `least_conn`.
- source-ip: `hash $remote_addr` on the whole address (`ip_hash` keys on the first three octets only,
  so every client of one /24 would land on one CAS). A plain hash, not `consistent`: the farm's members
  are fixed (a failed CAS is skipped, not removed), and a plain hash maps an address to the same CAS in
  every upstream, whatever the port, where ketama points depend on the port: that is how MAPI and
  Address Book get one source-IP rule across both ports. Users move back.
- lb-cookie: nginx OSS has no `sticky` (Plus only), so the balancer cookie is built from parts: the
  cookie `lb_<pool>` names a CAS; a `map` sends its holder to an upstream where that CAS is primary and
  the others are `backup`; every answer sets the cookie to the CAS that answered (`$upstream_addr`), with
  Max-Age = the timeout, so it is an idle timeout. Users stay where they moved (the cookie is rewritten).
- cookie-hash NAME / header NAME: `hash $cookie_NAME` / `hash $http_name`; a source-ip fallback is a
  `map` that yields the cookie, or the address when the client sent none. Users move back.
- app-cookie is refused: nginx OSS cannot learn a cookie from the server's Set-Cookie (hashing it is not
  learning it: measured, 64 of 72 requests went to a foreign CAS). ssl-session-id is refused: the stream
  module sees the SNI and ALPN of a ClientHello, not its session ID.
nginx OSS has no active health checks (Plus only): a CAS whose probe URL fails while it still answers
(health down, drain) keeps its traffic. Only refused connections and timeouts count (`max_fails=1`,
`fail_timeout` = the probe interval x fall), and `proxy_next_upstream` retries them on another CAS, so a
dead CAS costs no errors. "Users move back" holds for requests that end: nginx clears a server's failed
mark only when a request to it completes, and RPC/HTTP channels never complete, so after a CAS returns
Outlook Anywhere users hashed to it were seen to keep going elsewhere for several seconds (and a channel
pair opened just then can split). Not yet fixed (`max_fails=0` on that pool may be the way).

Pitfalls handled: paths match in regex locations, case-insensitive, whole segments (a prefix location
`/owa` would send `/OWA/` elsewhere); request and response bodies stream (`proxy_request_buffering off`,
`proxy_buffering off`, `client_max_body_size 0`: the RPC/HTTP IN channel declares ~1 GB and would
otherwise be buffered before any CAS sees it); TLS 1.3 is enabled (1.22's default has none). One worker
process per core, as `worker_processes auto` runs nginx in production: each has an open-file limit of its
own, so nginx holds twice the connections of one process on two cores (HAProxy and Envoy are one process
whose limit, two files per proxied connection, bounds them); every listener has `reuseport`, so the
kernel deals new connections to the workers by a hash of their addresses, evenly whatever the workers'
wakeups (3,000 connections went 2,992 and 3,012 here; without it 3,011 and 2,991 in that quiet test).
Every upstream has a `zone`, so round robin, least_conn and a CAS's failed mark are shared by the
workers: round robin stays exact, and the hashes and the balancer cookie keep no state. Upstreams keep
idle connections to the CAS (`keepalive`), as HAProxy and Envoy do, except RPC/HTTP's. Counters are read
from the access logs (`$upstream_addr`: the last CAS tried is the one that answered); TCP connections are
logged, so counted, when they end.
`stub_status` (totals only) is on the VIP's stats port.

Idle timeouts (lab.model.Timeouts; unset ones stay at the long default, 3600s), and what each governs:
- client_idle: `keepalive_timeout` (a kept-alive client connection waiting for its next request; nginx's
  own default is 75 s), `client_body_timeout` (between two reads of a request body: an idle RPC_IN_DATA
  channel, which streams; measured, tests/test_balancer_idle.py) and `send_timeout` (between two writes
  to a client that does not read). A request the CAS holds (an EAS Ping, an idle RPC_OUT_DATA channel)
  has no client-side timer in nginx.
- server_idle: `proxy_read_timeout` (between two reads from the CAS: a held Ping, an idle OUT channel;
  measured),
  `proxy_send_timeout` (between two writes to a CAS that does not read) and the upstream's
  `keepalive_timeout` (an idle kept-alive connection to the CAS; nginx's own default is 60 s).
- `stream {}` (MAPI, Address Book, TLS passthrough): `proxy_timeout`, between two successive reads or
  writes on either side of the one TCP stream: the shorter of the two.
The scenario's own timeouts go into `http {}` and `stream {}`; a service's override into its location
(both sides: every directive above is allowed per location) or its stream server. nginx OSS keeps no
persistence table, so a table size is refused: its hashes keep no state, its balancer cookie is held by
the client, and `sticky learn` (a table with a zone) is nginx Plus.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

from lab.balancers import register, times
from lab.balancers.layout import Listener, Pool
from lab.balancers.process import ProcessBalancer
from lab.model import BalancerSpec, CasEndpoint, Persistence, Timeouts

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
LONG = "3600s"  # RPC/HTTP channels, EAS Ping and MAPI connections stay open for many minutes
MAX_WORKER_CONNECTIONS = 65536  # nginx allocates them all at start, about 0.4 KB each
FD_RESERVE = 64  # a worker's files besides its connections: logs, listeners, its channel to the master
# Access logs: the last entry of $upstream_addr is the CAS that answered (earlier ones were retried),
# if the last entry of $upstream_bytes_received says it sent anything.
HTTP_LOG = '"$upstream_addr" "$upstream_bytes_received" $status "$request_method $uri" $remote_addr'
STREAM_LOG = '"$upstream_addr" "$upstream_bytes_received" $status $remote_addr'


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def worker_connections() -> int:
    """Connections one worker may hold, client and CAS side both counting: as many as its open-file limit
    allows (inherited from this process, which a run raises to the hard limit), at most
    MAX_WORKER_CONNECTIONS."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if files == resource.RLIM_INFINITY:
        return MAX_WORKER_CONNECTIONS
    return max(FD_RESERVE, min(files - FD_RESERVE, MAX_WORKER_CONNECTIONS))


def idle(seconds: float | None) -> str:
    """An nginx time: whole seconds when exact, else milliseconds; the long default when None."""
    if seconds is None:
        return LONG
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{max(1, round(seconds * 1000))}ms"


def client_side(timeouts: Timeouts) -> list[str]:
    """The client-side directives of `timeouts` (none when client_idle is not set)."""
    if timeouts.client_idle_s is None:
        return []
    value = idle(timeouts.client_idle_s)
    return [f"client_body_timeout {value};", f"send_timeout {value};", f"keepalive_timeout {value};"]


def server_side(timeouts: Timeouts) -> list[str]:
    """The server-side directives of `timeouts` (none when server_idle is not set)."""
    if timeouts.server_idle_s is None:
        return []
    value = idle(timeouts.server_idle_s)
    return [f"proxy_read_timeout {value};", f"proxy_send_timeout {value};"]


def _sent_key(p: Persistence) -> str:
    """The nginx variable of the cookie (cookie-hash) or header (header) the client sends."""
    return f"$cookie_{p.name}" if p.method == "cookie-hash" else "$http_" + p.name.lower().replace("-", "_")


@register
class Nginx(ProcessBalancer):
    name = "nginx"
    methods = frozenset({"none", "leastconn", "source-ip", "lb-cookie", "cookie-hash", "header"})
    active_health_checks = False
    reasons: ClassVar[dict[str, str]] = {
        "app-cookie": "nginx OSS cannot learn a cookie from the server's Set-Cookie; hashing is not learning",
        "ssl-session-id": "nginx's stream module cannot key on the TLS session ID",
    }
    timer_slack_s = 0.3
    timer_slack_reason = (
        "nginx keeps a connection's timer when its new deadline is less than 300 ms from the old one "
        "(NGX_TIMER_LAZY_DELAY, src/event/ngx_event_timer.h), so its idle timeouts can end up to 0.3 s early"
    )
    table_reason = (
        "nginx OSS keeps no persistence table: its hashes keep no state, its balancer cookie is held by the "
        "client, and `sticky learn` (a table in a shared zone) is nginx Plus only"
    )

    def __init__(self, spec: BalancerSpec, run_dir: Path) -> None:
        super().__init__(spec, run_dir)
        self._log_offsets: dict[str, int] = {}
        self._counted: dict[str, int] = {}

    @property
    def config_path(self) -> Path:
        return self.config_dir / "nginx.conf"

    def command(self) -> list[str]:
        return [nginx_binary(), "-p", f"{self.config_dir}/", "-c", str(self.config_path), "-e", "stderr",
                "-g", "daemon off;"]  # fmt: skip

    def validate_command(self) -> list[str]:
        return [nginx_binary(), "-t", "-q", "-p", f"{self.config_dir}/", "-c", str(self.config_path),
                "-e", "stderr"]  # fmt: skip

    def version(self) -> str:
        done = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=True)
        return (done.stderr or done.stdout).strip().split("/")[-1]  # "nginx version: nginx/1.22.1"

    def start(self) -> None:
        (self.config_dir / "temp").mkdir(parents=True, exist_ok=True)
        self._log_offsets.clear()
        self._counted = {cas.name: 0 for cas in self.spec.servers}
        for log in ("access.log", "stream.log"):  # counters belong to this process only
            (self.config_dir / log).write_text("")
        super().start()

    def validate(self) -> None:
        (self.config_dir / "temp").mkdir(parents=True, exist_ok=True)
        super().validate()

    # -- rendering ------------------------------------------------------------------------------------

    def render(self) -> dict[str, str]:
        spec = self.spec
        layout = self.layout
        d = self.config_dir
        http_pools = [p for p in layout.pools if not p.tcp]
        tcp_pools = [p for p in layout.pools if p.tcp]
        everywhere = spec.timeouts.of(None)  # the scenario's own, in http {} and stream {}
        lines = [
            f"# caslab: nginx config for preset {spec.preset or '(custom)'}, topology {spec.topology}, "
            f"tls {spec.tls}",
            f"load_module {STREAM_MODULE};",
            f"worker_processes {self.processes()};  # one per core, as 'auto'",
            f"pid {d}/nginx.pid;",
            "error_log stderr warn;  # warn: 'worker_connections are not enough, reusing connections'",
            f"events {{ worker_connections {worker_connections()}; }}  # the open-file limit allows them",
            "",
            "http {",
            f"    log_format caslab '{HTTP_LOG}';",
            f"    access_log {d}/access.log caslab;",
            *(
                f"    {kind}_temp_path {d}/temp/{kind};"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
            "    client_max_body_size 0;  # RPC_IN_DATA declares a body of ~1 GB",
            "    proxy_request_buffering off;  # stream the RPC/HTTP IN channel to the CAS as it comes",
            "    proxy_buffering off;  # and the OUT channel back",
            "    proxy_http_version 1.1;",
            '    proxy_set_header Connection "";',
            "    proxy_set_header Host $http_host;",
            "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "    proxy_set_header X-Forwarded-Proto $scheme;",
            "    proxy_connect_timeout 2s;",
            f"    proxy_read_timeout {idle(everywhere.server_idle_s)};",
            f"    proxy_send_timeout {idle(everywhere.server_idle_s)};",
            f"    client_body_timeout {idle(everywhere.client_idle_s)};",
            f"    send_timeout {idle(everywhere.client_idle_s)};",
            *(f"    {line}" for line in client_side(everywhere)[2:]),  # keepalive_timeout
            "    proxy_next_upstream error timeout;  # refused or timed out: try another CAS",
            "    proxy_next_upstream_tries 3;",
            "",
            "    # The CAS that answered (the last upstream tried), for balancer cookies.",
            "    map $upstream_addr $upstream_cas {",
            *(f"        ~{re.escape(cas.host)}:\\d+$ {cas.name};" for cas in spec.servers),
            '        default "";',
            "    }",
        ]
        if spec.tls == "bridge":
            files = spec.tls_files
            lines += [
                "    proxy_ssl_verify on;",
                f"    proxy_ssl_trusted_certificate {files.ca_pem};",
                "    proxy_ssl_server_name on;",
                f"    proxy_ssl_name {files.server_name};",
                "    proxy_ssl_session_reuse on;",
            ]
        for pool in http_pools:
            lines += self._upstreams(pool)
        for listener in layout.listeners:
            if listener.kind != "tcp":
                lines += self._server(listener)
        lines += [
            "    server {",
            f"        listen {spec.vip.host}:{spec.vip.stats_port};",
            "        access_log off;",
            "        location / { stub_status; }",
            "    }",
            "}",
            "",
            "stream {",
            f"    log_format caslab '{STREAM_LOG}';",
            f"    access_log {d}/stream.log caslab;",
            "    proxy_connect_timeout 2s;",
            f"    proxy_timeout {idle(everywhere.idle_s)};",
            "    proxy_next_upstream on;",
        ]
        for pool in tcp_pools:
            lines += self._upstreams(pool)
        for listener in layout.listeners:
            if listener.kind == "tcp":
                own = listener.default.timeouts.idle_s
                lines += ["    server {", f"        listen {listener.host}:{listener.port} reuseport;",
                          *([f"        proxy_timeout {idle(own)};"] if own != everywhere.idle_s else []),
                          f"        proxy_pass {listener.default.name};", "    }"]  # fmt: skip
        lines.append("}")
        return {"nginx.conf": "\n".join(lines) + "\n"}

    def _server_line(self, pool: Pool, cas: CasEndpoint, backup: bool = False) -> str:
        h = self.spec.health
        fail_timeout = max(1, round(h.interval_s * h.fall))
        line = f"server {cas.host}:{pool.port(cas)} max_fails=1 fail_timeout={fail_timeout}s"
        return line + (" backup;" if backup else ";")

    def _upstreams(self, pool: Pool) -> list[str]:
        """The upstream of a pool, with the maps its method needs (a key with a fallback; lb-cookie's
        one upstream per CAS and its cookie)."""
        p = pool.persistence
        balance = {"leastconn": "least_conn;", "source-ip": "hash $remote_addr;"}.get(p.method)
        if p.method in ("cookie-hash", "header"):
            balance = f"hash {self._key(pool)};"
        lines = []
        if p.fallback is not None:
            primary = _sent_key(p)
            lines += _block(f"map {primary} {self._key(pool)}", ['"" $remote_addr;', f"default {primary};"])
        servers = [self._server_line(pool, cas) for cas in self.spec.servers]
        lines += self._upstream(pool, pool.name, ([balance] if balance else []) + servers)
        if p.method == "lb-cookie":
            # One upstream per CAS: that CAS first, the others as backups (used only when it fails).
            for cas in self.spec.servers:
                first = self._server_line(pool, cas)
                backups = [self._server_line(pool, o, backup=True) for o in self.spec.servers if o is not cas]
                lines += self._upstream(pool, f"{pool.name}_{cas.name}", [first, *backups])
            cookie = pool.lb_cookie
            routes = [f"{cas.name} {pool.name}_{cas.name};" for cas in self.spec.servers]
            lines += _block(f"map $cookie_{cookie} $pool_{pool.name}", [*routes, f"default {pool.name};"])
            max_age = max(1, round(p.timeout_s))
            set_cookie = f'default "{cookie}=$upstream_cas; Path=/; Max-Age={max_age}; HttpOnly";'
            lines += _block(f"map $upstream_cas $set_{cookie}", ['"" "";', set_cookie])
        return lines

    @staticmethod
    def _upstream(pool: Pool, name: str, body: list[str]) -> list[str]:
        """One upstream block. Idle connections to the CAS are kept, as HAProxy and Envoy reuse theirs,
        for server_idle when one is set; none for RPC/HTTP (a channel owns its connection and the RPC
        proxy closes it at the channel's end) or TCP."""
        keepalive = []
        if not pool.tcp and "rpchttp" not in pool.services:
            keepalive = ["keepalive 32;"]
            if pool.timeouts.server_idle_s is not None:
                keepalive.append(f"keepalive_timeout {idle(pool.timeouts.server_idle_s)};")
        return _block(f"upstream {name}", [f"zone {name} 64k;", *body, *keepalive])

    @staticmethod
    def _key(pool: Pool) -> str:
        """What a cookie-hash or header pool hashes: the client's cookie or header, or with a fallback
        the variable of the map that puts the client's address in when it sent none."""
        return f"$key_{pool.name}" if pool.persistence.fallback else _sent_key(pool.persistence)

    def _location(self, pattern: str, pool: Pool, timeouts: Timeouts) -> list[str]:
        scheme = "https" if pool.tls else "http"
        own = [f"            {line}" for line in self._own_timeouts(timeouts)]
        if pool.persistence.method == "lb-cookie":
            return [f"        location {pattern} {{",
                    f"            proxy_pass {scheme}://$pool_{pool.name};",
                    f"            add_header Set-Cookie $set_{pool.lb_cookie} always;",
                    *own, "        }"]  # fmt: skip
        return [
            f"        location {pattern} {{",
            f"            proxy_pass {scheme}://{pool.name};",
            *own,
            "        }",
        ]

    def _own_timeouts(self, timeouts: Timeouts) -> list[str]:
        """The directives of a service's timeouts where they differ from the scenario's own."""
        everywhere = self.spec.timeouts.of(None)
        lines = []
        if timeouts.client_idle_s != everywhere.client_idle_s:
            lines += client_side(timeouts)
        if timeouts.server_idle_s != everywhere.server_idle_s:
            lines += server_side(timeouts)
        return lines

    def _server(self, listener: Listener) -> list[str]:
        ssl = " ssl" if listener.kind == "https" else ""
        lines = ["    server {", f"        listen {listener.host}:{listener.port}{ssl} reuseport;"]
        if listener.kind == "https":
            files = self.spec.tls_files
            lines += [
                f"        ssl_certificate {files.server_cert};",
                f"        ssl_certificate_key {files.server_key};",
                "        ssl_protocols TLSv1.2 TLSv1.3;  # 1.22's default has no TLS 1.3",
            ]
        for route in listener.routes:
            for prefix in route.prefixes:
                # Whole path segments, any case: /owa, /OWA/..., never /owanext.
                lines += self._location(f"~* ^{re.escape(prefix)}(/|$)", route.pool, route.timeouts)
        lines += self._location("/", listener.default, listener.default.timeouts)
        return [*lines, "    }"]

    # -- running --------------------------------------------------------------------------------------

    @classmethod
    def processes(cls) -> int:
        """nginx's workers here: one per core this process may run on (what `worker_processes auto`
        gives)."""
        return len(os.sched_getaffinity(0))

    def limits_reached(self) -> list[str]:
        """Times nginx said in its log that it ran out of connections or of open files: it then refuses or
        drops connections it cannot take."""
        said = {
            "worker_connections are not enough": "its worker_connections",
            "Too many open files": "the open-file limit",
        }
        return [
            f"nginx ran out of {what} {times(count)} (its log: '{message}')"
            for message, what in said.items()
            if (count := self.log_count(message))
        ]

    def stopped(self) -> str | None:
        """Also a worker that crashed: nginx's master starts another, but the crashed one's connections
        are cut (nginx logs "worker process N exited on signal S", at alert level)."""
        ended = super().stopped()
        if ended is None and (count := self.log_count("exited on signal")):
            ended = f"an nginx worker process crashed {times(count)} (its log: 'exited on signal')"
        return ended

    def counters(self) -> dict[str, int]:
        """Requests (HTTP) and finished connections (TCP) per CAS, from the access logs, read
        incrementally."""
        by_host = {cas.host: cas.name for cas in self.spec.servers}
        if not self._counted:
            self._counted = dict.fromkeys(by_host.values(), 0)
        for log in ("access.log", "stream.log"):
            path = self.config_dir / log
            if not path.exists():
                continue
            with path.open("rb") as f:
                f.seek(self._log_offsets.get(log, 0))
                data = f.read()
            complete = data.rfind(b"\n") + 1  # a line still being written is read next time
            self._log_offsets[log] = self._log_offsets.get(log, 0) + complete
            for line in data[:complete].decode(errors="replace").splitlines():
                name = answered_by(line, by_host)
                if name:
                    self._counted[name] += 1
        return dict(sorted(self._counted.items()))


def _block(head: str, body: list[str]) -> list[str]:
    """A block at the level of `http {}` or `stream {}`: `head {`, the body indented, `}`."""
    return [f"    {head} {{", *(f"        {line}" for line in body), "    }"]


def answered_by(line: str, by_host: dict[str, str]) -> str | None:
    """The CAS that answered the request of one access-log line, or None when no CAS sent anything."""
    parts = line.split('"')
    if len(parts) < 5:
        return None
    last = parts[1].split(",")[-1].strip()
    received = parts[3].split(",")[-1].strip()
    if last in ("", "-") or received in ("", "-", "0"):
        return None
    return by_host.get(last.rsplit(":", 1)[0])
