"""`Expect: 100-continue` on every HTTP service of the mock CAS: answered after authentication, as IIS
does. A request that fails authentication gets its refusal (IIS's 401, or the forms logon's 440) and never
`100 Continue`, and the connection closes (the body was never sent); an authenticated request gets
`100 Continue` and then the same answer it gets without the header."""

from __future__ import annotations

import base64
import socket
from urllib.parse import urlencode

import pytest
import requests
from mockcas_helpers import ledger

from caslab import rts
from loadgen.wire import autodiscover, eas, ews
from loadgen.wire import owa as owa_wire

BASE = "127.0.17"
CAS01 = f"{BASE}.11"
GOOD, BAD = "caslab", "wrong"


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"user1:{password}".encode()).decode()


def read_head(reader) -> tuple[int, dict[str, str]]:
    """One answer's status and headers (names in lower case)."""
    status = int(reader.readline().split()[1])
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def send(method: str, path: str, headers: dict[str, str], body: bytes, *, expect: bool) -> list[int]:
    """One request on its own connection; the statuses of the answers it got, in order. With `expect`
    the head goes out with `Expect: 100-continue` and the body only after a `100 Continue`; a final
    answer instead of 100 must close the connection."""
    head = {"Host": f"{CAS01}:8080", "Content-Length": str(len(body)), **headers}
    if expect:
        head["Expect"] = "100-continue"
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    with socket.create_connection((CAS01, 8080), timeout=10) as sock, sock.makefile("rb") as reader:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        if not expect:
            sock.sendall(body)
        status, answer_headers = read_head(reader)
        if status != 100:
            statuses = [status]
            if expect:  # refused before the body: the server must not wait for a body that never comes
                assert answer_headers.get("connection", "").lower() == "close"
                reader.read(int(answer_headers.get("content-length", "0")))
                assert reader.read(1) == b""  # and it did close
            return statuses
        sock.sendall(body)
        return [100, read_head(reader)[0]]


def rpc_in_data(password: str) -> tuple[str, str, dict[str, str], bytes]:
    """An RPC/HTTP IN channel's head and its first PDU (CONN/B1); the channel declares 1 GB."""
    b1 = rts.conn_b1(rts.new_cookie(), rts.new_cookie(), rts.new_cookie(), 1 << 30, 300_000)
    headers = {"Authorization": basic(password), "Content-Length": str(1 << 30)}
    return "RPC_IN_DATA", "/rpc/rpcproxy.dll?outlook.caslab.test:6001", headers, b1


def basic_requests(password: str) -> dict[str, tuple[str, str, dict[str, str], bytes]]:
    """For each service that takes Basic credentials: a request with a body, as its clients send it."""
    device = eas.Device("user1", password, "Expect1")
    provision = eas.provision(device)
    return {
        "ews": (
            "POST",
            ews.PATH,
            {**ews.HEADERS, "Authorization": basic(password)},
            ews.get_folder(),
        ),
        "autodiscover": (
            "POST",
            autodiscover.PATH,
            {**autodiscover.HEADERS, "Authorization": basic(password)},
            autodiscover.outlook_request("user1@caslab.test"),
        ),
        "eas": (provision.method, provision.path, provision.headers, provision.body),
        "oab": ("POST", "/OAB/no-such-oab/oab.xml", {"Authorization": basic(password)}, b"x"),
        "rpchttp": rpc_in_data(password),
    }


SERVICES = ["ews", "autodiscover", "eas", "oab", "rpchttp"]


@pytest.mark.parametrize("service", SERVICES)
def test_a_wrong_password_gets_401_and_never_100_continue(make_farm, service):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=0.5)
    method, path, headers, body = basic_requests(BAD)[service]
    assert send(method, path, headers, body, expect=True) == [401]
    rows = ledger(CAS01, service)
    assert [row["status"] for row in rows] == [401]


@pytest.mark.parametrize("service", SERVICES)
def test_a_good_password_gets_100_continue_then_the_answer_it_gets_without_expect(make_farm, service):
    make_farm(BASE, servers=1, rpc_pairing_wait_s=0.5)  # the lone IN channel is answered 503 after it
    method, path, headers, body = basic_requests(GOOD)[service]
    plain = send(method, path, headers, body, expect=False)
    assert plain[0] != 401
    assert send(method, path, headers, body, expect=True) == [100, *plain]


def logged_on_cookies() -> str:
    """The Cookie header of a browser that logged on to OWA on CAS01 and loaded its first page."""
    session = requests.Session()
    form = owa_wire.logon_form("user1", GOOD, f"http://{CAS01}:8080/owa/")
    assert session.post(f"http://{CAS01}:8080{owa_wire.LOGON_POST}", data=form, allow_redirects=False).ok
    assert session.get(f"http://{CAS01}:8080{owa_wire.HOME}").status_code == 200  # OWA's UserContext
    return "; ".join(f"{name}={value}" for name, value in session.cookies.items())


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SCRIPT_CALLS = {
    "owa": ("POST", "/owa/ev.owa?oeh=1&ns=Notify&ev=Poll", b"{}"),
    "ecp": ("POST", "/ecp/PersonalSettings/Accounts.svc/GetObject", b"{}"),
}


@pytest.mark.parametrize("service", ["owa", "ecp"])
def test_a_script_call_without_a_logon_gets_440_and_never_100_continue(make_farm, service):
    make_farm(BASE, servers=1)
    method, path, body = SCRIPT_CALLS[service]
    assert send(method, path, {"Content-Type": "application/json"}, body, expect=True) == [440]


@pytest.mark.parametrize("service", ["owa", "ecp"])
def test_a_script_call_with_a_logon_gets_100_continue_then_its_answer(make_farm, service):
    make_farm(BASE, servers=1)
    method, path, body = SCRIPT_CALLS[service]
    headers = {"Content-Type": "application/json", "Cookie": logged_on_cookies()}
    plain = send(method, path, headers, body, expect=False)
    assert plain[0] not in (302, 440)
    assert send(method, path, headers, body, expect=True) == [100, *plain]


def test_the_owa_logon_form_gets_100_continue_because_its_credentials_are_in_the_body(make_farm):
    """The one request whose credentials IIS cannot check from its headers: the forms logon's post."""
    make_farm(BASE, servers=1)
    body = urlencode(owa_wire.logon_form("user1", BAD, "/owa/")).encode()
    assert send("POST", owa_wire.LOGON_POST, FORM, body, expect=True) == [100, 302]
    assert ledger(CAS01, "owa")[-1]["detail"] == "bad credentials"
