"""The CAS core: routing, headers, the ledger (including requests the parser rejects) and the admin port."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

from hypothesis import given
from hypothesis import strategies as st
from mockcas_helpers import ledger

from mockcas.sealing import Sealer
from mockcas.users import Users, parse_basic

BASE = "127.0.10"


def _get(url: str) -> tuple[int, dict, bytes]:
    return _send(url)


def _send(request: str | urllib.request.Request) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_unknown_vdir_is_404_with_server_header_and_ledger_row(make_farm):
    make_farm(BASE, servers=1)
    status, headers, _ = _get(f"http://{BASE}.11:8080/nosuchvdir/")
    assert status == 404
    assert headers["X-CasLab-Server"] == "CAS01"
    rows = ledger(f"{BASE}.11")
    assert [(r["service"], r["state"], r["status"]) for r in rows] == [("unknown", "invalid", 404)]


def test_an_expectation_other_than_100_continue_is_417_with_the_cas_headers_and_a_ledger_row(make_farm):
    make_farm(BASE, servers=1)
    with socket.create_connection((f"{BASE}.11", 8080), timeout=5) as s, s.makefile("rb") as reader:
        s.sendall(b"GET /owa/ HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nConnection: close\r\n\r\n")
        answer = reader.read().decode("latin-1")
    assert answer.startswith("HTTP/1.1 417 ")
    assert "X-CasLab-Server: CAS01\r\n" in answer and "X-CasLab-State: invalid\r\n" in answer
    rows = ledger(f"{BASE}.11")
    assert [(r["service"], r["state"], r["status"], r["detail"]) for r in rows] == [
        ("owa", "invalid", 417, "unknown expectation")
    ]


def test_a_body_is_read_up_to_the_cas_limit_not_aiohttps_default(make_farm):
    """The CAS's body limit (`max_body_bytes`) is what its services read up to; aiohttp's low-level server
    would otherwise hold every request to 1 MiB."""
    make_farm(BASE, servers=1, max_body_bytes=2 << 20)
    auth = {"Authorization": "Basic dXNlcjFAY2FzbGFiLnRlc3Q6Y2FzbGFi"}  # user1@caslab.test:caslab
    url = f"http://{BASE}.11:8080/autodiscover/autodiscover.xml"
    for size, too_large in ((3 << 19, False), (3 << 20, True)):
        request = urllib.request.Request(url, data=b"<" * size, headers=auth, method="POST")
        assert (_send(request)[0] == 413) is too_large, size
    rows = ledger(f"{BASE}.11")
    assert [r["detail"][:4] for r in rows] == ["xml:", "body"]  # the first was read (and is no XML)
    assert rows[1]["detail"] == "body too large"


def test_request_the_parser_rejects_still_gets_a_ledger_row(make_farm):
    make_farm(BASE, servers=1)
    with socket.create_connection((f"{BASE}.11", 8080), timeout=5) as s:
        s.sendall(b"GET /owa/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        reply = s.recv(100)
    assert reply.split(b" ")[1].startswith(b"4")  # a 4xx from the parser, not a crash
    rows = ledger(f"{BASE}.11")
    assert len(rows) == 1 and rows[0]["state"] == "invalid" and rows[0]["status"] >= 400


def test_health_switch_fails_the_probe_url_and_drain_answers_404(make_farm):
    make_farm(BASE, servers=1)
    host = f"{BASE}.11"
    _get(f"http://{host}:8099/caslab/fault?health=down")
    assert _get(f"http://{host}:8080/owa/auth/logon.aspx")[0] == 503
    _get(f"http://{host}:8099/caslab/fault?health=drain")
    assert _get(f"http://{host}:8080/OWA/auth/logon.aspx")[0] == 404
    assert _get(f"http://{host}:8099/caslab/fault?health=sideways")[0] == 400
    stats = json.loads(_get(f"http://{host}:8099/caslab/stats")[2])
    assert stats["health"] == "drain" and stats["server"] == "CAS01"


def test_ledger_reads_incrementally(make_farm):
    make_farm(BASE, servers=1)
    host = f"{BASE}.11"
    for _ in range(3):
        _get(f"http://{host}:8080/nosuchvdir/")
    page = json.loads(_get(f"http://{host}:8099/caslab/ledger?since=2")[2])
    assert page["next"] == 3 and [r["seq"] for r in page["rows"]] == [2]
    everything = json.loads(_get(f"http://{host}:8099/caslab/ledger?since=-5")[2])  # read as since=0
    assert everything["next"] == 3 and [r["seq"] for r in everything["rows"]] == [0, 1, 2]


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=20), max_size=5))
def test_sealed_token_opens_only_with_its_key(data):
    mine, other = Sealer(b"a" * 32), Sealer(b"b" * 32)
    token = mine.seal(data)
    assert mine.unseal(token) == data
    assert other.open(token) == ("foreign", None)


@given(st.text(max_size=300))
def test_unseal_never_raises_on_garbage(token):
    assert Sealer(b"k" * 32).open(token)[0] in ("own", "foreign", "expired")


def test_users_accept_the_usual_spellings_and_reject_others():
    users = Users(10, "caslab", "caslab.test")
    assert users.check("user7@caslab.test", "caslab") == "user7@caslab.test"
    assert users.check("CASLAB\\User7", "caslab") == "user7@caslab.test"
    assert users.check("user7", "wrong") is None
    assert users.check("user11", "caslab") is None
    assert users.check("user0007", "caslab") == "user7@caslab.test"
    assert users.check("user" + "1" * 5000, "caslab") is None  # no error: int() refuses > 4,300 digits
    assert users.check("user7@other.test", "caslab") is None


@given(st.text(max_size=100))
def test_parse_basic_never_raises(header):
    result = parse_basic(header)
    assert result is None or isinstance(result, tuple)


def test_undecodable_header_bytes_reach_the_ledger_as_valid_text(make_farm):
    make_farm(BASE, servers=1)
    with socket.create_connection((f"{BASE}.11", 8080), timeout=5) as s:
        s.sendall(b"GET /x/ HTTP/1.1\r\nHost: x\r\nX-CasLab-Request: a\xffb\r\nConnection: close\r\n\r\n")
        s.recv(100)
    (row,) = ledger(f"{BASE}.11")
    assert row["request_id"] == "a\ufffdb"
    row["request_id"].encode("utf-8")  # would raise on a lone surrogate


def test_a_peer_gone_mid_body_is_recorded_peer_closed_not_as_a_bug(make_farm):
    """Found by bench/fuzz_through_balancer.py: a client (or a balancer) that closes its connection while
    a service reads the body made the service raise ConnectionResetError, recorded as a 500 'bug'."""
    make_farm(BASE, servers=1)
    auth = "Basic dXNlcjFAY2FzbGFiLnRlc3Q6Y2FzbGFi"  # user1@caslab.test:caslab
    with socket.create_connection((f"{BASE}.11", 8080), timeout=5) as s:
        s.sendall(
            b"POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=user1&DeviceId=D1&DeviceType=iPhone"
            b" HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth.encode() + b"\r\nMS-ASProtocolVersion: 14.1\r\n"
            b"X-MS-PolicyKey: 1\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
            b"Content-Length: 1000\r\n\r\n"
            b"\x03\x01j\x00"
        )
    deadline = time.monotonic() + 5
    while not (rows := ledger(f"{BASE}.11", "eas")) and time.monotonic() < deadline:
        time.sleep(0.02)  # the row is written when the CAS notices the peer is gone
    assert [(r["status"], r["detail"]) for r in rows] == [(499, "peer-closed")]


def test_a_path_belongs_to_the_service_of_its_first_segment_in_any_case() -> None:
    from caslab.vocab import SERVICE_PATHS
    from mockcas.server import service_for

    # service_for looks up the first path segment only: every virtual directory must be one segment.
    assert all(vdir.count("/") == 1 for vdirs in SERVICE_PATHS.values() for vdir in vdirs)
    assert service_for("/owa") == service_for("/OWA/") == service_for("/owa/auth/logon.aspx") == "owa"
    assert service_for("/Microsoft-Server-ActiveSync?Cmd=Ping") is None  # a path has no query
    assert service_for("/Microsoft-Server-ActiveSync/default.eas") == "eas"
    assert service_for("/rpc/rpcproxy.dll") == "rpchttp"
    assert service_for("/owanext/") is service_for("/") is service_for("") is service_for("owa") is None
