"""Idle timeouts on the real balancers, in front of three real CAS: a connection idle longer than its
timeout is closed by the balancer within a bounded time, and one that stays busy is not. Per driver:
a kept-alive client connection (client_idle), an Outlook Anywhere channel pair (the timeout that governs
it on that balancer, or none), and a MAPI connection (one TCP stream: the shorter of the two).

The timeouts are the lab's seconds (already time-scaled): 1 s. A close is seen as EOF or a reset on the
client's socket, polled; the bound allows for Envoy, which waits up to its delayed_close_timeout (1 s)
for the client's FIN before it closes."""

from __future__ import annotations

import dataclasses
import http.client
import select
import socket
import threading
import time
from collections.abc import Callable

import pytest

from caslab.vocab import HTTP_SERVICES
from lab.model import BalancerSpec, Persistence, Timeouts
from loadgen.binding import SourceAddress
from loadgen.wire.rpchttp import VirtualConnection

pytest.register_assert_rewrite("lbchecks")

from lbchecks import VIP, balancer_running, local_farm_running, spec_for  # noqa: E402

pytestmark = pytest.mark.slow

IDLE = 1.0  # seconds
LATE = 1.0 + 0.5  # Envoy's delayed close, and room for a loaded machine
WATCH = IDLE + LATE + 1.0  # how long a connection that must stay open is watched


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with local_farm_running(tmp_path_factory.mktemp("idle-farm")) as running:
        yield running


def timed_spec(driver: str, timeouts: Timeouts, rpchttp: Persistence | None = None) -> BalancerSpec:
    """None-all (RPC/HTTP on source-ip when its channels must meet on one CAS) with `timeouts` as the
    scenario's own; on Traefik, which cannot time out TCP, as every HTTP service's own, one VIP each."""
    overrides = {"rpchttp": rpchttp} if rpchttp else None
    if driver == "traefik":
        spec = spec_for(driver, overrides=overrides, topology="vip-per-service")
        return dataclasses.replace(spec, timeouts=Timeouts(services=dict.fromkeys(HTTP_SERVICES, timeouts)))
    return dataclasses.replace(spec_for(driver, overrides=overrides), timeouts=timeouts)


def closed_within(sockets: dict[str, socket.socket], limit: float) -> dict[str, float]:
    """Seconds until each socket saw EOF or a reset, for those that did within `limit` (whatever a
    socket receives before that, e.g. a balancer's own error answer, is read and dropped)."""
    start = time.monotonic()
    closed: dict[str, float] = {}
    while len(closed) < len(sockets) and time.monotonic() - start < limit:
        waiting = [s for name, s in sockets.items() if name not in closed]
        for sock in select.select(waiting, [], [], 0.05)[0]:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                closed[next(n for n, s in sockets.items() if s is sock)] = time.monotonic() - start
    return closed


def while_busy(work: Callable[[], None], seconds: float) -> int:
    """Run `work` every 0.3 s for `seconds`; how many times it ran (it raises if its connection died)."""
    done, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        work()
        done += 1
        time.sleep(0.3)  # the pace of the busy client, not a wait for readiness
    return done


def watched(sockets: dict[str, socket.socket], limit: float) -> tuple[threading.Thread, dict]:
    """`closed_within` in a thread, so that a busy connection can work meanwhile."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(closed_within(sockets, limit)), daemon=True)
    thread.start()
    return thread, result


# ---- a kept-alive client connection: client_idle ----------------------------------------------------


def kept_alive(host: str, source: str) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection(host, VIP.http_port, source_address=(source, 0), timeout=10)
    get(conn)
    return conn


def get(conn: http.client.HTTPConnection) -> None:
    conn.request("GET", "/owa/", headers={"Host": "mail.caslab.test"})
    response = conn.getresponse()
    response.read()
    assert response.getheader("X-CasLab-Server"), response.status  # a CAS answered, not the balancer


@pytest.mark.parametrize("driver", ["haproxy", "nginx", "envoy", "traefik"])
def test_an_idle_kept_alive_client_connection_is_closed_and_a_busy_one_is_not(farm, tmp_path, driver):
    spec = timed_spec(driver, Timeouts(client_idle_s=IDLE))
    host = VIP.service_host("owa", spec.topology)
    with balancer_running(spec, tmp_path):
        idle, busy = kept_alive(host, "127.16.20.1"), kept_alive(host, "127.16.20.2")
        busy_socket = busy.sock
        thread, closed = watched({"idle": idle.sock}, WATCH)
        requests = while_busy(lambda: get(busy), WATCH)
        thread.join()
        assert busy.sock is busy_socket and requests >= 5, "the busy connection kept its one socket"
        assert "idle" in closed, f"{driver} left an idle connection open for {WATCH:g} s"
        assert IDLE * 0.8 <= closed["idle"] <= IDLE + LATE, closed


# ---- an Outlook Anywhere channel pair: what governs a request in flight -----------------------------


def channel_pair(host: str, source: str) -> VirtualConnection:
    vc = VirtualConnection(
        (host, VIP.http_port), source=SourceAddress(source), user="user1@caslab.test", password="caslab",
        host_name="mail.caslab.test", timeout=10,
    )  # fmt: skip
    result = vc.connect()
    assert result.joined, result
    return vc


@pytest.mark.parametrize(
    ("driver", "timeouts", "cut"),
    [
        ("haproxy", Timeouts(server_idle_s=IDLE), True),  # timeout server: both channels wait on the CAS
        ("haproxy", Timeouts(client_idle_s=IDLE), False),  # timeout client: not while a request is on
        ("nginx", Timeouts(client_idle_s=IDLE), True),  # client_body_timeout: the IN channel's body
        ("nginx", Timeouts(server_idle_s=IDLE), True),  # proxy_read_timeout: the OUT channel's answer
        ("envoy", Timeouts(server_idle_s=IDLE), True),  # stream_idle_timeout: the shorter side
        ("traefik", Timeouts(server_idle_s=IDLE), False),  # no timer once headers are sent or a body streams
    ],
)
def test_an_idle_rpc_channel_pair_is_cut_only_by_what_governs_it(farm, tmp_path, driver, timeouts, cut):
    spec = timed_spec(driver, timeouts, rpchttp=Persistence("source-ip"))
    host = VIP.service_host("rpchttp", spec.topology)
    with balancer_running(spec, tmp_path):
        idle, busy = channel_pair(host, "127.16.21.1"), channel_pair(host, "127.16.21.2")
        try:
            # The CAS's own keep-alives on OUT come every 12 s (720 s at time_scale 60): later than this.
            thread, closed = watched({"out": idle._out.sock, "in": idle._in.sock}, WATCH)
            calls = while_busy(lambda: busy.call(opnum=10, stub=b"\0" * 64), WATCH)
            thread.join()
        finally:
            idle.close()
            busy.close()
    assert calls >= 5 and busy.pings_received == 0, "RPCs both ways kept the busy pair open"
    if cut:
        assert closed and min(closed.values()) <= IDLE + LATE, closed
    else:
        assert closed == {}, f"{driver} cut an idle channel ({closed}) with {timeouts}"


# ---- a MAPI connection: one TCP stream, the shorter side -------------------------------------------


def mapi(source: str) -> tuple[socket.socket, Callable[[], None]]:
    sock = socket.create_connection((VIP.host, VIP.mapi_port), timeout=10, source_address=(source, 0))
    lines = sock.makefile("rb")

    def ping() -> None:
        sock.sendall(b'{"op":"ping","rid":"t"}\n')
        assert b'"server"' in lines.readline()

    ping()
    return sock, ping


@pytest.mark.parametrize("driver", ["haproxy", "nginx", "envoy"])
def test_an_idle_mapi_connection_is_closed_and_a_busy_one_is_not(farm, tmp_path, driver):
    with balancer_running(timed_spec(driver, Timeouts(client_idle_s=5, server_idle_s=IDLE)), tmp_path):
        (idle, _), (busy, ping) = mapi("127.16.22.1"), mapi("127.16.22.2")
        with idle, busy:
            thread, closed = watched({"idle": idle}, WATCH)
            pings = while_busy(ping, WATCH)
            thread.join()
    assert pings >= 5
    assert "idle" in closed and IDLE * 0.8 <= closed["idle"] <= IDLE + LATE, closed
