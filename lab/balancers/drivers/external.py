"""A VIP the user runs (an appliance such as F5, NetScaler or KEMP in a staging net, or any balancer
started by hand): caslab starts nothing, renders what that balancer must do, and counts from the farm.

The lab cannot see inside it, so it takes the scenario's word for the methods (every method is
allowed; only what no balancer can do is refused, e.g. a cookie on plain TCP) and measures what
happens. `render()` writes `external.txt`: the VIP's addresses and ports, the CAS, and per service the
method, its cookie or header, its timeout and the health probe, to configure the appliance from; when the
scenario sets them, the idle timeouts per listener, route and pool (in the lab's seconds: Exchange time
divided by time_scale) and the size of the persistence table.
`wait_ready` waits until the VIP's web ports accept connections (TCP ports are not probed: a connection
there would reach a CAS). Counters are each CAS' ledger rows since `start()` that carry a lab request id
(HTTP `X-CasLab-Request`, MAPI/Address Book `rid`): the lab's own requests as the CAS saw them, without
the appliance's probes. They count requests and MAPI/Address Book exchanges, not TCP connections.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from caslab.vocab import METHODS
from lab.balancers import Balancer, BalancerError, register
from lab.balancers.layout import probe_host
from lab.model import BalancerSpec, CasEndpoint


@register
class External(Balancer):
    name = "external"
    methods = frozenset(METHODS)
    active_health_checks = True  # assumed: the lab cannot tell; the report shows what happened
    table_methods = frozenset(METHODS)  # taken at its word: an appliance may keep records for any method

    def __init__(self, spec: BalancerSpec, run_dir: Path) -> None:
        super().__init__(spec, run_dir)
        self._next: dict[str, int] = {}  # per CAS: the next ledger row to read
        self._counted: dict[str, int] = {}

    def version(self) -> str:
        return "external"

    @classmethod
    def processes(cls) -> int:
        return 0  # the user's own balancer: this machine's open-file limit is not its

    def render(self) -> dict[str, str]:
        spec = self.spec
        h = spec.health
        host = probe_host(spec)
        lines = [
            f"caslab: what the external balancer must do (preset {spec.preset or '(custom)'}, "
            f"topology {spec.topology}, tls {spec.tls})",
            "",
            "Listen on (clients use these and nothing else):",
        ]
        for listener in self.layout.listeners:
            paths = ", ".join(p for r in listener.routes for p in r.prefixes)
            where = f"{paths} by path (case-insensitive), the rest" if paths else "all"
            lines.append(
                f"  {listener.host}:{listener.port} {listener.kind}: {where} to {listener.default.name}"
            )
        lines += ["", "Servers:"]
        lines += [
            f"  {cas.name} {cas.host}: http {cas.http_port}, https {cas.https_port}, mapi {cas.mapi_port}, "
            f"addressbook {cas.ab_port}"
            for cas in spec.servers
        ]
        lines += ["", "Pools (persistence, on which CAS port):"]
        for pool in self.layout.pools:
            p = pool.persistence
            timeout = f", idle timeout {p.timeout_s:g} s" if p.method not in ("none", "leastconn") else ""
            shared = f", sharing the source-IP table of {pool.rule_owner}" if pool.rule_owner else ""
            lines.append(
                f"  {pool.name} ({', '.join(pool.services) or 'unrouted paths'}): {p}{timeout}{shared}; "
                f"{pool.cas_port.replace('_', ' ')}{' with TLS' if pool.tls else ''}"
            )
        lines += self._timeouts()
        if spec.persistence_table_size is not None:
            lines += [
                "",
                f"Persistence table: at most {spec.persistence_table_size} records per table (per pool), "
                "the oldest dropped when it is full.",
            ]
        lines += [
            "",
            f"Health probe: GET {h.path} (Host {host}), expect 200 and the body string {h.body!r}; "
            f"every {h.interval_s:g} s, down after {h.fall}, up after {h.rise}. A draining CAS answers 404.",
            "Retry a request whose connection to a CAS was refused on another CAS.",
            "Add X-Forwarded-For with the client's address when TLS ends on the balancer.",
        ]
        return {"external.txt": "\n".join(lines) + "\n"}

    def _timeouts(self) -> list[str]:
        """The idle timeouts the appliance must have, when the scenario sets any."""
        if not self.spec.timeouts.is_set:
            return []
        lines = [
            "",
            "Idle timeouts (close a connection silent both ways this long; unset: the appliance's own):",
        ]
        for listener in self.layout.listeners:
            where = f"{listener.host}:{listener.port} ({listener.name})"
            if listener.kind == "tcp":
                lines.append(
                    f"  {where}, TCP: {_seconds(listener.default.timeouts.idle_s)} (the shorter side)"
                )
                continue
            own = [
                f"{r.service} {_seconds(r.timeouts.client_idle_s)}"
                for r in listener.routes
                if r.timeouts.client_idle_s != listener.timeouts.client_idle_s
            ]
            lines.append(
                f"  {where}, client side: {_seconds(listener.timeouts.client_idle_s)}"
                + (f" (but {', '.join(own)})" if own else "")
            )
        for pool in self.layout.pools:
            if not pool.tcp:
                lines.append(f"  pool {pool.name}, server side: {_seconds(pool.timeouts.server_idle_s)}")
        return lines

    def start(self) -> None:
        self.write_config()
        self._counted = {cas.name: 0 for cas in self.spec.servers}
        for cas in self.spec.servers:
            self._next[cas.name] = self._ledger_length(cas)

    def wait_ready(self, timeout: float = 20.0) -> None:
        wanted = [
            (listener.host, listener.port) for listener in self.layout.listeners if listener.kind != "tcp"
        ]
        deadline = time.monotonic() + timeout
        for host, port in wanted:
            while True:
                try:
                    socket.create_connection((host, port), timeout=1).close()
                    break
                except OSError as err:
                    if time.monotonic() > deadline:
                        raise BalancerError(
                            f"the external VIP {host}:{port} does not accept connections: {err}"
                        ) from None
                    time.sleep(0.1)

    def stop(self) -> None:
        """Nothing to stop: the balancer is the user's."""

    def counters(self) -> dict[str, int]:
        for cas in self.spec.servers:
            try:
                if self._ledger_length(cas) < self._next.get(cas.name, 0):
                    self._next[cas.name] = 0  # the CAS restarted: a new process, a new ledger
                while True:
                    page = _get_json(f"{cas.admin_url}/caslab/ledger?since={self._next.get(cas.name, 0)}")
                    self._counted[cas.name] = self._counted.get(cas.name, 0) + sum(
                        1 for row in page["rows"] if row.get("request_id")
                    )
                    self._next[cas.name] = page["next"]
                    if not page["rows"]:
                        break
            except (OSError, urllib.error.URLError, ValueError):
                continue  # a stopped CAS: its count stays where it was
        return {name: self._counted.get(name, 0) for name in sorted(c.name for c in self.spec.servers)}

    @staticmethod
    def _ledger_length(cas: CasEndpoint) -> int:
        try:
            return int(_get_json(f"{cas.admin_url}/caslab/stats")["requests"])
        except (OSError, urllib.error.URLError, ValueError):
            return 0


def _seconds(value: float | None) -> str:
    return "unset" if value is None else f"{value:g} s"


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())
