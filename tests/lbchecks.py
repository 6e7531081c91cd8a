"""What the balancer tests share: clients bound to chosen source addresses, the farm, and the checks
that each persistence method puts clients where it says.

Addresses (this part's block): CAS on 127.0.16.11-13, the VIP on 127.0.16.1 (127.0.16.2-8 for
vip-per-service), clients on 127.16.x.y. Every request opens a new connection (keep-alive gives no
affinity, and a new connection is what makes source-address and TLS methods observable) and reads
which CAS answered from `X-CasLab-Server`.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import signal
import socket
import ssl
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.cookies import SimpleCookie
from pathlib import Path

import mockcas  # noqa: F401 - before aiohttp anywhere (the CAS processes need the pure-Python parser)
from caslab.vocab import HTTP_SERVICES
from lab.balancers import Balancer, get_driver
from lab.balancers.presets import resolve
from lab.certs import make_tls_files
from lab.farm import LocalFarm
from lab.model import BalancerSpec, HealthCheck, Persistence, TlsFiles, Vip, local_farm

VIP = Vip("127.0.16.1")
SERVERS = local_farm(3, "127.0.16")
NAMES = [s.name for s in SERVERS]
# Quick probes, so failover tests take a second or two; the CAS answer the probe in well under 100 ms.
FAST_HEALTH = HealthCheck(interval_s=0.2, fall=2, rise=2)
NAMED = {"app-cookie": "OutlookSession", "cookie-hash": "OutlookSession", "header": "Authorization"}
# A call through a balancer that forwards an RPC/HTTP channel's pieces as they come takes ~1 ms here; one that
# holds them (up to 200 ms per piece) ~0.4 s. The median of three calls must be nearer the first.
UNHELD_CALL_S = 0.15


@dataclass
class Reply:
    status: int
    server: str  # X-CasLab-Server, "" when no CAS answered (the balancer's own error page)
    headers: http.client.HTTPMessage
    body: bytes

    def set_cookies(self) -> list[str]:
        return [SimpleCookie(v).popitem()[0] for v in self.headers.get_all("Set-Cookie") or []]


class Client:
    """One client program: its own source address and (optionally) its own cookie jar."""

    def __init__(
        self,
        source_ip: str,
        *,
        keep_cookies: bool = True,
        tls: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
    ) -> None:
        self.source_ip = source_ip
        self.keep_cookies = keep_cookies
        self.tls = tls
        self.headers = headers or {}
        self.cookies = dict(cookies or {})
        self.seen: list[str] = []  # the CAS that answered each request, in order

    def request(
        self,
        path: str = "/owa/",
        *,
        host: str = VIP.host,
        port: int | None = None,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        port = port or (VIP.https_port if self.tls else VIP.http_port)
        source = (self.source_ip, 0)
        if self.tls:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, context=self.tls, source_address=source, timeout=timeout
            )
        else:
            conn = http.client.HTTPConnection(host, port, source_address=source, timeout=timeout)
        sent = {"Host": "mail.caslab.test", **self.headers, **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, headers=sent)
            response = conn.getresponse()
            reply = Reply(
                response.status, response.getheader("X-CasLab-Server", ""), response.headers, response.read()
            )
        finally:
            conn.close()
        if self.keep_cookies:
            for value in reply.headers.get_all("Set-Cookie") or []:
                for name, morsel in SimpleCookie(value).items():
                    self.cookies[name] = morsel.value
        self.seen.append(reply.server)
        return reply

    def servers(self, n: int, path: str = "/owa/", **kw) -> list[str]:
        return [self.request(path, **kw).server for _ in range(n)]


def tls_client_context(files: TlsFiles, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(files.ca_pem))
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def tls_get(
    ctx: ssl.SSLContext, source_ip: str, session: ssl.SSLSession | None = None
) -> tuple[str, ssl.SSLSession | None, bool]:
    """One GET over a new TLS connection to the VIP's HTTPS port, offering `session` for resumption:
    (the CAS that answered, the session to resume next time, whether this one was resumed)."""
    raw = socket.create_connection((VIP.host, VIP.https_port), timeout=10, source_address=(source_ip, 0))
    with ctx.wrap_socket(raw, server_hostname=VIP.host, session=session) as tls:
        tls.sendall(b"GET /owa/ HTTP/1.1\r\nHost: mail.caslab.test\r\nConnection: close\r\n\r\n")
        response = http.client.HTTPResponse(tls)
        response.begin()
        server = response.getheader("X-CasLab-Server", "")
        response.read()
        return server, tls.session, tls.session_reused


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}@caslab.test:caslab".encode()).decode()


# -- the farm and the balancer ------------------------------------------------------------------------


@contextmanager
def local_farm_running(run_dir: Path) -> Iterator[tuple[LocalFarm, TlsFiles]]:
    """Three CAS processes on 127.0.16.11-13 that serve HTTPS too (with the run's certificate)."""
    tls = make_tls_files(run_dir / "tls", VIP, SERVERS)
    farm = LocalFarm(
        SERVERS, farm_key=secrets.token_bytes(32), run_dir=run_dir / "farm", time_scale=60, tls_files=tls
    )
    farm.start()
    try:
        yield farm, tls
    finally:
        farm.stop()


def spec_for(
    driver: str,
    *,
    preset: str = "none-all",
    http: Persistence | None = None,
    overrides: dict[str, Persistence] | None = None,
    tls: str = "none",
    topology: str = "single-vip",
    tls_files: TlsFiles | None = None,
    servers: list | None = None,
    health: HealthCheck = FAST_HEALTH,
) -> BalancerSpec:
    """A spec from a preset, with `http` applied to every HTTP service and `overrides` on top."""
    methods = dict.fromkeys(HTTP_SERVICES, http) if http else {}
    methods.update(overrides or {})
    return BalancerSpec(
        driver,
        resolve(preset, methods),
        servers or SERVERS,
        VIP,
        topology,
        tls,
        health,
        tls_files if tls != "none" else None,
        preset,
    )


@contextmanager
def balancer_running(
    spec: BalancerSpec, run_dir: Path, driver_class: type[Balancer] | None = None
) -> Iterator[Balancer]:
    """The spec's balancer, started and serving, stopped afterwards; `driver_class` runs a subclass of
    the driver instead (a test's variant, such as one with fewer open files)."""
    driver = driver_class(spec, run_dir) if driver_class else get_driver(spec, run_dir)
    try:
        driver.start()
        driver.wait_ready(20)
        wait_until_all_serve(spec)
        yield driver
    finally:
        driver.stop()


def wait_until_all_serve(spec: BalancerSpec, timeout: float = 10.0) -> None:
    """Poll until the farm's health is up on every CAS (admin port), then until requests reach a CAS
    through the VIP: a balancer that probes before it routes (Envoy) answers 503 until its first
    probe round is done."""
    deadline = time.monotonic() + timeout
    for cas in spec.servers:
        set_health(cas.name, "up")
    tls = tls_client_context(spec.tls_files) if spec.tls != "none" else None
    host = spec.vip.service_host("owa", spec.topology)
    while True:
        try:
            reply = Client("127.16.255.1", keep_cookies=False, tls=tls).request("/", host=host)
            if reply.server:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("no CAS answered through the VIP in time")
        time.sleep(0.05)


def set_health(name: str, value: str) -> None:
    cas = next(s for s in SERVERS if s.name == name)
    with urllib.request.urlopen(f"{cas.admin_url}/caslab/fault?health={value}", timeout=5) as r:
        assert json.loads(r.read())["health"] == value


def ledger_count(name: str, client_prefix: str = "127.16.") -> int:
    """Rows in a CAS's ledger from test clients (the balancers' probes come from 127.0.0.1)."""
    cas = next(s for s in SERVERS if s.name == name)
    with urllib.request.urlopen(f"{cas.admin_url}/caslab/ledger?since=0", timeout=10) as r:
        rows = json.loads(r.read())["rows"]
    return sum(1 for row in rows if row["client_ip"].startswith(client_prefix))


def poll(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- the checks ---------------------------------------------------------------------------------------


def check_round_robin() -> None:
    """`none`: one client's nine requests go three to each CAS."""
    client = Client("127.16.1.1")
    assert Counter(client.servers(9)) == dict.fromkeys(NAMES, 3)


def check_source_ip() -> None:
    """Clients on distinct addresses (one /24, then one address per /24) each keep one CAS and together
    use more than one; clients sharing one address (NAT) all land on one CAS."""
    for addresses in ([f"127.16.1.{i}" for i in range(1, 13)], [f"127.16.{i}.7" for i in range(10, 22)]):
        homes = []
        for ip in addresses:
            seen = Client(ip, keep_cookies=False).servers(3)
            assert len(set(seen)) == 1, f"{ip} moved: {seen}"
            homes.append(seen[0])
        assert len(set(homes)) > 1, f"12 addresses all went to {homes[0]}"
    behind_nat = [Client("127.16.2.1") for _ in range(6)]
    assert len({s for c in behind_nat for s in c.servers(2)}) == 1


def check_sticky_clients(make_client: Callable[[int], Client], path: str = "/owa/", n: int = 12) -> list[str]:
    """Each client keeps one CAS for six requests, and the clients use more than one CAS."""
    homes = []
    for i in range(n):
        client = make_client(i)
        replies = [client.request(path) for _ in range(6)]
        seen = [r.server or f"(no CAS: {r.status} {r.body[:80]!r})" for r in replies]
        assert len(set(seen)) == 1, f"client {i} moved: {seen}"
        homes.append(seen[0])
    assert len(set(homes)) > 1, f"all {n} clients went to {homes[0]}"
    return homes


def check_spread_without_key(make_client: Callable[[int], Client], path: str = "/owa/") -> None:
    """Clients that never present the key are balanced, not stuck: some client sees several CAS."""
    assert any(len(set(make_client(i).servers(6, path))) > 1 for i in range(3))


NAT = "127.16.3.1"


def check_method(method: str) -> None:
    """The clients of `method` land where it says (all HTTP services of the balancer have `method`)."""
    if method == "none":
        check_round_robin()
    elif method == "source-ip":
        check_source_ip()
    elif method in ("lb-cookie", "app-cookie", "cookie-hash", "header"):
        # Clients behind one NAT that present the method's key (see client_for) each keep one CAS;
        # clients that present none are balanced.
        check_sticky_clients(client_for(method))
        check_spread_without_key(lambda i: Client(NAT, keep_cookies=False))
    else:
        raise AssertionError(f"no check for {method}")


def persistence(method: str, timeout_s: float = 1800.0) -> Persistence:
    return Persistence(method, NAMED.get(method), timeout_s)


def check_failover(
    method: str,
    is_up: Callable[[str], bool],
    back_home: bool,
    make_client: Callable[[int], Client],
    farm: LocalFarm | None = None,
    collateral_allowed: int = 0,
) -> None:
    """The CAS with the most clients fails: its health goes down (or, given the farm, its process
    stops). Its clients move to one other CAS each and nobody else moves (but `collateral_allowed`
    clients of the other CAS, for a hash table that rebuilds with minimal, not zero, disruption); when
    it is back and the balancer sees it (is_up), its former clients either stay where they moved
    (cookies, stick tables) or go back (hashes): `back_home`."""
    clients = [make_client(i) for i in range(12)]
    homes = [c.request().server for c in clients]
    victim = Counter(homes).most_common(1)[0][0]
    if farm:
        farm.stop([victim])
    else:
        set_health(victim, "down")
    try:
        poll(lambda: not is_up(victim), what=f"the balancer to mark {victim} down")
        moved = {}
        collateral = []
        for client, home in zip(clients, homes, strict=True):
            seen = client.servers(3)
            if home == victim:
                assert victim not in seen and len(set(seen)) == 1, (
                    f"{method}: a client of {victim} got {seen}"
                )
                moved[id(client)] = seen[0]
            elif set(seen) != {home}:
                collateral.append(f"a client of {home} moved to {seen}")
        assert len(collateral) <= collateral_allowed, f"{method}: {'; '.join(collateral)}"
    finally:
        if farm:
            farm.start([victim])
        else:
            set_health(victim, "up")
    poll(lambda: is_up(victim), what=f"the balancer to mark {victim} up again")
    for client, home in zip(clients, homes, strict=True):
        seen = client.servers(3)
        if home == victim:
            expected = victim if back_home else moved[id(client)]
            assert set(seen) == {expected}, f"{method}: after {victim} returned, a moved client got {seen}"
        else:
            assert set(seen) == {home}


def reached_by_new_clients(name: str) -> bool:
    """Whether fresh clients (new addresses, no cookies) reach CAS `name`: how a test sees that a
    balancer without a health API (nginx) routes to it."""
    return any(Client(f"127.16.12.{i}", keep_cookies=False).request().server == name for i in range(1, 25))


def client_for(method: str) -> Callable[[int], Client]:
    """Clients that present the key of `method` (distinct addresses for source-ip, else one NAT)."""
    if method == "source-ip":
        return lambda i: Client(f"127.16.4.{i + 1}", keep_cookies=False)
    if method == "cookie-hash":  # Outlook 2010 makes its own OutlookSession, sent from the first request
        return lambda i: Client(NAT, keep_cookies=False, cookies={"OutlookSession": str(uuid.uuid4())})
    if method == "header":
        return lambda i: Client(NAT, keep_cookies=False, headers={"Authorization": basic(f"user{i}")})
    # lb-cookie, app-cookie: a browser's cookie jar (OWA sets OutlookSession on its first answer, which
    # an app-cookie balancer must learn from that answer).
    return lambda i: Client(NAT)


def check_least_connections(farm: LocalFarm) -> None:
    """`leastconn`: a CAS that holds a request (its process is stopped, so the request hangs) gets no
    second one while the others are idle; round robin would give it every third. (Ties may be broken at
    random, so the busy CAS may get none at all.)"""
    busy = farm.processes["CAS01"]
    os.kill(busy.pid, signal.SIGSTOP)
    answers: list[str] = []
    pending: list[threading.Thread] = []
    try:
        for i in range(12):
            done = threading.Event()

            def ask(i: int = i, done: threading.Event = done) -> None:
                answers.append(Client(f"127.16.5.{i + 1}").request("/owa/", timeout=30).server)
                done.set()

            thread = threading.Thread(target=ask, daemon=True)
            thread.start()
            if not done.wait(1.0):  # this one is stuck on the stopped CAS; keep it open
                pending.append(thread)
    finally:
        os.kill(busy.pid, signal.SIGCONT)
    for thread in pending:
        thread.join(30)
    assert len(pending) <= 1, f"{len(pending)} requests went to the busy CAS"
    assert Counter(answers)["CAS01"] == len(pending) and len(answers) == 12


def tcp_ping(host: str, port: int, source_ip: str) -> str:
    """Open a connection to a MAPI or Address Book port, ping, and return the CAS that answered."""
    with socket.create_connection((host, port), timeout=10, source_address=(source_ip, 0)) as sock:
        sock.sendall(b'{"op":"ping","rid":"t"}\n')
        line = sock.makefile("rb").readline()
    return json.loads(line)["server"]


def check_mapi_and_addressbook_together(host: str = VIP.host) -> None:
    """MAPI and Address Book as one source-IP rule: each client's connections to both ports reach one
    CAS, and clients on distinct addresses use more than one CAS."""
    homes = []
    for i in range(12):
        ip = f"127.16.6.{i + 1}"
        seen = {
            tcp_ping(host, VIP.mapi_port, ip),
            tcp_ping(host, VIP.ab_port, ip),
            tcp_ping(host, VIP.mapi_port, ip),
        }
        assert len(seen) == 1, f"{ip}: MAPI and Address Book on {seen}"
        homes.append(seen.pop())
    assert len(set(homes)) > 1


def check_rpc_in_channel_streams(host: str = VIP.host, port: int = VIP.http_port) -> None:
    """Outlook Anywhere's IN channel: RPC_IN_DATA declaring a 1 GB body reaches a CAS, which handles it
    (401: no credentials) while the body is still being sent. A balancer that rejects the method answers
    itself, and one that buffers the body first never lets the CAS see the request: either way no
    ledger row. (When the client sees the answer is the balancer's own business: Go's HTTP server, in
    Traefik, holds it until it has read 256 KB more of the body.)"""
    request_id = f"in-channel-{uuid.uuid4()}"
    with socket.create_connection((host, port), timeout=5, source_address=("127.16.7.1", 0)) as sock:
        sock.sendall(
            b"RPC_IN_DATA /rpc/rpcproxy.dll?CAS01:6001 HTTP/1.1\r\nHost: mail.caslab.test\r\n"
            b"User-Agent: MSRPC\r\nContent-Length: 1073741824\r\n"
            + f"X-CasLab-Request: {request_id}\r\n\r\n".encode()
            + b"\0" * 1024
        )
        found: list[dict] = []
        poll(lambda: bool(found.extend(ledger_rows(request_id)) or found), 5, "the CAS to see the IN channel")
    assert [(r["service"], r["status"]) for r in found] == [("rpchttp", 401)], found


def ledger_rows(request_id: str) -> list[dict]:
    """Every CAS' ledger rows for one request id."""
    rows = []
    for cas in SERVERS:
        with urllib.request.urlopen(f"{cas.admin_url}/caslab/ledger?since=0", timeout=10) as r:
            rows += [row for row in json.loads(r.read())["rows"] if row["request_id"] == request_id]
    return rows


def dead_port(spec_servers: list, attr: str) -> list:
    """The farm's endpoints with one port pointing nowhere, to prove which port a TLS mode uses."""
    return [replace(s, **{attr: 9}) for s in spec_servers]


# -- whole checks a driver's test module runs against its balancer ----------------------------------------


def check_stopped_cas_costs_no_errors(driver: str, farm: LocalFarm, run_dir: Path) -> None:
    """CAS03's process ends while its probe still says up: the balancer's retry (to another CAS) answers
    every request, and clients of the other CAS stay where they are."""
    spec = spec_for(driver, http=persistence("lb-cookie"), health=HealthCheck(interval_s=10))
    with balancer_running(spec, run_dir):
        browsers = [Client(NAT) for _ in range(6)]
        homes = [b.request().server for b in browsers]
        assert "CAS03" in homes
        farm.stop(["CAS03"])
        try:
            for browser, home in zip(browsers, homes, strict=True):
                replies = [browser.request() for _ in range(2)]
                assert all(r.server for r in replies), [r.status for r in replies]
                assert "CAS03" not in {r.server for r in replies}
                if home != "CAS03":
                    assert {r.server for r in replies} == {home}
        finally:
            farm.start(["CAS03"])


def check_recommended_per_path(spec: BalancerSpec, run_dir: Path) -> None:
    """The recommended preset's per-path rules on one VIP (any path case), the RPC/HTTP IN channel, and
    MAPI + Address Book as one source-IP rule."""
    with balancer_running(spec, run_dir):
        # OWA and ECP: one balancer cookie for both, whatever the case of the path.
        browser = Client(NAT)
        first = browser.request("/OWA/")
        assert "lb_owa_ecp" in first.set_cookies()
        paths = ("/owa/", "/ecp/", "/ECP/", "/Owa/auth/logon.aspx")
        assert {browser.request(p).server for p in paths} == {first.server}
        # EWS: its own cookie, so a browser's EWS choice never moves its OWA session.
        assert "lb_ews" in browser.request("/EWS/Exchange.asmx").set_cookies()
        assert browser.request("/owa/").server == first.server
        # EAS: the Authorization header, for devices that keep no cookies.
        check_sticky_clients(
            lambda i: Client(NAT, keep_cookies=False, headers={"Authorization": basic(f"user{i}")}),
            "/Microsoft-Server-ActiveSync?Cmd=Ping",
        )
        # RPC/HTTP: the client-made OutlookSession cookie, else the source address (Outlook 2007).
        check_sticky_clients(
            lambda i: Client(NAT, keep_cookies=False, cookies={"OutlookSession": f"{{{uuid.uuid4()}}}"}),
            "/rpc/rpcproxy.dll",
        )
        check_sticky_clients(lambda i: Client(f"127.16.8.{i + 1}", keep_cookies=False), "/rpc/rpcproxy.dll")
        check_rpc_in_channel_streams()
        check_outlook_anywhere_pairs()
        check_mapi_and_addressbook_together()


def check_outlook_anywhere_pairs() -> None:
    """Real RPC/HTTP virtual connections through the VIP: IN and OUT channels reach one CAS and are
    joined there, for Outlook 2010 (its own OutlookSession cookie, several behind one NAT) and for
    Outlook 2007 (no cookie: the source-address fallback). Each carries calls that the balancer forwards
    as they come: a proxy that holds the pieces of a long request (HAProxy in HTTP mode without
    `option http-no-delay` holds each up to 200 ms) makes every call take ~0.4 s instead of ~1 ms."""
    from loadgen.binding import SourceAddress
    from loadgen.wire.rpchttp import VirtualConnection

    outlooks = [(NAT, {"Cookie": f'OutlookSession="{{{uuid.uuid4()}}}"'}) for _ in range(4)]
    outlooks += [(f"127.16.15.{i}", {}) for i in range(1, 5)]
    joined_on = set()
    for ip, headers in outlooks:
        vc = VirtualConnection(
            (VIP.host, VIP.http_port), source=SourceAddress(ip), user="user1@caslab.test", password="caslab",
            host_name="mail.caslab.test", headers=headers, timeout=10,
        )  # fmt: skip
        with vc:
            result = vc.connect()
            assert result.joined, (ip, headers, result)
            joined_on.add(result.out_channel.server)
            took = []
            for _ in range(3):
                started = time.monotonic()
                assert vc.call(opnum=10, stub=b"\0" * 64) == b"\0" * 64
                took.append(time.monotonic() - started)
            assert sorted(took)[1] < UNHELD_CALL_S, f"RPC calls held by the balancer: {took}"
    assert joined_on <= set(NAMES) and len(joined_on) > 1, joined_on


def check_counters_agree_with_ledgers(
    spec: BalancerSpec, run_dir: Path, read: Callable[[Balancer], dict]
) -> None:
    """30 requests over several pools: the balancer's per-CAS counts equal the CAS' ledger rows."""
    before = {name: ledger_count(name) for name in NAMES}
    with balancer_running(spec, run_dir) as driver:
        for i in range(30):
            Client(f"127.16.9.{i + 1}").request(["/owa/", "/EWS/Exchange.asmx", "/oab/x", "/nothing"][i % 4])
        # nginx counts a request when it logs it, just after the answer went out (one in six runs with
        # two workers, the last request was not yet logged when the client had its answer): wait for it.
        deadline = time.monotonic() + 5
        counted = read(driver)
        while sum(counted.values()) < 30 + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            counted = read(driver)
    after = {name: ledger_count(name) for name in NAMES}
    assert sum(counted.values()) == 30 + 1  # and balancer_running's one readiness request
    assert counted == {name: after[name] - before[name] for name in NAMES}


def check_tls_mode(driver: str, files: TlsFiles, run_dir: Path, mode: str, http: Persistence) -> None:
    """Offload and bridge use the CAS port they should (the other one points nowhere; passthrough needs
    no such proof: the client's TLS handshake could not finish on the plain port), clients verify the
    run's CA with TLS 1.2 and 1.3, and the CAS sees the client's address only when the balancer ends TLS
    (X-Forwarded-For); through passthrough it sees the balancer."""
    dead = {"offload": "https_port", "bridge": "http_port"}
    servers = dead_port(SERVERS, dead[mode]) if mode in dead else SERVERS
    spec = spec_for(driver, http=http, tls=mode, tls_files=files, servers=servers)
    before = sum(ledger_count(name, "127.16.10.1") for name in NAMES)
    with balancer_running(spec, run_dir):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            client = Client("127.16.10.1", tls=tls_client_context(files, maximum=version))
            seen = client.servers(3, "/owa/")
            assert all(seen), seen
            if http.method != "none":
                assert len(set(seen)) == 1, seen
    rows_with_client_address = sum(ledger_count(name, "127.16.10.1") for name in NAMES) - before
    assert rows_with_client_address == (0 if mode == "passthrough" else 6)


def check_vip_per_service(spec: BalancerSpec, run_dir: Path, tcp: bool = True) -> None:
    """Each service group on its own address: OWA and ECP share one (and one cookie), every other HTTP
    service answers on its own, MAPI and Address Book share one."""
    topology = "vip-per-service"
    with balancer_running(spec, run_dir):
        browser = Client(NAT)
        owa_host = VIP.service_host("owa", topology)
        first = browser.request("/owa/", host=owa_host)
        assert first.server and "lb_owa_ecp" in first.set_cookies()
        assert browser.request("/ecp/", host=owa_host).server == first.server
        for service in ("ews", "eas", "rpchttp", "oab", "autodiscover"):
            assert Client(NAT).request("/", host=VIP.service_host(service, topology)).server
        with_refusal = socket.socket()
        with_refusal.settimeout(2)
        assert with_refusal.connect_ex((VIP.host, VIP.http_port)) != 0, "nothing listens on the bare VIP"
        with_refusal.close()
        if tcp:
            check_mapi_and_addressbook_together(VIP.service_host("mapi", topology))


def check_cookie_lifetime(
    driver: str, run_dir: Path, max_age: str, refreshed: bool, seconds: int = 90
) -> None:
    """The balancer cookie of an lb-cookie pool with a `seconds` timeout: its Max-Age ("" for a session
    cookie) and whether later answers send it again (which makes Max-Age an idle timeout)."""
    with balancer_running(spec_for(driver, http=persistence("lb-cookie", seconds)), run_dir):
        client = Client(NAT)
        sent = []
        for _ in range(2):
            reply = client.request("/owa/")
            sent.append([v for v in reply.headers.get_all("Set-Cookie") or [] if v.startswith("lb_owa_ecp=")])
        assert len(sent[0]) == 1, sent
        assert SimpleCookie(sent[0][0])["lb_owa_ecp"]["max-age"] == max_age, sent[0]
        assert bool(sent[1]) == refreshed, sent
