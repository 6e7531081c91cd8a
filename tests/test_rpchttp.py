"""Outlook Anywhere on the mock CAS, driven by the lab's own blocking client (loadgen.wire.rpchttp) and, for
what that client never sends, by raw sockets: joining, calls, keep-alives, splits, bad input, shutdown."""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import textwrap
import time

import pytest
import trustme
from mockcas_helpers import ledger

from caslab import rts
from loadgen.binding import SourceAddress
from loadgen.wire.rpchttp import RpcHttpError, VirtualConnection

BASE = "127.0.14"
CAS01, CAS02 = f"{BASE}.11", f"{BASE}.12"
SOURCE = SourceAddress(f"{BASE}.201")
USER, PASSWORD = "user3@caslab.test", "caslab"
WAIT = 0.5  # the farm's pairing wait in these tests (seconds, not scaled)


def _client(host: str = CAS01, port: int = 8080, **kwargs: object) -> VirtualConnection:
    kwargs.setdefault("timeout", 5.0)
    return VirtualConnection((host, port), source=SOURCE, user=USER, password=PASSWORD, **kwargs)


def _rows(host: str, count: int, timeout: float = 5.0) -> list[dict]:
    """The CAS's ledger once it holds `count` rows (a channel's row is written when the channel ends)."""
    deadline = time.monotonic() + timeout
    while len(rows := ledger(host)) < count:
        assert time.monotonic() < deadline, f"{host} has {len(rows)} ledger rows, expected {count}: {rows}"
        time.sleep(0.02)
    return rows


# -- raw channels, for what the client never sends --------------------------------------------------
def _raw(
    method: str,
    host: str = CAS01,
    *,
    body: bytes = b"",
    length: int | None = None,
    path: str = "/rpc/rpcproxy.dll?outlook.caslab.test:6001",
    password: str = PASSWORD,
) -> socket.socket:
    sock = socket.create_connection((host, 8080), timeout=5, source_address=(SOURCE.ip, 0))
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    head = f"{method} {path} HTTP/1.1\r\nHost: mail.caslab.test\r\nAuthorization: Basic {auth}\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    sock.sendall(head.encode() + b"\r\n" + body)
    return sock


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _head(sock: socket.socket) -> tuple[int, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError(f"closed before an HTTP answer: {data!r}")
        data += chunk
    lines = data.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ")[1]), headers


def _pdu(sock: socket.socket) -> rts.Pdu:
    head = _read_exact(sock, rts.HEADER_LENGTH)
    return rts.decode_pdu(head + _read_exact(sock, rts.parse_header(head).frag_length - rts.HEADER_LENGTH))


def _closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True once the server closed the connection (whatever it sent before is skipped)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def _open_raw_pair(
    host: str = CAS01, *, in_first: bool = False
) -> tuple[socket.socket, socket.socket, bytes]:
    """A joined virtual connection on raw sockets: (OUT, IN, cookie); CONN/A3 and CONN/C2 already read."""
    cookie = rts.new_cookie()
    a1 = rts.conn_a1(cookie, rts.new_cookie())
    b1 = rts.conn_b1(cookie, rts.new_cookie(), rts.new_cookie())
    if in_first:
        in_ = _raw("RPC_IN_DATA", host, body=b1, length=1 << 30)
    out = _raw("RPC_OUT_DATA", host, body=a1, length=len(a1))
    assert _head(out)[0] == 200
    rts.parse_conn_a3(_pdu(out))
    if not in_first:
        in_ = _raw("RPC_IN_DATA", host, body=b1, length=1 << 30)
    rts.parse_conn_c2(_pdu(out))
    return out, in_, cookie


# -- a working virtual connection -------------------------------------------------------------------
def test_virtual_connection_answers_calls_on_the_out_channel(make_farm):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=WAIT)
    with _client() as vc:
        joined = vc.connect(out_request_id="r-out", in_request_id="r-in")
        assert joined.outcome == "ok" and joined.joined, joined
        assert (joined.out_channel.status, joined.out_channel.server, joined.out_channel.state) == (
            200,
            "CAS01",
            "new",
        )
        assert joined.in_channel.server == "CAS01"
        assert vc.call(1, b"hello") == b"hello"
        long_stub = os.urandom(20_000)  # four request fragments, four response fragments
        assert vc.call(2, long_stub) == long_stub
        assert vc.call(3) == b""
    rows = {r["request_id"]: r for r in _rows(CAS01, 2)}
    assert {k: (r["state"], r["session_key"]) for k, r in rows.items()} == {
        "r-out": ("new", vc.session_key),
        "r-in": ("own", vc.session_key),
    }
    # The client closed both channels: IN first (its client went), then OUT went with its partner.
    assert (rows["r-in"]["status"], rows["r-in"]["detail"]) == (499, "peer-closed")
    assert (rows["r-out"]["status"], rows["r-out"]["detail"]) == (200, "partner-closed")


def test_in_channel_first_joins_too_and_the_out_half_is_own(make_farm):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=WAIT)
    out, in_, cookie = _open_raw_pair(in_first=True)
    with out, in_:
        in_.sendall(b"".join(rts.encode_pdu(p) for p in rts.request_fragments(5, 0, b"ping-pong")))
        answer = _pdu(out)
        assert isinstance(answer, rts.ResponsePdu) and (answer.call_id, answer.stub) == (5, b"ping-pong")
    states = {r["state"] for r in _rows(CAS01, 2) if r["session_key"] == rts.cookie_text(cookie)}
    assert states == {"new", "own"}


def test_keep_alive_and_flow_control_ack_up_in_are_taken_in_silently(make_farm):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=WAIT)
    out, in_, _ = _open_raw_pair()
    with out, in_:
        ack = rts.FlowControlAck(bytes_received=4096, available_window=65536, channel_cookie=rts.new_cookie())
        in_.sendall(rts.keepalive(300_000) + rts.flow_control_ack(rts.Destination.OUT_PROXY, ack))
        in_.sendall(b"".join(rts.encode_pdu(p) for p in rts.request_fragments(9, 0, b"after them")))
        answer = _pdu(out)  # the first PDU down OUT since CONN/C2: no answer to either RTS PDU
        assert isinstance(answer, rts.ResponsePdu) and (answer.call_id, answer.stub) == (9, b"after them")


def test_keepalives_are_pinged_down_out_and_taken_up_in(make_farm):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=WAIT, time_scale=9000)  # OUT 900 s -> 0.1 s
    with _client() as vc:
        assert vc.connect().joined
        assert vc.keepalive_s == pytest.approx(720 / 9000)  # from CONN/A3: how often to ping IN
        assert rts.is_ping(vc.receive(timeout=2)) and vc.pings_received == 1
        assert vc.keep_alive()  # more than keepalive_s since the last PDU up IN: it pings
        assert vc.call(1, b"still here") == b"still here"  # the CAS took the ping in silently


def _announced_ms(host: str = CAS01) -> tuple[int, int]:
    """The connection time-out (ms) a CAS announces in CONN/A3 and in CONN/C2 of a new virtual connection."""
    cookie = rts.new_cookie()
    a1 = rts.conn_a1(cookie, rts.new_cookie())
    with _raw("RPC_OUT_DATA", host, body=a1, length=len(a1)) as out:
        assert _head(out)[0] == 200
        a3 = rts.parse_conn_a3(_pdu(out))
        b1 = rts.conn_b1(cookie, rts.new_cookie(), rts.new_cookie())
        with _raw("RPC_IN_DATA", host, body=b1, length=1 << 30):
            return a3, rts.parse_conn_c2(_pdu(out)).connection_timeout_ms


@pytest.mark.parametrize(
    ("minimum", "announced_s", "out_ping_s"),
    [(None, 720, 900), (120, 120, 120), (1000, 720, 900)],
    ids=["default", "min-connection-timeout-120", "min-above-the-defaults"],
)
def test_connection_timeout_is_announced_and_out_pinged_as_exchange_sets_it(
    make_farm, minimum, announced_s, out_ping_s
):
    time_scale = 3000  # 720 s -> 0.24 s, 900 s -> 0.3 s, 120 s -> 0.04 s
    make_farm(
        BASE, servers=1, rpc_pairing_wait_s=WAIT, time_scale=time_scale, rpc_min_connection_timeout_s=minimum
    )
    expected_ms = round(announced_s / time_scale * 1000)
    assert _announced_ms() == (expected_ms, expected_ms)
    with _client() as vc:
        assert vc.connect().joined
        assert vc.keepalive_s == pytest.approx(announced_s / time_scale)
        seen = [time.monotonic()]
        for _ in range(5):  # OUT is silent but for the CAS's pings: they come at its interval
            assert rts.is_ping(vc.receive(timeout=2))
            seen.append(time.monotonic())
        # The median gap: one ping held up by this process (a garbage collection) moves two gaps, not it.
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        assert statistics.median(gaps) == pytest.approx(out_ping_s / time_scale, rel=0.3)


def test_the_client_takes_in_out_pings_while_idle_and_finds_its_channels_cut(make_farm):
    farm = make_farm(BASE, servers=1, rpc_pairing_wait_s=WAIT, time_scale=9000)  # OUT pinged every 0.1 s
    with _client() as vc:
        assert vc.connect().joined
        time.sleep(0.35)  # idle: the CAS's pings wait in the socket, as they do while Outlook's user thinks
        assert vc.check() == "" and vc.pings_received >= 2 and vc.joined
        assert len(vc.sockets()) == 2 and vc.next_keepalive_at() < time.monotonic()  # a ping up IN is due
        assert vc.keep_alive() and vc.next_keepalive_at() > time.monotonic()
        farm.call(farm["CAS01"].close())  # the channels end under the client without an answer
        deadline = time.monotonic() + 5
        while not (seen := vc.check()):
            assert time.monotonic() < deadline, "the cut was never found"
            time.sleep(0.01)
        assert seen in ("eof", "reset") and not vc.joined and vc.sockets() == []


def test_both_halves_on_one_cas_of_two_are_joined(make_farm):
    make_farm(BASE, servers=2, rpc_pairing_wait_s=WAIT)
    with _client(CAS02) as vc:
        assert vc.connect().joined
        assert vc.call(7, b"x") == b"x"
    assert sorted(r["state"] for r in _rows(CAS02, 2)) == ["new", "own"]
    assert ledger(CAS01) == []


# -- splits -------------------------------------------------------------------------------------------
def test_halves_on_two_cas_are_closed_after_the_pairing_wait(make_farm):
    make_farm(BASE, servers=2, rpc_pairing_wait_s=WAIT)
    started = time.monotonic()
    with _client(CAS01, out_address=(CAS02, 8080)) as vc:
        split = vc.connect(out_request_id="out", in_request_id="in")
        with pytest.raises(RpcHttpError, match="not open"):
            vc.call(1, b"x")
    assert time.monotonic() - started >= WAIT
    assert (split.outcome, split.detail) == ("foreign", "channel-split")
    assert (split.out_channel.server, split.in_channel.server) == ("CAS02", "CAS01")
    assert (split.in_channel.status, split.in_channel.state) == (503, "foreign")
    [in_row] = _rows(CAS01, 1)
    [out_row] = _rows(CAS02, 1)
    for row, request_id, status in ((in_row, "in", 503), (out_row, "out", 200)):
        assert (row["request_id"], row["state"], row["detail"]) == (request_id, "foreign", "channel-split")
        assert (row["session_key"], row["status"]) == (vc.session_key, status)


def test_a_lone_out_half_is_cut_short_after_the_pairing_wait(make_farm):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=WAIT)
    a1 = rts.conn_a1(rts.new_cookie(), rts.new_cookie())
    with _raw("RPC_OUT_DATA", body=a1, length=len(a1)) as out:
        status, headers = _head(out)
        assert status == 200 and headers["Content-Type"] == "application/rpc"
        assert headers["Content-Length"] == str(1 << 30)
        assert rts.parse_conn_a3(_pdu(out)) == 720_000  # time_scale 1: the real 12 minutes
        with pytest.raises(EOFError):  # no CONN/C2: the stream ends long before its Content-Length
            _pdu(out)
    [row] = _rows(CAS01, 1)
    assert (row["state"], row["detail"]) == ("foreign", "channel-split")


# -- one half dropping ends the other ------------------------------------------------------------------
def test_in_dropping_ends_out(make_farm):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=WAIT)
    out, in_, _ = _open_raw_pair()
    with out:
        in_.close()
        assert _closed(out)
    rows = {r["detail"]: r["state"] for r in _rows(CAS01, 2)}
    assert rows == {"peer-closed": "own", "partner-closed": "new"}


def test_out_dropping_ends_in(make_farm):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=WAIT, time_scale=9000)  # the next OUT ping finds it gone
    out, in_, _ = _open_raw_pair()
    with in_:
        out.close()
        assert _closed(in_)
    rows = {(r["detail"], r["status"]) for r in _rows(CAS01, 2)}
    assert rows == {("peer-closed", 499), ("partner-closed", 200)}


# -- bad input -----------------------------------------------------------------------------------------
A1 = rts.conn_a1(rts.new_cookie(), rts.new_cookie())
B1 = rts.conn_b1(rts.new_cookie(), rts.new_cookie(), rts.new_cookie())
NIL_B1 = rts.conn_b1(bytes(16), bytes(16), bytes(16))
REQUEST = rts.encode_pdu(rts.RequestPdu(1, 0))
GiB = 1 << 30
PORT_6003, OTHER_DLL = "/rpc/rpcproxy.dll?x:6003", "/rpc/other.dll?x:6001"
# Digits that int() refuses: a superscript two (str.isdigit() says yes), and more than 4,300 of them.
PORT_SUPERSCRIPT, PORT_HUGE = "/rpc/rpcproxy.dll?x:%C2%B2", "/rpc/rpcproxy.dll?x:" + "6" * 5000


@pytest.mark.parametrize(
    ("method", "kwargs", "status", "state", "detail"),
    [
        ("GET", {"length": 0}, 405, "invalid", "method GET"),
        ("RPC_IN_DATA", {"length": GiB, "password": "wrong"}, 401, "none", "unauthenticated"),
        ("RPC_OUT_DATA", {"length": 76, "body": A1, "path": PORT_6003}, 403, "invalid", "6003"),
        ("RPC_OUT_DATA", {"length": 76, "body": A1, "path": PORT_SUPERSCRIPT}, 403, "invalid", "not allowed"),
        ("RPC_OUT_DATA", {"length": 76, "body": A1, "path": PORT_HUGE}, 403, "invalid", "not allowed"),
        ("RPC_OUT_DATA", {"length": 76, "body": A1, "path": OTHER_DLL}, 404, "invalid", "path"),
        ("RPC_OUT_DATA", {}, 411, "invalid", "no Content-Length"),
        ("RPC_OUT_DATA", {"length": 120, "body": A1}, 400, "invalid", "Content-Length 120"),
        ("RPC_IN_DATA", {"length": 3 * GiB}, 400, "invalid", "Content-Length 3221225472"),
        ("RPC_OUT_DATA", {"length": 76, "body": bytes(range(76))}, 400, "invalid", "protocol-error"),
        ("RPC_OUT_DATA", {"length": 76, "body": A1[:40]}, 400, "invalid", "truncated or missing"),
        ("RPC_IN_DATA", {"length": GiB, "body": A1}, 400, "invalid", "expected VERSION, COOKIE, COOKIE, CHA"),
        ("RPC_IN_DATA", {"length": GiB, "body": REQUEST}, 400, "invalid", "expected an RTS PDU"),
        ("RPC_IN_DATA", {"length": GiB, "body": NIL_B1}, 400, "invalid", "nil virtual-connection cookie"),
    ],
)
def test_bad_requests_get_an_error_and_an_invalid_row(make_farm, method, kwargs, status, state, detail):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=WAIT)
    with _raw(method, **kwargs) as sock:
        got, headers = _head(sock)
    assert got == status
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Basic")
    [row] = _rows(CAS01, 1)
    assert row["state"] == state and detail in row["detail"], row


def test_a_client_vanishing_mid_pdu_is_recorded_and_the_cas_lives_on(make_farm):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=5.0)
    _raw("RPC_IN_DATA", body=B1[:50], length=GiB).close()
    [row] = _rows(CAS01, 1)
    assert (row["state"], row["status"], row["detail"]) == ("invalid", 499, "peer-closed")
    with _client() as vc:
        assert vc.connect().joined


def test_garbage_after_the_join_ends_the_virtual_connection(make_farm):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=WAIT)
    out, in_, _ = _open_raw_pair()
    with out, in_:
        in_.sendall(rts.conn_a1(rts.new_cookie(), rts.new_cookie()))  # an RTS PDU the IN channel never takes
        assert _head(in_)[0] == 400
        assert _closed(out)
    rows = {r["state"]: r["detail"] for r in _rows(CAS01, 2)}
    assert rows["new"] == "partner-closed"
    assert rows["invalid"].startswith("protocol-error: unexpected RTS PDU")


def test_a_second_out_channel_for_one_cookie_is_refused(make_farm):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=WAIT)
    first = _raw("RPC_OUT_DATA", body=A1, length=76)
    second = _raw("RPC_OUT_DATA", body=A1, length=76)
    with first, second:
        assert _head(first)[0] == 200
        assert _head(second)[0] == 400
    assert "second OUT channel" in _rows(CAS01, 1)[0]["detail"]


# -- shutdown -------------------------------------------------------------------------------------------
def test_close_ends_every_open_channel_promptly(make_farm):
    farm = make_farm(BASE, servers=1, rpc_pairing_wait_s=30.0)
    out, in_, _ = _open_raw_pair()
    lone = _raw("RPC_OUT_DATA", body=A1, length=76)  # waits up to 30 s for its partner
    assert _head(lone)[0] == 200
    opening = _raw("RPC_IN_DATA", length=GiB)  # has not sent its CONN/B1 yet
    started = time.monotonic()
    farm.call(farm.servers[0].cas.close())
    with out, in_, lone, opening:
        assert _closed(out) and _closed(in_) and _closed(lone)
        assert _head(opening)[0] == 503
    assert time.monotonic() - started < 5  # not the 30 s pairing wait
    details = sorted(r["detail"] for r in _rows(CAS01, 4))
    assert details == ["cas-closing"] * 4


# -- TLS and gevent -------------------------------------------------------------------------------------
def test_client_over_tls(make_farm, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("mail.caslab.test")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    make_farm(BASE, servers=1, cert_file=tmp_path / "cert.pem", key_file=tmp_path / "key.pem")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with _client(port=8443, host_name="mail.caslab.test", ssl_context=context) as vc:
        assert vc.connect().joined
        assert vc.call(1, b"secret") == b"secret"


GEVENT_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, sys, time
    import gevent
    from loadgen.binding import SourceAddress
    from loadgen.wire.rpchttp import VirtualConnection

    finished = {}

    def user(name, out_host):
        vc = VirtualConnection(("%(cas01)s", 8080), out_address=(out_host, 8080), timeout=10,
                               source=SourceAddress("%(source)s"), user="%(user)s", password="caslab")
        with vc:
            result = vc.connect()
            answers = [vc.call(n, b"x" * n) == b"x" * n for n in range(20)] if result.joined else []
        finished[name] = (time.monotonic(), result.outcome, all(answers) and len(answers) == 20)

    gevent.joinall([gevent.spawn(user, "split", "%(cas02)s"), gevent.spawn(user, "joined", "%(cas01)s")])
    print(json.dumps(finished))
    """
)


def test_client_is_cooperative_under_gevent(make_farm):
    """A split virtual connection waits out the pairing wait in one greenlet while another one works."""
    make_farm(BASE, servers=2, rpc_pairing_wait_s=WAIT)
    script = GEVENT_SCRIPT % {"cas01": CAS01, "cas02": CAS02, "source": SOURCE.ip, "user": USER}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    finished = json.loads(run.stdout)
    assert finished["joined"][1:] == ["ok", True] and finished["split"][1] == "foreign"
    assert finished["joined"][0] < finished["split"][0]  # the waiting greenlet did not block the other
