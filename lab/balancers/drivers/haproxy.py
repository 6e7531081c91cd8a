"""HAProxy 2.6 (Debian package): the one balancer here that does every persistence method.

How each method is rendered (one backend per pool of lab.balancers.layout), and where its users are
after their CAS failed and came back:
- none / leastconn: `balance roundrobin` / `balance leastconn`.
- source-ip: a stick table on `src` (learned; `expire` = the timeout). Users stay where they moved.
- lb-cookie: `cookie lb_<pool> insert indirect nocache httponly maxidle <timeout>`. Stay (rewritten).
- app-cookie NAME: `stick store-response res.cook(NAME)` + `stick on req.cook(NAME)`. Stay (re-learned).
- cookie-hash NAME: `balance hash req.cook(NAME)`, consistent. With a source-ip fallback the hash key is
  a variable holding the cookie, or `src` when the client sent none. Users move back (a second break).
- header NAME: a stick table on `req.hdr(NAME)` (learned; a source-ip fallback sticks on `src` in a
  second table, since a table has one key type). Stay.
- ssl-session-id (TCP passthrough only): stick on the ClientHello's session ID (`payload_lv(43,1)`;
  2.6 has no `req.ssl_sid`), stored from the ServerHello. Holds only for TLS 1.2 resumed by session ID:
  TLS 1.3 sends a fresh ID in every hello, and with session tickets the ID never matches.

Outlook Anywhere's backend in HTTP mode has `option http-no-delay`: its channels carry calls both ways
inside one request, which HAProxy otherwise delays by up to 200 ms per piece (every call ~0.4 s).

Health: one `health` backend probes each CAS (`GET /owa/auth/logon.aspx`, status 200 and the body
string; `disable-on-404` turns a draining CAS' 404 into "no new sessions, keep the persistent ones");
every other backend `track`s it, so each CAS gets one probe per interval, not one per backend.
`option redispatch 1` + `retries 2` send a request whose CAS refuses the connection to another CAS, so a
dead CAS costs no errors even before its probe fails. MAPI and Address Book share one stick table when
they share one source-IP rule, and so do web backends (servers have the same ids in every backend).
Counters come from the stats socket (`show stat`, per-server `stot`); the stats page is on the VIP's
stats port.

Idle timeouts (lab.model.Timeouts; unset ones stay at the long default, 1h), and what each governs:
- client_idle: `timeout client` (the client is silent while HAProxy waits for its request),
  `timeout http-keep-alive` (a kept-alive connection waiting for its next request; else
  `timeout http-request`, 30 s, would govern it) and `timeout client-fin` (a half-closed client
  connection). Once a request is on its way to the CAS, the client side has no timer of its own:
  measured, an idle RPC/HTTP channel pair outlives `timeout client` (tests/test_balancer_idle.py).
- server_idle: `timeout server` (the CAS is silent while HAProxy waits for it: a held Ping, an idle
  RPC_OUT_DATA channel, and an idle RPC_IN_DATA channel too, whose answer is still to come; measured).
- `timeout tunnel` = the shorter of the two: it replaces both once a TCP connection (MAPI, Address
  Book, TLS passthrough) has no analyser left, and once an HTTP connection is upgraded (Exchange 2010
  upgrades none: RPC/HTTP channels and Pings are plain requests, so `timeout client/server` govern them).
The scenario's own timeouts go into `defaults`; a service's override into its frontend (client side;
2.6 sets `timeout client` per frontend only, so services on one frontend share one) or its backend
(server side and tunnel). `persistence_table_size` is the `size` of every stick table (source-ip,
app-cookie, header and its fallback, ssl-session-id; a full one drops a few of its oldest entries)
and `expire` stays the persistence timeout; lb-cookie and cookie-hash keep no table.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from caslab.vocab import METHODS
from lab.balancers import BalancerError, register
from lab.balancers.layout import Listener, Pool, probe_host
from lab.balancers.process import ProcessBalancer
from lab.model import Timeouts

STICK_STRING_LEN = 200  # msExchEcpCanary values run to ~76 characters, Basic credentials far less
LONG = "1h"  # RPC/HTTP channels, EAS Ping and MAPI connections stay open for many minutes
TABLE_SIZE = "1m"  # stick-table entries when the scenario sets no persistence_table_size


def duration(seconds: float) -> str:
    """An HAProxy time value, in whole seconds when exact, else milliseconds (time-scaled runs)."""
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{max(1, round(seconds * 1000))}ms"


def idle(seconds: float | None) -> str:
    """An idle timeout: the given one, or the long default when none is set."""
    return LONG if seconds is None else duration(seconds)


def client_side(timeouts: Timeouts, http: bool) -> list[str]:
    """The client-side timeouts of a frontend (or defaults) when `timeouts` sets client_idle."""
    if timeouts.client_idle_s is None:
        return []
    value = duration(timeouts.client_idle_s)
    return [f"    timeout client {value}", f"    timeout client-fin {value}"] + (
        [f"    timeout http-keep-alive {value}"] if http else []
    )


def haproxy_binary() -> str:
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


@register
class HAProxy(ProcessBalancer):
    name = "haproxy"
    methods = frozenset(METHODS)
    client_idle_per_route = False
    client_idle_reason = (
        "HAProxy 2.6 sets `timeout client` per frontend only (`http-request set-timeout` takes server and "
        "tunnel, not client)"
    )
    table_methods = frozenset({"source-ip", "app-cookie", "header", "ssl-session-id"})
    # Measured with `option http-no-delay` in the rpchttp backend (tests/test_timers_haproxy.py's set-up,
    # 8 s runs): no Outlook Anywhere channel cut with a keep-alive every 0.2, 0.4, 0.45 or 0.475 s under a
    # 0.5 s `timeout server` (5 runs each), one cut in 3 runs at 0.49 s, dozens at 0.5 s. The 0.3 s once
    # declared here was the kernel holding each piece of a channel 200 ms before that option (7bea87e).
    timer_slack_s = 0.05
    timer_slack_reason = (
        "HAProxy 2.6 was measured cutting no Outlook Anywhere channel that carried a keep-alive every "
        "0.475 s under a 0.5 s idle timeout, and one at 0.49 s, so its idle timeouts can end a few "
        "hundredths of a second early"
    )

    # What sample() read during the load: the most connections at once, under this global maxconn.
    most_connections = 0
    global_maxconn = 0  # 0 until a sample read it

    @property
    def socket_path(self) -> Path:
        return self.config_dir / "haproxy.sock"

    def command(self) -> list[str]:
        return [haproxy_binary(), "-db", "-f", str(self.config_dir / "haproxy.cfg")]

    def validate_command(self) -> list[str]:
        return [haproxy_binary(), "-c", "-f", str(self.config_dir / "haproxy.cfg")]

    def version(self) -> str:
        out = subprocess.run([haproxy_binary(), "-v"], capture_output=True, text=True, check=True).stdout
        return out.split()[2]  # "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"

    # -- rendering ------------------------------------------------------------------------------------

    def render(self) -> dict[str, str]:
        spec = self.spec
        layout = self.layout
        web = [listener for listener in layout.listeners if listener.kind != "tcp"]
        tcp = [listener for listener in layout.listeners if listener.kind == "tcp"]
        http_pools = [p for p in layout.pools if not p.tcp]
        tcp_pools = [p for p in layout.pools if p.tcp]
        everywhere = spec.timeouts.of(None)  # the scenario's own, in `defaults`
        lines = [
            f"# caslab: HAProxy config for preset {spec.preset or '(custom)'}, topology {spec.topology}, "
            f"tls {spec.tls}",
            "global",
            # Relative to the working directory (the config folder): a run folder's absolute path can
            # exceed what a unix socket address holds (HAProxy allows 97 bytes).
            "    stats socket unix@haproxy.sock mode 600 level admin",
            "    log stdout format short local0 notice",
            "",
            "defaults",
            "    mode http",
            "    log global",
            "    option dontlog-normal",
            "    option redispatch 1",
            "    retries 2",
            "    timeout connect 2s",
            "    timeout check 2s",
            # RPC/HTTP channels, EAS Ping and MAPI connections stay open for many minutes.
            f"    timeout client {idle(everywhere.client_idle_s)}",
            f"    timeout server {idle(everywhere.server_idle_s)}",
            f"    timeout tunnel {idle(everywhere.idle_s)}",
            "    timeout http-request 30s",
            *client_side(everywhere, http=True)[1:],
            "",
            "listen stats",
            f"    bind {spec.vip.host}:{spec.vip.stats_port}",
            "    stats enable",
            "    stats uri /",
            "    stats refresh 5s",
            "",
            *self._health_backend(),
        ]
        for listener in web:
            lines += self._frontend(listener)
        for pool in http_pools:
            lines += self._backend(pool)
            if pool.persistence.method == "header" and pool.persistence.fallback:
                # A stick table has one key type: the source-address fallback needs a table of its own.
                expire = duration(pool.persistence.timeout_s)
                lines += [
                    f"backend {pool.name}_by_src",
                    f"    stick-table type ip size {self._table_size} expire {expire}",
                    "",
                ]
        lines += ["defaults", "    mode tcp", "    log global", "    option dontlog-normal",
                  "    option redispatch 1", "    retries 2", "    timeout connect 2s",
                  f"    timeout client {idle(everywhere.client_idle_s)}",
                  f"    timeout server {idle(everywhere.server_idle_s)}"]  # fmt: skip
        if everywhere.idle_s is not None:
            lines += [
                f"    timeout tunnel {duration(everywhere.idle_s)}",
                *client_side(everywhere, False)[1:],
            ]
        lines.append("")
        for listener in tcp:
            lines += [f"frontend {listener.name}", f"    bind {listener.host}:{listener.port}",
                      *self._own_client_side(listener, http=False),
                      f"    default_backend {listener.default.name}", ""]  # fmt: skip
        for pool in tcp_pools:
            lines += self._backend(pool)
        return {"haproxy.cfg": "\n".join(lines) + "\n"}

    def _health_backend(self) -> list[str]:
        h = self.spec.health
        host = probe_host(self.spec)
        over_tls = self.spec.tls in ("bridge", "passthrough")
        lines = [
            "backend health",
            "    option httpchk",
            f"    http-check send meth GET uri {h.path} ver HTTP/1.1 hdr Host {host}",
            "    http-check disable-on-404",
            "    http-check expect status 200",
            f'    http-check expect string "{h.body}"',
            f"    default-server check inter {duration(h.interval_s)} fall {h.fall} rise {h.rise}",
        ]
        for cas in self.spec.servers:
            if over_tls:
                files = self.spec.tls_files
                lines.append(
                    f"    server {cas.name} {cas.host}:{cas.https_port} check-ssl verify required "
                    f"ca-file {files.ca_pem} check-sni {files.server_name}"
                )
            else:
                lines.append(f"    server {cas.name} {cas.host}:{cas.http_port}")
        return [*lines, ""]

    @property
    def _table_size(self) -> str:
        size = self.spec.persistence_table_size
        return TABLE_SIZE if size is None else str(size)

    def _own_client_side(self, listener: Listener, http: bool) -> list[str]:
        """The client-side timeouts of a frontend whose services have their own (not the defaults')."""
        if listener.timeouts.client_idle_s == self.spec.timeouts.client_idle_s:
            return []
        return client_side(listener.timeouts, http)

    def _frontend(self, listener: Listener) -> list[str]:
        bind = f"    bind {listener.host}:{listener.port}"
        if listener.kind == "https":
            bind += f" ssl crt {self.spec.tls_files.server_pem} ssl-min-ver TLSv1.2 alpn http/1.1"
        lines = [f"frontend {listener.name}", bind, *self._own_client_side(listener, listener.kind != "tcp")]
        if listener.kind == "tcp":  # passthrough on the HTTPS port
            lines[1:1] = ["    mode tcp"]
        else:
            lines += ["    option forwardfor"]
            if listener.kind == "https":
                lines += ["    http-request set-header X-Forwarded-Proto https"]
            for route in listener.routes:
                for prefix in route.prefixes:
                    lines += [f"    acl is_{route.service} path -i {prefix}",
                              f"    acl is_{route.service} path_beg -i {prefix}/"]  # fmt: skip
            lines += [f"    use_backend {r.pool.name} if is_{r.service}" for r in listener.routes]
        return [*lines, f"    default_backend {listener.default.name}", ""]

    def _backend(self, pool: Pool) -> list[str]:
        p = pool.persistence
        lines = [f"backend {pool.name}"]
        if pool.tcp:
            lines.append("    mode tcp")
        elif "rpchttp" in pool.services:
            # An RPC/HTTP channel is one long request whose body (IN) or answer (OUT) carries every call:
            # without this, HAProxy forwards each piece with MSG_MORE and the kernel holds it up to
            # 200 ms (the manual's `option http-no-delay`): measured, every Outlook Anywhere call took
            # ~415 ms through this backend, against 0.6 ms with it (and through Envoy or nginx).
            lines.append("    option http-no-delay")
        lines.append("    http-check disable-on-404")  # tracking needs the same drain rule as `health`
        everywhere = self.spec.timeouts.of(None)
        if pool.timeouts.server_idle_s != everywhere.server_idle_s:
            lines.append(f"    timeout server {idle(pool.timeouts.server_idle_s)}")
        if pool.timeouts.idle_s != everywhere.idle_s:
            lines.append(f"    timeout tunnel {idle(pool.timeouts.idle_s)}")
        lines += self._persistence(pool)
        for cas in self.spec.servers:
            server = f"    server {cas.name} {cas.host}:{pool.port(cas)} track health/{cas.name}"
            if p.method == "lb-cookie":
                server += f" cookie {cas.name}"
            if pool.tls:
                files = self.spec.tls_files
                server += f" ssl verify required ca-file {files.ca_pem} sni str({files.server_name})"
            lines.append(server)
        return [*lines, ""]

    def _persistence(self, pool: Pool) -> list[str]:
        p = pool.persistence
        expire = duration(p.timeout_s)
        if p.method == "leastconn":
            return ["    balance leastconn"]
        if p.method == "none":
            return ["    balance roundrobin"]
        if p.method == "source-ip":
            if pool.rule_owner:  # the owner's table holds the client's CAS, whichever port it used first
                return ["    balance roundrobin", f"    stick on src table {pool.rule_owner}"]
            return [
                "    balance roundrobin",
                f"    stick-table type ip size {self._table_size} expire {expire}",
                "    stick on src",
            ]
        if p.method == "lb-cookie":
            return [
                "    balance roundrobin",
                f"    cookie {pool.lb_cookie} insert indirect nocache httponly "
                f"maxidle {max(1, round(p.timeout_s))}s",
            ]
        if p.method == "app-cookie":
            return [
                "    balance roundrobin",
                f"    stick-table type string len {STICK_STRING_LEN} size {self._table_size} expire {expire}",
                f"    stick on req.cook({p.name})",
                f"    stick store-response res.cook({p.name})",
            ]
        if p.method == "cookie-hash":
            if p.fallback is None:
                return [f"    balance hash req.cook({p.name})", "    hash-type consistent"]
            return [
                f"    http-request set-var(txn.affinity) req.cook({p.name})",
                "    http-request set-var(txn.affinity) src if !{ var(txn.affinity) -m found }",
                "    balance hash var(txn.affinity)",
                "    hash-type consistent",
            ]
        if p.method == "header":
            lines = [
                "    balance roundrobin",
                f"    stick-table type string len {STICK_STRING_LEN} size {self._table_size} expire {expire}",
                f"    stick on req.hdr({p.name})",
            ]
            if p.fallback is not None:  # a second table: a stick table has one key type
                lines += [f"    stick on src table {pool.name}_by_src"]
            return lines
        if p.method == "ssl-session-id":
            return [
                "    balance roundrobin",
                "    tcp-request inspect-delay 5s",
                "    tcp-request content accept if { req.ssl_hello_type 1 }",
                "    tcp-response inspect-delay 5s",
                "    tcp-response content accept if { res.ssl_hello_type 2 }",
                f"    stick-table type binary len 32 size {self._table_size} expire {expire}",
                # 'req.ssl_sid' does not exist in 2.6: the session ID is the length-prefixed field at
                # offset 43 of both hellos.
                "    stick on payload_lv(43,1) if { req.ssl_hello_type 1 }",
                "    stick store-response payload_lv(43,1) if { res.ssl_hello_type 2 }",
            ]
        raise AssertionError(f"unhandled method {p.method}")  # refusals() stops unknown methods earlier

    # -- running --------------------------------------------------------------------------------------

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Send one command to the stats socket and return its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            folder = os.open(self.config_dir, os.O_RDONLY)  # reached as /proc/self/fd/N: a short address
            try:
                sock.connect(f"/proc/self/fd/{folder}/{self.socket_path.name}")
            finally:
                os.close(folder)
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Listening on every VIP port, and the stats socket answers (the config is fully loaded)."""
        deadline = time.monotonic() + timeout
        super().wait_ready(timeout)
        while True:
            self._check_alive()
            try:
                self.admin("show info")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise BalancerError(f"haproxy stats socket {self.socket_path} did not answer") from None
                time.sleep(0.02)

    def stats(self) -> list[dict[str, str]]:
        """`show stat` as rows (pxname, svname, status, stot, ...)."""
        text = self.admin("show stat").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def counters(self) -> dict[str, int]:
        totals = dict.fromkeys(sorted(cas.name for cas in self.spec.servers), 0)
        for row in self.stats():
            cas = self.cas_of(row["pxname"], row["svname"])
            if cas is not None:
                totals[cas] += int(row["stot"] or 0)
        return totals

    def info(self) -> dict[str, str]:
        """`show info` as a dict (Maxconn, CurrConns, ...)."""
        lines = (line.partition(":") for line in self.admin("show info").splitlines())
        return {key: value.strip() for key, colon, value in lines if colon}

    def sample(self) -> None:
        """The most connections HAProxy held at once under its global maxconn so far. `show info` keeps
        only the current count, and the frontends' peaks (smax) are their own: several frontends can
        fill the global maxconn between them while none reaches its own limit. A maxconn reached holds
        for a while (the connections beyond it queue), so a sample a second sees it."""
        info = self.info()
        current, limit = info.get("CurrConns", ""), info.get("Maxconn", "")
        if current.isdigit() and limit.isdigit():
            self.global_maxconn = int(limit)
            self.most_connections = max(self.most_connections, int(current))

    def limits_reached(self) -> list[str]:
        """The global maxconn when a sample during the load found it full; frontends whose most
        concurrent connections (smax) reached their limit (slim), which without a maxconn in the config
        HAProxy sizes from the open-file limit; and servers whose most concurrent requests reached their
        `maxconn` (a user's file may set one; the lab's sets none), beyond which requests queue."""
        reached = []
        sized = (
            ""
            if self.spec.config
            else "the lab's config sets no maxconn, so HAProxy sized it from the open-file limit"
        )
        global_full = bool(self.global_maxconn) and self.most_connections >= self.global_maxconn
        if global_full:
            reached.append(
                f"haproxy held its global maxconn of {self.global_maxconn:,} connections during the load "
                f"(CurrConns in `show info`, read about once a second{'; ' + sized if sized else ''}): "
                "connections beyond it waited in the accept queue"
            )
        rows = self.stats()
        queued = {row["pxname"]: int(row.get("qmax") or 0) for row in rows if row["svname"] == "BACKEND"}
        for row in rows:
            limit, most = row.get("slim") or "", row.get("smax") or ""
            if not (limit.isdigit() and most.isdigit() and int(most) >= int(limit)):
                continue
            if row["svname"] == "FRONTEND":
                if global_full and int(limit) == self.global_maxconn:
                    continue  # the same limit, said above
                reached.append(
                    f"haproxy frontend {row['pxname']} reached its connection limit of {int(limit):,}"
                    f"{f' ({sized})' if sized else ''}: connections beyond it waited in the accept queue"
                )
            elif row["svname"] != "BACKEND":
                cas = self.cas_of(row["pxname"], row["svname"])
                reached.append(
                    f"haproxy server {row['svname']}{f' ({cas})' if cas and cas != row['svname'] else ''} "
                    f"of backend {row['pxname']} reached its maxconn of {int(limit):,}: requests beyond it "
                    f"queued (at most {int(row.get('qmax') or 0):,} at once for this server, "
                    f"{queued.get(row['pxname'], 0):,} for any server of the backend)"
                )
        return reached

    def cas_of(self, pool: str, server: str) -> str | None:
        if self.spec.config is None and pool == "health":
            return None  # the lab's own `health` backend only probes
        return super().cas_of(pool, server)
