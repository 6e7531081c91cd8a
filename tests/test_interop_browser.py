"""A real browser against the mock CAS farm behind the default balancer with TLS offload: Playwright
driving Debian's Chromium (never a downloaded browser) logs on to OWA with the forms logon, opens an
OWA page, opens ECP and makes an ECP web-service call that echoes the canary its page set, as ECP's own
script does; under `none-all` the page after the logon reaches another CAS, which cannot read the
logon cookie, and the browser is sent back to the logon page, as by an Exchange 2010 farm without
affinity.

Chromium trusts the run's CA the way a user's machine would: the CA is imported with certutil into an
NSS database in the HOME that Chromium runs with (Chromium on Linux reads the user's trust settings
from ~/.pki/nssdb). No certificate check is switched off; a browser without that database refuses the
VIP (test_chromium_refuses_the_vip_without_the_run_ca).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

import pytest
from interop import HOST, PASSWORD, USER, VIP, interop_lab
from playwright.sync_api import BrowserContext, Error, Page, Response, sync_playwright

from caslab.vocab import SERVER_HEADER, STATE_HEADER

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"  # Debian's package
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--host-resolver-rules=MAP {HOST} {VIP.host}",  # the VIP's name, as DNS would give it
]
OWA = f"https://{HOST}:{VIP.https_port}/owa/"
ECP = f"https://{HOST}:{VIP.https_port}/ecp/"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with interop_lab(tmp_path_factory.mktemp("interop-browser")) as running:
        yield running


def trust_in_nss(home: Path, ca_pem: Path) -> None:
    """Make `home`/.pki/nssdb trust `ca_pem` to issue server certificates (certutil, libnss3-tools)."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-A", "-d", f"sql:{db}", "-n", "caslab run CA", "-t", "C,,", "-i", str(ca_pem)],
        check=True,
    )


@contextmanager
def chromium(home: Path) -> Iterator[BrowserContext]:
    """Debian's Chromium with a fresh profile, run with `home` as its HOME."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(home / "profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def browser(lab, tmp_path) -> Iterator[BrowserContext]:
    trust_in_nss(tmp_path, lab.tls.ca_pem)
    with chromium(tmp_path) as context:
        yield context


class Answer(NamedTuple):
    method: str
    path: str
    server: str  # the CAS that answered
    state: str  # what its ledger says of the request's session


class Answers:
    """Every answer a page got from a CAS, in order (the X-CasLab-* headers of each response)."""

    def __init__(self, page: Page) -> None:
        self.seen: list[Answer] = []
        page.on("response", self._record)

    def _record(self, response: Response) -> None:
        headers = response.headers  # Playwright gives header names in lower case
        if SERVER_HEADER.lower() in headers:
            self.seen.append(
                Answer(
                    response.request.method,
                    urlsplit(response.url).path,
                    headers[SERVER_HEADER.lower()],
                    headers.get(STATE_HEADER.lower(), ""),
                )
            )


def log_on(page: Page) -> None:
    """Fill OWA's logon form and submit it, as a user would."""
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("input[type=submit]")


def test_chromium_logs_on_to_owa_and_calls_ecp_with_its_canary(lab, browser):
    with lab.balancer("recommended"):
        page = browser.new_page()
        answers = Answers(page)
        page.goto(OWA)
        assert urlsplit(page.url).path == "/owa/auth/logon.aspx" and page.title() == "Outlook Web App"
        log_on(page)
        assert page.url == OWA and page.text_content("body") == USER  # the OWA page of the user
        page.goto(ECP)
        assert page.title() == "Options" and "Exchange Control Panel" in page.text_content("h1")
        # ECP's script reads the canary cookie the page set and echoes it on each web-service call.
        status, body = page.evaluate(
            """async () => {
                const canary = document.cookie.split('; ').find(c => c.startsWith('msExchEcpCanary='))
                    .split('=')[1];
                const r = await fetch('/ecp/DDI/DDIService.svc/GetList?msExchEcpCanary=' + canary,
                    {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'});
                return [r.status, await r.text()];
            }"""
        )
        assert status == 200 and '"PowerShellResults"' in body
        no_canary = page.evaluate(
            "fetch('/ecp/DDI/DDIService.svc/GetList', {method: 'POST', body: '{}'}).then(r => r.status)"
        )
        assert no_canary == 403
    kept = {c["name"] for c in browser.cookies()}
    assert {"cadata", "sessionid", "UserContext", "OutlookSession", "msExchEcpCanary"} <= kept, kept
    assert "lb_owa_ecp" in kept  # the balancer's cookie, which kept every request on one CAS:
    assert len({a.server for a in answers.seen}) == 1, answers.seen


def test_chromium_is_sent_back_to_the_logon_page_under_round_robin(lab, browser):
    """The logon is taken by one CAS; round robin sends the page it leads to to the next CAS, which cannot
    read the cadata cookie: 302 to the logon page, reason=0."""
    with lab.balancer("none-all"):
        page = browser.new_page()
        answers = Answers(page)
        page.goto(OWA)
        log_on(page)
        url = urlsplit(page.url)
        assert url.path == "/owa/auth/logon.aspx" and parse_qs(url.query)["reason"] == ["0"]
        assert page.is_visible("input[name=password]")
    i = next(i for i, a in enumerate(answers.seen) if (a.method, a.path) == ("POST", "/owa/auth.owa"))
    logon, after = answers.seen[i], answers.seen[i + 1]
    assert logon.state == "new"
    assert (after.method, after.path, after.state) == ("GET", "/owa/", "foreign"), answers.seen
    assert after.server != logon.server


def test_chromium_refuses_the_vip_without_the_run_ca(lab, tmp_path):
    with (
        lab.balancer("recommended"),
        chromium(tmp_path) as context,
        pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"),
    ):
        context.new_page().goto(OWA)
