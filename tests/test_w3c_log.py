"""The mock CAS writes its IIS log as IIS 7.5 does on Exchange 2010: one u_exYYMMDD.log per day with
the W3C header block, a line per HTTP request with the authenticated user, the client's User-Agent and
the balancer's X-Forwarded-For; none for MAPI, which IIS never sees."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import mockcas  # noqa: F401 - before aiohttp
from mockcas.config import CasConfig
from mockcas.embedded import EmbeddedFarm
from mockcas.w3c import FIELDS, W3cLog, field, file_name

HOST = "127.0.41.11"
OUTLOOK = "Microsoft Office/14.0 (Windows NT 6.1; Microsoft Outlook 14.0.7113; Pro)"


def _request(path: str, *, user: str = "", password: str = "caslab", headers: dict | None = None) -> int:
    request = urllib.request.Request(f"http://{HOST}:8080{path}", data=b"<x/>", headers=headers or {})
    if user:
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {credentials}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _mapi_logon() -> dict:
    with socket.create_connection((HOST, 59531), timeout=5) as s:
        s.sendall(b'{"op": "logon", "user": "user3@caslab.test", "password": "caslab"}\n')
        return json.loads(s.makefile().readline())


def _lines(folder: Path) -> list[str]:
    (log,) = folder.glob("u_ex*.log")
    assert log.name == file_name(dt.datetime.now(dt.UTC).date())
    return log.read_text().splitlines()


def test_every_http_request_has_its_line_and_mapi_has_none(tmp_path):
    config = CasConfig(name="CAS01", host=HOST, w3c_log_dir=tmp_path / "CAS01")
    with EmbeddedFarm([config]):
        headers = {"User-Agent": OUTLOOK, "X-Forwarded-For": "198.51.100.7, 10.0.0.1"}
        assert _request("/Autodiscover/Autodiscover.xml", user="user1@caslab.test", headers=headers) == 200
        assert _request("/EWS/Exchange.asmx", user="user2@caslab.test", password="wrong") == 401
        assert _mapi_logon()["status"] == 0
    lines = _lines(tmp_path / "CAS01")
    assert lines[0] == "#Software: Microsoft Internet Information Services 7.5"
    assert lines[1] == "#Version: 1.0" and lines[2].startswith("#Date: ")
    assert lines[3] == "#Fields: " + " ".join(FIELDS)
    requests = [line.split(" ") for line in lines[4:]]
    assert len(requests) == 2, "one line per HTTP request, none for MAPI"
    autodiscover, refused = (dict(zip(FIELDS, r, strict=True)) for r in requests)
    assert autodiscover["cs-uri-stem"] == "/Autodiscover/Autodiscover.xml"
    assert autodiscover["cs-username"] == "user1@caslab.test"
    assert autodiscover["cs(User-Agent)"] == OUTLOOK.replace(" ", "+")
    assert autodiscover["cs(X-Forwarded-For)"] == "198.51.100.7,+10.0.0.1"
    assert autodiscover["c-ip"] == "127.0.0.1" and autodiscover["s-ip"] == HOST
    assert (autodiscover["sc-status"], autodiscover["s-port"], autodiscover["cs-uri-query"]) == (
        "200",
        "8080",
        "-",
    )
    assert refused["cs-username"] == "-", "a refused request authenticated nobody"
    assert (refused["sc-status"], refused["cs(X-Forwarded-For)"]) == ("401", "-")


def test_an_owa_logon_names_its_user_from_the_logon_on(tmp_path):
    config = CasConfig(name="CAS01", host=HOST, w3c_log_dir=tmp_path)
    form = b"destination=http%3A%2F%2Fx%2Fowa%2F&flags=0&username=user4%40caslab.test&password=caslab"
    with EmbeddedFarm([config]):
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        opener.open(urllib.request.Request(f"http://{HOST}:8080/owa/auth.owa", data=form), timeout=5)
    users = [line.split(" ")[7] for line in _lines(tmp_path)[4:]]
    assert users[0] == "user4@caslab.test"  # the logon post
    assert set(users[1:]) == {"user4@caslab.test"}  # the pages it was sent on to


def test_a_restarted_cas_appends_a_new_header_block_to_the_days_file(tmp_path):
    for user in ("user1@caslab.test", "user2@caslab.test"):
        with EmbeddedFarm([CasConfig(name="CAS01", host=HOST, w3c_log_dir=tmp_path)]):
            _request("/EWS/Exchange.asmx", user=user)
    lines = _lines(tmp_path)
    assert [i for i, line in enumerate(lines) if line.startswith("#")] == [0, 1, 2, 3, 5, 6, 7, 8]
    assert [lines[4].split(" ")[7], lines[9].split(" ")[7]] == ["user1@caslab.test", "user2@caslab.test"]


def test_a_value_never_breaks_the_line_into_more_fields(tmp_path):
    log = W3cLog(tmp_path)
    nasty = "a b\tc\nd\re\x00f\u00e9\udcff"
    log.write(
        ended=0.0, server_ip="127.0.0.1", server_port=80, method="GET", target="/owa/?q=1",
        username=nasty, client_ip="", user_agent=nasty, status=200, time_taken_ms=-5, forwarded_for="",
    )  # fmt: skip
    log.close()
    line = (tmp_path / "u_ex700101.log").read_text(encoding="utf-8").splitlines()[-1]
    values = dict(zip(FIELDS, line.split(" "), strict=True))  # strict: exactly one value per field
    assert values["cs-username"] == values["cs(User-Agent)"] == "a+b+c+d+e+f\u00e9\ufffd"
    assert (values["c-ip"], values["time-taken"], values["cs-uri-query"]) == ("-", "0", "q=1")
    assert field("") == "-" and field("a b") == "a+b"
