"""OWA and ECP on the mock CAS: forms logon, server sessions, canaries, and what another CAS answers.

Each request carries an X-CasLab-Request id, so a test reads exactly its own ledger row.
"""

from __future__ import annotations

import itertools
import re
import socket
import time
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
import requests
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caslab.vocab import HEALTH_BODY, HEALTH_PATH
from loadgen.wire import owa as wire
from mockcas.config import CasConfig
from mockcas.embedded import EmbeddedFarm
from mockcas.fba import forms_auth, request_cookies
from mockcas.services.owa import FORM_FIELDS, FORM_MAX_BYTES, parse_logon_form, return_path

BASE = "127.0.11"
HOSTS = {"CAS01": f"{BASE}.11", "CAS02": f"{BASE}.12"}
_ids = itertools.count(1)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Browser:
    """A browser talking to one CAS directly: its own cookie jar, redirects not followed."""

    def __init__(self, farm: EmbeddedFarm, server: str = "CAS01") -> None:
        self.farm, self.server = farm, server
        self.base = f"http://{farm[server].config.host}:8080"
        self.http = requests.Session()
        self.last_id = ""

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        self.last_id = f"t{next(_ids)}"
        headers = {"X-CasLab-Request": self.last_id, **kwargs.pop("headers", {})}
        return self.http.request(
            method, self.base + path, headers=headers, allow_redirects=False, timeout=5, **kwargs
        )

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def logon(self, user: str = "user1", password: str = "caslab") -> requests.Response:
        form = wire.logon_form(user, password, f"https://{HOSTS[self.server]}:8080/owa/")
        return self.post(wire.LOGON_POST, data=form)

    def row(self) -> dict:
        """The ledger row of the last request (the CAS writes it as the response completes)."""
        cas = self.farm[self.server]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for row in reversed(cas.ledger.rows()):
                if row.request_id == self.last_id:
                    return row._asdict()
            time.sleep(0.005)
        raise AssertionError(f"no ledger row for request {self.last_id} on {self.server}")

    def state(self) -> tuple[str, int]:
        row = self.row()
        return row["state"], row["status"]

    def replace_cookie(self, name: str, value: str) -> None:
        """Overwrite a cookie the server set, keeping its domain and path (so it is sent once)."""
        old = next(c for c in self.http.cookies if c.name == name)
        self.http.cookies.set(name, value, domain=old.domain, path=old.path)

    def cookie(self, name: str) -> str:
        value = self.http.cookies.get(name)
        assert value, f"no {name} cookie"
        return value


def logged_on(farm: EmbeddedFarm, server: str = "CAS01", user: str = "user1") -> Browser:
    """A browser that has logged on and opened OWA (so it holds cadata, sessionid and UserContext)."""
    browser = Browser(farm, server)
    assert browser.logon(user).status_code == 302
    assert browser.get(wire.HOME).status_code == 200
    return browser


def logon_location(host: str, vdir: str, reason: int) -> str:
    return f"/owa/auth/logon.aspx?url={quote(f'http://{host}:8080{vdir}', safe='')}&reason={reason}"


# -- one CAS --------------------------------------------------------------------------------------


def test_owa_without_logon_redirects_to_logon_page_and_sets_outlook_session(make_farm):
    browser = Browser(make_farm(BASE, servers=1))
    r = browser.get("/owa/")
    assert r.status_code == 302
    assert r.headers["Location"] == logon_location(HOSTS["CAS01"], "/owa/", 0)
    assert re.fullmatch(r"OutlookSession=[0-9a-f]{32}; Path=/", r.headers["Set-Cookie"])
    assert r.headers["X-OWA-Version"].startswith("14.")
    assert browser.state() == ("none", 302)
    again = browser.get("/OWA/")  # IIS paths are case-insensitive; the cookie is not set twice
    assert again.status_code == 302 and "Set-Cookie" not in again.headers


def test_logon_page_serves_the_real_form_and_the_health_string(make_farm):
    browser = Browser(make_farm(BASE, servers=1))
    back = "https://mail.example/owa/?ae=Folder&t=IPF.Note"
    r = browser.get(HEALTH_PATH, params={"url": back, "reason": "0"})
    assert r.status_code == 200 and HEALTH_BODY in r.text
    assert 'action="/owa/auth.owa"' in r.text
    assert set(re.findall(r'name="([^"]+)"', r.text)) >= set(FORM_FIELDS)
    assert 'name="destination" value="https://mail.example/owa/?ae=Folder&amp;t=IPF.Note"' in r.text
    assert browser.cookie("PBack") == "0"
    assert browser.state() == ("none", 200)


def test_good_logon_sets_cadata_and_sessionid_and_goes_to_the_destination(make_farm):
    browser = Browser(make_farm(BASE, servers=1))
    form = wire.logon_form("CASLAB\\user7", "caslab", "https://vip/owa/?ae=Folder&t=IPF.Appointment")
    r = browser.post(wire.LOGON_POST, data=form)
    assert r.status_code == 302 and r.headers["Location"] == "/owa/?ae=Folder&t=IPF.Appointment"
    assert browser.cookie("cadata") and browser.cookie("sessionid")
    row = browser.row()
    assert (row["state"], row["status"], row["session_key"]) == ("new", 302, browser.cookie("sessionid"))


def test_wrong_password_goes_back_to_the_logon_page_with_reason_2(make_farm):
    browser = Browser(make_farm(BASE, servers=1))
    r = browser.logon("user1", "wrong")
    assert r.status_code == 302
    assert r.headers["Location"] == logon_location(HOSTS["CAS01"], "/owa/", 2)
    assert "cadata" not in browser.http.cookies
    assert wire.classify(r.status_code, r.headers["Location"], logged_on=False) == (
        "error",
        "bad credentials",
    )
    row = browser.row()
    assert (row["state"], row["session_key"]) == ("none", "user1")
    page = browser.get(r.headers["Location"])
    assert "user name or password you entered isn't correct" in page.text


def back_url(location: str) -> str:
    """The URL a redirect to the logon page names to come back to (its `url` parameter)."""
    return parse_qs(urlsplit(location).query)["url"][0]


def test_the_logon_redirect_names_the_scheme_host_and_port_the_client_used(make_farm, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert(HOSTS["CAS01"])
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    farm = make_farm(BASE, servers=1, cert_file=tmp_path / "cert.pem", key_file=tmp_path / "key.pem")
    browser = Browser(farm)
    # Plain HTTP on the CAS's own port.
    assert back_url(browser.get("/owa/").headers["Location"]) == f"http://{HOSTS['CAS01']}:8080/owa/"
    assert back_url(browser.get("/ecp/").headers["Location"]) == f"http://{HOSTS['CAS01']}:8080/ecp/"
    # Behind a balancer: the Host the client sent, and the scheme the balancer says the client used.
    offloaded = {"Host": "mail.caslab.test:8443", "X-Forwarded-Proto": "https"}
    r = browser.get("/owa/", headers=offloaded)
    assert back_url(r.headers["Location"]) == "https://mail.caslab.test:8443/owa/"
    plain = {"Host": "mail.caslab.test:8080", "X-Forwarded-Proto": "http"}
    r = browser.post(wire.LOGON_POST, data=wire.logon_form("user1", "wrong", "/owa/"), headers=plain)
    assert back_url(r.headers["Location"]) == "http://mail.caslab.test:8080/owa/"
    # HTTPS on the CAS's own TLS port.
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    url = f"https://{HOSTS['CAS01']}:8443/owa/"
    r = requests.get(url, verify=str(tmp_path / "ca.pem"), allow_redirects=False, timeout=5)
    assert back_url(r.headers["Location"]) == f"https://{HOSTS['CAS01']}:8443/owa/"
    # The logon page's form returns there too when it is asked for without a `url`.
    page = browser.get(HEALTH_PATH, headers=offloaded).text
    assert 'name="destination" value="https://mail.caslab.test:8443/owa/"' in page


def test_first_owa_page_makes_the_user_context_and_later_requests_use_it(make_farm):
    browser = Browser(make_farm(BASE, servers=1))
    browser.logon()
    sid = browser.cookie("sessionid")
    first = browser.get(wire.HOME)
    assert first.status_code == 200 and "user1@caslab.test" in first.text
    context = browser.cookie("UserContext")
    assert re.fullmatch(r"[0-9a-f]{32}", context)
    assert browser.row()["detail"] == "user context created"
    for path in (wire.folder_page("IPF.Note"), wire.folder_page("IPF.Contact")):
        r = browser.get(path)
        assert r.status_code == 200 and browser.state() == ("own", 200)
    r = browser.post(
        wire.event_call("PendingRequest", "PendingNotificationRequest"), headers=wire.XHR_HEADERS
    )
    assert r.status_code == 200
    row = browser.row()
    assert (row["state"], row["session_key"]) == ("own", sid)
    assert browser.cookie("UserContext") == context  # one server session per logon


def test_script_call_needs_a_user_context_this_cas_made(make_farm):
    farm = make_farm(BASE, servers=1)
    browser = Browser(farm)
    browser.logon()
    event = wire.event_call("Messaging", "GetItems")
    assert browser.post(event).status_code == 440  # no page opened yet: no UserContext
    assert browser.state() == ("invalid", 440)
    browser.http.cookies.set("UserContext", "0" * 32)
    assert browser.post(event).status_code == 440
    assert browser.state() == ("foreign", 440)


def test_logoff_ends_the_logon_and_a_replayed_cadata_is_expired(make_farm):
    browser = logged_on(make_farm(BASE, servers=1))
    cookies = browser.http.cookies.get_dict()
    r = browser.get(wire.LOGOFF)
    assert r.status_code == 200 and "signed out" in r.text
    assert "cadata" not in browser.http.cookies and "UserContext" not in browser.http.cookies
    replay = Browser(browser.farm)
    replay.http.cookies.update(cookies)
    r = replay.get(wire.folder_page("IPF.Note"))
    assert r.status_code == 302 and r.headers["Location"] == logon_location(HOSTS["CAS01"], "/owa/", 0)
    row = replay.row()
    assert (row["state"], row["session_key"]) == ("expired", cookies["sessionid"])
    assert replay.post(wire.event_call("Messaging", "GetItems")).status_code == 440
    assert replay.state() == ("expired", 440)


def test_logon_idles_out_after_15_scaled_minutes_and_activity_keeps_it(make_farm):
    farm = make_farm(BASE, servers=1, time_scale=60)
    auth = forms_auth(farm["CAS01"])
    assert auth.idle_s == 15 * 60 / 60
    now = [1000.0]
    auth.clock = lambda: now[0]
    browser = logged_on(farm)
    for _ in range(3):  # each request restarts the idle timer
        now[0] += auth.idle_s - 1
        assert browser.get(wire.folder_page("IPF.Note")).status_code == 200
    now[0] += auth.idle_s + 1
    r = browser.get(wire.folder_page("IPF.Note"))
    assert r.status_code == 302 and wire.logon_reason(r.headers["Location"]) == "0"
    assert browser.state() == ("expired", 302)
    assert browser.row()["detail"] == "idle timeout"
    ecp = browser.post(wire.ecp_call("PersonalSettings/Accounts", "GetObject", "x"))
    assert ecp.status_code == 440 and browser.state() == ("expired", 440)


def test_logon_idles_out_after_the_cas_owa_timeout(make_farm):
    farm = make_farm(BASE, servers=1, time_scale=60, owa_timeout_s=8 * 3600)  # the private-computer timeout
    auth = forms_auth(farm["CAS01"])
    assert auth.idle_s == 8 * 3600 / 60
    now = [1000.0]
    auth.clock = lambda: now[0]
    browser = logged_on(farm)
    now[0] += 15 * 60 / 60 + 1  # idle longer than the public default, well within this CAS's timeout
    assert browser.get(wire.folder_page("IPF.Note")).status_code == 200
    now[0] += auth.idle_s + 1
    assert browser.get(wire.folder_page("IPF.Note")).status_code == 302
    assert browser.state() == ("expired", 302)


def test_idle_logons_are_forgotten_so_memory_stays_bounded(make_farm):
    farm = make_farm(BASE, servers=1, time_scale=60)
    auth = forms_auth(farm["CAS01"])
    now = [1000.0]
    auth.clock = lambda: now[0]
    for user in ("user1", "user2"):
        assert Browser(farm).logon(user).status_code == 302
    assert len(auth) == 2
    now[0] += auth.idle_s + 1
    assert Browser(farm).logon("user3").status_code == 302  # a logon sweeps the idle ones away
    assert len(auth) == 1


def test_ecp_page_issues_a_canary_that_calls_must_echo(make_farm):
    browser = logged_on(make_farm(BASE, servers=1))
    r = browser.get(wire.ECP_HOME)
    assert r.status_code == 200 and browser.state() == ("own", 200)
    canary = browser.cookie(wire.CANARY_COOKIE)
    assert browser.get("/ecp/").headers.get("Set-Cookie") is None  # one canary per logon session
    service, method = wire.ECP_CALLS[0]
    r = browser.post(wire.ecp_call(service, method, canary), json={}, headers=wire.XHR_HEADERS)
    assert r.status_code == 200 and r.json()["d"]["ErrorRecords"] == []
    assert browser.state() == ("own", 200)
    r = browser.post(f"/ecp/{service}.svc/{method}", headers={wire.CANARY_COOKIE: canary})
    assert r.status_code == 200  # the canary may come in a header instead of the query
    r = browser.post(wire.ecp_call(service, method, "not-the-canary"))
    assert r.status_code == 403 and "invalid canary" in r.text
    assert browser.state() == ("foreign", 403)
    assert wire.classify(r.status_code, body=r.text) == ("foreign", "invalid canary")
    r = browser.post(f"/ecp/{service}.svc/{method}")  # the cookie alone is not an echo: the client's
    assert r.status_code == 403 and browser.state() == ("invalid", 403)  # mistake, not a move of CAS
    logon_only = f"cadata={browser.cookie('cadata')}; sessionid={browser.cookie('sessionid')}"
    r = browser.post(f"/ecp/{service}.svc/{method}", headers={"Cookie": logon_only})
    assert r.status_code == 403 and browser.state() == ("invalid", 403)


def test_ecp_without_logon_goes_to_the_logon_page_returning_to_ecp(make_farm):
    browser = Browser(make_farm(BASE, servers=1))
    r = browser.get("/ecp/")
    assert r.status_code == 302 and r.headers["Location"] == logon_location(HOSTS["CAS01"], "/ecp/", 0)
    assert browser.post(wire.ecp_call("PersonalSettings/Accounts", "GetObject", "x")).status_code == 440
    assert browser.state() == ("none", 440)


def test_a_session_that_stays_on_its_cas_never_breaks(make_farm):
    """A whole browser flow through the wire helpers: logon, pages, script calls, ECP options."""
    browser = Browser(make_farm(BASE, servers=2), "CAS02")
    states = []

    def step(method: str, path: str, **kwargs) -> requests.Response:
        r = browser.request(method, path, **kwargs)
        before = "cadata" in browser.http.cookies
        outcome = wire.classify(r.status_code, r.headers.get("Location", ""), r.text, logged_on=before)
        assert outcome == ("ok", ""), (path, r.status_code)
        assert r.headers["X-CasLab-Server"] == "CAS02"
        states.append(browser.state()[0])
        return r

    step("GET", wire.HOME)
    step("GET", wire.LOGON_PAGE)
    step("POST", wire.LOGON_POST, data=wire.logon_form("user3", "caslab", "https://vip/owa/", private=True))
    logon_states, states[:] = list(states), []
    for folder in wire.FOLDERS:
        step("GET", wire.folder_page(folder))
        for namespace, event in wire.EVENTS:
            step("POST", wire.event_call(namespace, event), headers=wire.XHR_HEADERS)
    step("GET", wire.ECP_HOME)
    for service, method in wire.ECP_CALLS:
        canary = browser.cookie(wire.CANARY_COOKIE)
        step("POST", wire.ecp_call(service, method, canary), json={}, headers=wire.XHR_HEADERS)
    step("GET", wire.HOME)
    assert logon_states == ["none", "none", "new"]
    assert set(states) == {"own"}
    assert len(browser.farm["CAS01"].ledger) == 0


# -- two CAS of one farm --------------------------------------------------------------------------


def test_cadata_from_cas01_is_foreign_on_cas02(make_farm):
    farm = make_farm(BASE, servers=2)
    cas01 = logged_on(farm, "CAS01")
    cookies = cas01.http.cookies.get_dict()
    cas02 = Browser(farm, "CAS02")
    cas02.http.cookies.update(cookies)
    r = cas02.get(wire.folder_page("IPF.Note"))
    assert r.status_code == 302 and r.headers["Location"] == logon_location(HOSTS["CAS02"], "/owa/", 0)
    row = cas02.row()
    assert (row["state"], row["server"], row["session_key"]) == ("foreign", "CAS02", cookies["sessionid"])
    assert wire.classify(r.status_code, r.headers["Location"]) == ("foreign", "sent to the logon page")
    r = cas02.post(wire.event_call("Messaging", "GetItems"))
    assert r.status_code == 440 and cas02.state() == ("foreign", 440)
    r = cas02.get(wire.folder_page("IPF.Note"), headers=wire.XHR_HEADERS)  # a script's GET: 440 too
    assert r.status_code == 440 and cas02.state() == ("foreign", 440)
    r = cas02.get(wire.ECP_HOME)  # ECP shares the logon cookie, so it cannot work on CAS02 either
    assert r.status_code == 302 and r.headers["Location"] == logon_location(HOSTS["CAS02"], "/ecp/", 0)
    assert cas02.state() == ("foreign", 302)
    assert cas01.get(wire.folder_page("IPF.Note")).status_code == 200  # still fine where it was made


def test_tampered_cadata_is_foreign(make_farm):
    browser = logged_on(make_farm(BASE, servers=1))
    cadata = browser.cookie("cadata")
    browser.replace_cookie("cadata", cadata[:-2] + ("AA" if cadata[-2:] != "AA" else "BB"))
    assert browser.get(wire.HOME).status_code == 302
    assert browser.state() == ("foreign", 302)


def test_ecp_canary_from_cas01_fails_on_cas02(make_farm):
    farm = make_farm(BASE, servers=2)
    cas01, cas02 = logged_on(farm, "CAS01"), logged_on(farm, "CAS02")
    cas01.get(wire.ECP_HOME)
    cas02.get(wire.ECP_HOME)
    foreign_canary = cas01.cookie(wire.CANARY_COOKIE)
    cas02.replace_cookie(wire.CANARY_COOKIE, foreign_canary)
    r = cas02.post(wire.ecp_call("PersonalSettings/Accounts", "GetObject", foreign_canary))
    assert r.status_code == 403 and "invalid canary" in r.text
    row = cas02.row()
    assert (row["state"], row["detail"]) == ("foreign", "invalid canary: not issued by this server")


# -- bad input ------------------------------------------------------------------------------------


def _raw_form(browser: Browser, body: bytes, content_type: str = "application/x-www-form-urlencoded"):
    return browser.post(wire.LOGON_POST, data=body, headers={"Content-Type": content_type})


def test_broken_logon_forms_get_400_or_a_failed_logon_and_a_ledger_row(make_farm):
    browser = Browser(make_farm(BASE, servers=1))
    good = urlencode(wire.logon_form("user1", "caslab", "/owa/")).encode()
    cases = [
        (b"username=user1&password=caslab\xff\xfe", "application/x-www-form-urlencoded", 400, "invalid"),
        (b"username=%ff%fe&password=caslab", "application/x-www-form-urlencoded", 400, "invalid"),
        (good, "text/plain", 400, "invalid"),
        (good + b"&x=" + b"a" * FORM_MAX_BYTES, "application/x-www-form-urlencoded", 400, "invalid"),
        (b"&".join(b"f%d=1" % i for i in range(100)), "application/x-www-form-urlencoded", 400, "invalid"),
        (
            b"username=user" + b"1" * 5000 + b"&password=caslab",
            "application/x-www-form-urlencoded",
            302,
            "none",
        ),
        (b"garbage", "application/x-www-form-urlencoded", 302, "none"),
    ]
    for body, content_type, status, state in cases:
        r = _raw_form(browser, body, content_type)
        assert r.status_code == status, body[:40]
        assert browser.state() == (state, status), body[:40]
    assert browser.get(wire.LOGON_POST).status_code == 302 and browser.state() == ("invalid", 302)
    assert browser.request("PUT", wire.HOME).status_code == 405 and browser.state() == ("invalid", 405)
    assert browser.request("DELETE", "/ecp/").status_code == 405 and browser.state() == ("invalid", 405)
    r = browser.post(wire.LOGON_POST, data=wire.logon_form("user1", "caslab", "https://evil.example//x"))
    assert r.status_code == 302 and r.headers["Location"] == "/owa/"  # never off to another host


def test_a_logon_form_cut_short_gets_a_ledger_row_and_no_server_error(make_farm):
    browser = Browser(make_farm(BASE, servers=1))
    browser.last_id = "cut-short"
    head = (
        "POST /owa/auth.owa HTTP/1.1\r\nHost: x\r\nX-CasLab-Request: cut-short\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nusername=us"
    )
    with socket.create_connection((HOSTS["CAS01"], 8080), timeout=5) as sock:
        sock.sendall(head.encode())
        sock.shutdown(socket.SHUT_WR)
        sock.recv(100)
    assert browser.state() == ("invalid", 400)


def test_oversized_and_malformed_cookies_get_the_logon_page(make_farm):
    browser = Browser(make_farm(BASE, servers=1))
    for cookie in ("cadata=" + "A" * 7000, 'cadata="unterminated', "cadata", "=;;=;cadata==", "sessionid=x"):
        r = browser.get(wire.HOME, headers={"Cookie": cookie})
        assert r.status_code == 302, cookie
        assert browser.row()["state"] in ("foreign", "none"), cookie


@pytest.fixture(scope="module")
def fuzz_farm():
    """One CAS for the fuzz tests (hypothesis runs many examples per test: one farm serves them all),
    on its own address so it can run beside the per-test farms."""
    with EmbeddedFarm([CasConfig(name="CAS01", host=f"{BASE}.21")]) as farm:
        yield farm


_latin1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")


@FUZZ
@given(
    cookie=st.text(_latin1, max_size=300),
    target=st.sampled_from(
        ["/owa/", "/owa/?ae=Folder&t=IPF.Note", "/owa/ev.owa?oeh=1", "/ecp/", "/ecp/x.svc/y"]
    ),
    method=st.sampled_from(["GET", "POST"]),
)
def test_random_cookies_never_cause_a_server_error(fuzz_farm, cookie, target, method):
    browser = Browser(fuzz_farm)
    script = method == "POST" or ".owa" in target or ".svc" in target
    every = f"cadata={cookie}; sessionid={cookie}; UserContext={cookie}; msExchEcpCanary={cookie}"
    for header in (f"x{cookie}", f"cadata={cookie}", every):
        r = browser.request(method, target, headers={"Cookie": header})
        assert r.status_code == (440 if script else 302), (header, r.status_code)
        assert browser.row()["state"] in ("foreign", "none"), header


@FUZZ
@given(body=st.binary(max_size=400))
def test_random_form_bodies_never_cause_a_server_error(fuzz_farm, body):
    browser = Browser(fuzz_farm)
    r = _raw_form(browser, body)
    assert r.status_code in (302, 400)
    assert browser.state() in (("none", 302), ("new", 302), ("invalid", 400))


# -- pure parsing ---------------------------------------------------------------------------------


_field = st.text(st.characters(exclude_categories=("Cs",)), max_size=50)


@given(st.fixed_dictionaries({name: _field for name in FORM_FIELDS}))
def test_logon_form_parses_back_what_a_browser_encodes(fields):
    body = urlencode(fields).encode()
    assert parse_logon_form(body, "application/x-www-form-urlencoded") == fields


@given(st.binary(max_size=500), st.sampled_from(["application/x-www-form-urlencoded", "text/plain"]))
def test_logon_form_parser_never_raises(body, content_type):
    form = parse_logon_form(body, content_type)
    assert form is None or all(isinstance(k, str) and isinstance(v, str) for k, v in form.items())


class _Headers:
    """Just enough of an aiohttp request for `request_cookies`."""

    def __init__(self, cookie: str) -> None:
        self.headers = {"Cookie": cookie}


_token = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."), min_size=1
)
_value = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='";,\\'), max_size=40
)


@given(st.dictionaries(_token, _value, max_size=6))
def test_cookie_header_parses_back_what_a_browser_sends(jar):
    header = "; ".join(f"{name}={value}" for name, value in jar.items())
    assert request_cookies(_Headers(header)) == jar


@given(st.text(max_size=300))
def test_cookie_parser_never_raises(header):
    assert all(isinstance(v, str) for v in request_cookies(_Headers(header)).values())


@given(st.text(max_size=200))
def test_return_path_stays_in_owa_or_ecp_on_this_host(destination):
    path = return_path(destination)
    assert path.lower().startswith(("/owa", "/ecp"))
    assert path.isascii() and path.isprintable()


@pytest.mark.parametrize(
    ("status", "location", "body", "logged_on", "outcome"),
    [
        (200, "", "", True, "ok"),
        (302, "/owa/", "", True, "ok"),
        (302, "/owa/auth/logon.aspx?url=x&reason=0", "", False, "ok"),
        (302, "/owa/auth/logon.aspx?url=x&reason=0", "", True, "foreign"),
        (302, "/OWA/auth/logon.aspx?reason=2", "", False, "error"),
        (440, "", "", True, "foreign"),
        (403, "", "403 - invalid canary", True, "foreign"),
        (403, "", "forbidden", True, "error"),
        (500, "", "", True, "error"),
    ],
)
def test_wire_classify(status, location, body, logged_on, outcome):
    assert wire.classify(status, location, body, logged_on=logged_on)[0] == outcome


def test_wire_logon_form_has_the_fields_the_mock_reads():
    assert tuple(wire.logon_form("u", "p", "/owa/")) == FORM_FIELDS
