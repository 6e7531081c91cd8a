"""MAPI (RPC Client Access) and Address Book: the line protocol, session state per CAS, the ledger, and
the blocking client. Every connection comes from and goes to 127.0.15.x."""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caslab.records import PEER_CLOSED
from loadgen.wire.mapi import AddressBookConnection, LineConnection, MapiConnection
from mockcas.services.lines import MAX_LINE_BYTES
from mockcas.services.mapi import SESSION_IDLE_S

BASE = "127.0.15"
CAS01, CAS02 = f"{BASE}.11", f"{BASE}.12"
MAPI, AB = 59531, 59532
CLIENT = f"{BASE}.101"  # the source address of every test client
PASSWORD = "caslab"


def mapi(host: str = CAS01, session: str = "s1") -> MapiConnection:
    return MapiConnection((host, MAPI), source_ip=CLIENT, session=session, timeout=5)


def addressbook(host: str = CAS01, session: str = "s1") -> AddressBookConnection:
    return AddressBookConnection((host, AB), source_ip=CLIENT, session=session, timeout=5)


def raw_connection(host: str = CAS01, port: int = MAPI) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((CLIENT, 0))
    sock.connect((host, port))
    return sock


def read_reply(sock: socket.socket) -> dict | None:
    """The reply line, or None when the server closed the connection without one."""
    data = sock.makefile("rb").readline()
    return json.loads(data) if data else None


def rows(farm, name: str = "CAS01", *, partings: bool = False) -> list:
    """The CAS's ledger rows; without the rows of connections ending (a goodbye, or a connection cut
    between lines) unless `partings`."""
    return [
        r
        for r in farm[name].ledger.rows()
        if partings or not (r.detail == "goodbye" or (r.detail == PEER_CLOSED and r.state == "none"))
    ]


# -- MAPI on one CAS ------------------------------------------------------------------------------------


def test_session_flow_on_one_cas_writes_new_then_own_rows(make_farm):
    farm = make_farm(BASE, servers=1)
    with mapi() as conn:
        logon = conn.logon("user1", PASSWORD, rid="r1")
        handle = logon.reply["handle"]
        steps = [
            conn.rop(handle, "x" * 10, rid="r2"),
            conn.ping(handle, rid="r3"),
            conn.logoff(handle, rid="r4"),
        ]
        after = conn.rop(handle, rid="r5")
    assert (logon.outcome, logon.server, logon.reply["user"]) == ("ok", "CAS01", "user1@caslab.test")
    assert steps[0].reply["bytes"] == 10
    assert [s.outcome for s in steps] == ["ok"] * 3
    assert (after.status, after.detail, after.reply["state"]) == (410, "session-expired", "expired")
    assert [(r.request_id, r.state, r.status, r.session_key, r.client_ip) for r in rows(farm)] == [
        ("r1", "new", 0, "s1", CLIENT),
        ("r2", "own", 0, "s1", CLIENT),
        ("r3", "own", 0, "s1", CLIENT),
        ("r4", "own", 0, "s1", CLIENT),
        ("r5", "expired", 410, "s1", CLIENT),
    ]


def test_a_payload_that_json_allows_but_is_no_text_is_still_counted(make_farm):
    make_farm(BASE, servers=1)
    with mapi() as conn:
        handle = conn.logon("user1", PASSWORD).reply["handle"]
    with raw_connection() as sock:
        # "\ud800", a lone surrogate: valid JSON, but no UTF-8 text.
        sock.sendall(json.dumps({"op": "rop", "handle": handle, "payload": "\ud800"}).encode() + b"\n")
        reply = read_reply(sock)
    assert reply is not None and (reply["status"], reply["state"], reply["bytes"]) == (0, "own", 3)


def test_wrong_password_fails_logon_and_makes_no_session(make_farm):
    farm = make_farm(BASE, servers=1)
    with mapi() as conn:
        failed = conn.logon("user1", "wrong")
    assert (failed.status, failed.outcome, failed.detail) == (401, "error", "logon-failed")
    assert "handle" not in failed.reply
    assert not farm["CAS01"].tcp_services["mapi"].has_session("user1@caslab.test")
    assert [(r.state, r.status) for r in rows(farm)] == [("none", 401)]


def test_several_connections_of_one_session_on_one_cas_are_all_own(make_farm):
    farm = make_farm(BASE, servers=1)
    first = mapi()
    handle = first.logon("user2", PASSWORD).reply["handle"]
    others = [mapi() for _ in range(3)]
    exchanges = [ex for conn in others for ex in (conn.connect(handle), conn.rop(handle, "payload"))]
    exchanges.append(first.rop(handle))
    for conn in [first, *others]:
        conn.close()
    assert {(ex.server, ex.outcome) for ex in exchanges} == {("CAS01", "ok")}
    states = [r.state for r in rows(farm)]
    assert states == ["new"] + ["own"] * 7


def test_session_expires_when_idle_and_pings_keep_it_alive(make_farm):
    farm = make_farm(BASE, servers=1, time_scale=3600)  # idle expiry: 1800 s / 3600 = 0.5 s
    idle_s = SESSION_IDLE_S / 3600
    with mapi() as conn:
        kept = conn.logon("user3", PASSWORD).reply["handle"]
        for _ in range(6):  # 6 x idle/4: longer than the idle period in all, never idle for a whole one
            time.sleep(idle_s / 4)
            assert conn.ping(kept).outcome == "ok"
        assert conn.rop(kept).reply["state"] == "own"
        time.sleep(idle_s * 1.5)  # the timer under test, not a wait for readiness
        assert not farm["CAS01"].tcp_services["mapi"].has_session("user3@caslab.test")
        expired = conn.rop(kept)
    assert (expired.status, expired.detail, expired.reply["state"]) == (410, "session-expired", "expired")


# -- two CAS ------------------------------------------------------------------------------------------


def test_handle_from_cas01_presented_to_cas02_is_unknown_and_foreign(make_farm):
    farm = make_farm(BASE, servers=2)
    with mapi(CAS01) as first, mapi(CAS02) as second:
        handle = first.logon("user4", PASSWORD).reply["handle"]
        moved = [second.connect(handle, rid="c"), second.rop(handle, rid="r")]
        still_home = first.rop(handle)
    for ex in moved:
        assert (ex.server, ex.status, ex.detail, ex.outcome) == (
            "CAS02",
            404,
            "context-handle-unknown",
            "foreign",
        )
    assert still_home.outcome == "ok" and still_home.server == "CAS01"
    assert [(r.request_id, r.state, r.detail) for r in rows(farm, "CAS02")] == [
        ("c", "foreign", "context-handle-unknown"),
        ("r", "foreign", "context-handle-unknown"),
    ]


def test_address_book_bind_is_own_where_the_mapi_session_is_and_cold_elsewhere(make_farm):
    farm = make_farm(BASE, servers=2, ab_referral_cost_ms=30)
    with mapi(CAS01) as store:
        store.logon("user5", PASSWORD)
    with addressbook(CAS01) as home, addressbook(CAS02) as away:
        own = home.bind("user5", PASSWORD, rid="b1")
        cold = away.bind("user5", PASSWORD, rid="b2")
    assert (own.server, own.outcome, own.reply["referred"]) == ("CAS01", "ok", False)
    assert (cold.server, cold.outcome, cold.reply["referred"]) == ("CAS02", "cold", True)
    assert cold.latency_ms >= 30  # the referral round trip is paid
    assert [(r.request_id, r.state) for r in rows(farm, "CAS01") if r.service == "addressbook"] == [
        ("b1", "own")
    ]
    assert [(r.request_id, r.state) for r in rows(farm, "CAS02")] == [("b2", "cold")]


def test_address_book_resolves_names_after_a_bind_only(make_farm):
    farm = make_farm(BASE, servers=1)
    with addressbook() as conn:
        early = conn.resolve(["user1"])
        conn.bind("CASLAB\\user6", PASSWORD)
        found = conn.resolve(["user6", "User7@caslab.test", "nobody"])
        bad = conn.resolve([])
        pinged = conn.ping()
    assert (early.status, early.detail) == (409, "not-bound")
    assert found.reply["resolved"] == ["user6@caslab.test", "user7@caslab.test", None]
    assert (bad.status, bad.detail) == (400, "bad-request")
    assert pinged.reply["state"] == "own"
    assert [r.state for r in rows(farm)] == ["invalid", "cold", "own", "invalid", "own"]


# -- bad input, vanishing clients, closing ------------------------------------------------------------


def test_oversized_line_is_answered_and_dropped_but_a_line_of_exactly_the_limit_is_served(make_farm):
    farm = make_farm(BASE, servers=1)
    with mapi() as conn:
        handle = conn.logon("user8", PASSWORD).reply["handle"]
    prefix = json.dumps({"op": "rop", "handle": handle, "payload": ""})[:-2]  # ends with the opening quote
    exact = prefix + "x" * (MAX_LINE_BYTES - len(prefix) - 3) + '"}\n'
    assert len(exact.encode()) == MAX_LINE_BYTES
    with raw_connection() as sock:
        sock.sendall(exact.encode() + b"x" * (3 * MAX_LINE_BYTES) + b'\n{"op": "ping"}\n')
        replies = sock.makefile("rb")
        served, too_long, after = (json.loads(replies.readline()) for _ in range(3))
    assert served["bytes"] == MAX_LINE_BYTES - len(prefix) - 3
    assert (too_long["status"], too_long["error"], too_long["server"]) == (413, "line-too-long", "CAS01")
    assert after["status"] == 0  # the rest of the long line was dropped; the connection goes on
    assert [(r.state, r.detail) for r in rows(farm)][1:] == [
        ("own", ""),
        ("invalid", "line-too-long"),
        ("none", ""),
    ]


def test_half_line_and_reset_mid_line_leave_invalid_rows(make_farm):
    farm = make_farm(BASE, servers=1)
    with raw_connection() as sock:
        sock.sendall(b'{"op": "ping"')
        sock.shutdown(socket.SHUT_WR)
        half = read_reply(sock)
    assert (half["status"], half["error"]) == (400, "half-line")
    with raw_connection() as sock:
        sock.sendall(b'{"op": "lo')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close -> RST
    _wait_for_rows(farm, 2)  # the reset reaches the server some time after close()
    with raw_connection() as sock:  # a client leaving between lines is no request
        sock.sendall(b'{"op": "ping"}\n')
        read_reply(sock)
    with mapi() as conn:
        assert conn.ping().outcome == "ok"
    assert [(r.state, r.status, r.detail) for r in rows(farm)] == [
        ("invalid", 400, "half-line"),
        ("invalid", 499, "peer-closed"),
        ("none", 0, ""),
        ("none", 0, ""),
    ]


def _wait_for_rows(farm, count: int, timeout: float = 5.0, *, partings: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while len(rows(farm, partings=partings)) < count:
        assert time.monotonic() < deadline, f"the ledger never reached {count} rows"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"\xff\xfe not utf-8\n", "bad-request"),
        (b"[" * 50_000 + b"\n", "bad-request"),  # deeper than the JSON parser's recursion limit
        (b'"just a string"\n', "bad-request"),
        (b'{"op": 7}\n', "bad-request"),
        (b'{"op": "ping", "rid": 12}\n', "bad-request"),
        (b'{"op": "logon", "user": "user1"}\n', "bad-request"),
        (b'{"op": "connect", "handle": "not a handle"}\n', "context-handle-unknown"),
        (b'{"op": "explode"}\n', "unknown-op"),
    ],
)
def test_bad_lines_get_an_error_reply_on_an_open_connection(make_farm, line, error):
    farm = make_farm(BASE, servers=1)
    with raw_connection() as sock:
        sock.sendall(line + b'{"op": "ping"}\n')
        replies = sock.makefile("rb")
        bad, good = json.loads(replies.readline()), json.loads(replies.readline())
    assert bad["error"] == error and bad["status"] >= 400 and bad["server"] == "CAS01"
    assert good["status"] == 0
    assert [r.detail for r in rows(farm)] == [error, ""]


def test_closing_the_service_closes_open_connections(make_farm):
    farm = make_farm(BASE, servers=1)
    with raw_connection() as sock:
        sock.sendall(b'{"op": "ping"}\n')
        replies = sock.makefile("rb")
        assert json.loads(replies.readline())["status"] == 0
        farm.call(farm["CAS01"].tcp_services["mapi"].close())
        assert replies.readline() == b""


# -- property: arbitrary lines ---------------------------------------------------------------------------

_ops = st.sampled_from(["logon", "connect", "rop", "logoff", "bind", "resolve"]) | st.text(
    max_size=10
).filter(lambda op: op not in ("ping", "bye"))
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
# Lines that are no valid request: raw bytes, JSON that is no object, and objects whose op is unknown
# or lacks or mistypes a string field it needs (every op here needs one; only ping and bye need none).
_raw = st.binary(max_size=200).map(lambda b: b.replace(b"\n", b""))
_not_objects = _json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode())
_bad_objects = st.fixed_dictionaries(
    {"op": _ops},
    optional={
        "user": _json_values.filter(lambda v: not isinstance(v, str)),
        "handle": _json_values,
        "rid": st.text(),
    },
).map(lambda d: json.dumps(d).encode())


def test_arbitrary_lines_get_an_error_and_a_ledger_row_and_never_kill_the_listener(make_farm):
    farm = make_farm(BASE, servers=1)  # one farm for all examples

    @settings(max_examples=150, deadline=None)
    @given(line=_raw | _not_objects | _bad_objects, port=st.sampled_from([MAPI, AB]))
    def check(line: bytes, port: int) -> None:
        before = len(rows(farm))
        with raw_connection(port=port) as sock:
            sock.sendall(line + b"\n")
            reply = read_reply(sock)
        new = rows(farm)[before:]
        assert reply is not None and len(new) == 1
        assert reply["server"] == "CAS01" and reply["status"] >= 400 and new[0].status == reply["status"]
        assert new[0].detail == reply["error"] and new[0].request_id == reply.get("rid", "")
        with raw_connection(port=port) as sock:  # the listener still serves
            sock.sendall(b'{"op": "ping"}\n')
            assert read_reply(sock)["status"] == 0

    check()


# -- goodbyes, cuts and TCP keep-alives ---------------------------------------------------------------


def test_a_connection_closed_without_goodbye_leaves_a_peer_closed_row_and_one_with_goodbye_none(make_farm):
    farm = make_farm(BASE, servers=1)
    polite = mapi(session="polite")
    assert polite.ping(rid="p1").ok
    assert polite.goodbye(rid="p2").outcome == "ok"
    assert polite.check() is None and not polite.connected
    rude = MapiConnection((CAS01, MAPI), source_ip=CLIENT, session="rude", run_id="run-7", timeout=5)
    assert rude.ping(rid="r1").ok
    rude.close()  # no goodbye: to the CAS, a cut
    with raw_connection():  # a connection that carries nothing (a health check) leaves no row
        pass
    _wait_for_rows(farm, 4, partings=True)
    assert [
        (r.request_id, r.session_key, r.state, r.status, r.detail, r.run_id)
        for r in rows(farm, partings=True)
    ] == [
        ("p1", "polite", "none", 0, "", ""),
        ("p2", "polite", "none", 0, "goodbye", ""),
        ("r1", "rude", "none", 0, "", "run-7"),
        ("", "rude", "none", 499, "peer-closed", "run-7"),
    ]
    cut = rows(farm, partings=True)[-1]
    assert cut.client_ip == CLIENT and cut.latency_ms > 0  # from the connection's opening to its end


def test_connections_the_cas_closes_itself_leave_no_peer_closed_row(make_farm):
    farm = make_farm(BASE, servers=1)
    conn = mapi()
    assert conn.ping().ok
    farm.call(farm["CAS01"].tcp_services["mapi"].close())
    assert conn.call("ping").outcome == "cut"  # the client cannot tell a stopping CAS from a balancer
    assert [r.detail for r in rows(farm, partings=True)] == [""]


def test_the_client_finds_a_connection_closed_or_reset_under_it_without_sending(make_farm):
    make_farm(BASE, servers=1)
    with socket.create_server((CLIENT, 0)) as listener:  # stands for a balancer that cuts idle connections
        for linger, seen in ((False, "eof"), (True, "reset")):
            conn = LineConnection(listener.getsockname(), source_ip=CLIENT, timeout=2)
            conn._connect()
            accepted, _ = listener.accept()
            assert conn.check() is None  # open and well
            if linger:
                accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            accepted.close()
            deadline = time.monotonic() + 5
            while (found := conn.check()) is None:
                assert time.monotonic() < deadline, "the cut was never found"
                time.sleep(0.01)
            assert (found.outcome, found.detail, found.rid, found.server) == ("cut", seen, "", "")
            assert not conn.connected


def _keepalive_probes_sent() -> int:
    """TCP keep-alive probes this network namespace's kernel has sent (TcpExt TCPKeepAlive)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:], strict=True))["TCPKeepAlive"])
    raise AssertionError("no TcpExt counters")


@pytest.mark.parametrize("port", [MAPI, AB])
def test_idle_connections_get_tcp_keepalive_probes_after_the_scaled_keepalive_time(make_farm, port):
    # KeepAliveTime 2 h at time scale 7200: the CAS's kernel probes after 1 s of silence.
    make_farm(BASE, servers=1, time_scale=7200, tcp_keepalive_s=7200)
    with raw_connection(port=port) as sock:
        sock.sendall(b'{"op": "ping"}\n')
        assert read_reply(sock)["status"] == 0
        ss = subprocess.run(
            ["ss", "-tno", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True
        )
        assert "timer:(keepalive," in ss.stdout, ss.stdout  # the CAS's end of the connection keeps one
        before = _keepalive_probes_sent()
        deadline = time.monotonic() + 10
        while _keepalive_probes_sent() == before:  # probes are packets on the wire, answered by our kernel
            assert time.monotonic() < deadline, "no keep-alive probe was sent"
            time.sleep(0.1)
        sock.sendall(b'{"op": "ping"}\n')  # the connection is alive and well after its probes
        assert read_reply(sock)["status"] == 0


def test_the_keepalive_time_is_the_cas_setting_scaled(make_farm):
    make_farm(BASE, servers=1, time_scale=60, tcp_keepalive_s=1800)  # 30 minutes -> 30 s
    with raw_connection() as sock:
        sock.sendall(b'{"op": "ping"}\n')
        assert read_reply(sock)["status"] == 0
        ss = subprocess.run(
            ["ss", "-tno", "state", "established", f"( sport = :{MAPI} )"], capture_output=True, text=True
        )
    timer = re.search(r"timer:\(keepalive,(\d+)sec,", ss.stdout)
    assert timer is not None, ss.stdout
    assert 25 <= int(timer.group(1)) <= 30  # the kernel's countdown to the first probe


# -- the client ----------------------------------------------------------------------------------------


def test_client_reports_transport_failure_and_reconnects(make_farm):
    farm = make_farm(BASE, servers=1)
    with LineConnection((f"{BASE}.13", MAPI), source_ip=CLIENT, timeout=2) as nobody:
        refused = nobody.call("ping")
    assert (refused.outcome, refused.server, refused.status) == ("transport", "", -1)
    with mapi() as conn:
        assert conn.ping().ok
        farm.call(farm["CAS01"].tcp_services["mapi"].close())  # the server drops the connection
        dropped = conn.ping()
        again = conn.ping()
    assert (dropped.outcome, dropped.detail) == ("cut", "eof")  # closed by something else than an answer
    assert again.outcome == "ok" and again.server == "CAS01"


_GEVENT_SCRIPT = """
import json, sys
from loadgen.wire.mapi import AddressBookConnection  # imported before the patching, on purpose
from gevent import monkey
monkey.patch_all()
import gevent, gevent.socket
host, client = sys.argv[1], sys.argv[2]
conns = [AddressBookConnection((host, 59532), source_ip=client, timeout=5) for _ in range(4)]
jobs = [gevent.spawn(c.bind, f"user{i + 1}", "caslab") for i, c in enumerate(conns)]
gevent.joinall(jobs, timeout=10)
print(json.dumps({
    "outcomes": [j.value.outcome if j.value else repr(j.exception) for j in jobs],
    "cooperative": all(isinstance(c._sock, gevent.socket.socket) for c in conns),
}))
"""


def test_client_is_cooperative_under_gevent_even_when_imported_before_patching(make_farm):
    make_farm(BASE, servers=1)
    done = subprocess.run(
        [sys.executable, "-c", _GEVENT_SCRIPT, CAS01, CLIENT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {"outcomes": ["cold"] * 4, "cooperative": True}
