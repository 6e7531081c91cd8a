"""A web browser using Outlook Web App and its Options (ECP): a real cookie jar, balancer cookies
included, redirects read rather than followed, and XHR script calls while a page is open.

Flow: logon (home -> logon page -> form post -> home) -> folder pages and script calls -> now and then
Options (ECP, with its canary). A break (sent back to the logon page, 440, invalid canary) is what the
user sees; the user then logs on again, as a person would.
"""

from __future__ import annotations

from urllib.parse import urlencode

from locust import task

from loadgen.base import CasUser, Response
from loadgen.kinds import register
from loadgen.wire import owa

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@register
class Browser(CasUser):
    client_kind = "browser"
    user_agent = "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; WOW64; Trident/5.0)"  # IE9, Windows 7
    logged_on = False

    def classify(self, r: Response) -> tuple[str, str]:
        body = r.text if r.status_code == 403 else ""
        outcome, detail = owa.classify(
            r.status_code, r.headers.get("Location", ""), body, logged_on=self.logged_on
        )
        if outcome == "foreign":
            self.logged_on = False  # the user will have to log on again
        return outcome, detail

    def owa(self, method: str, path: str, **kwargs: object) -> None:
        if not self.logged_on:
            self.logon()
            if not self.logged_on:
                return  # the logon's own first page broke: the user is at the logon page, not on this page
        self.call(
            method,
            "owa" if path.lower().startswith("/owa") else "ecp",
            path,
            classify=self.classify,
            **kwargs,
        )

    def logon(self) -> None:
        self.logged_on = False
        self.call("GET", "owa", owa.HOME, name="owa home (logged off)", classify=self.classify)
        self.call("GET", "owa", owa.LOGON_PAGE, classify=self.classify)
        form = owa.logon_form(self.username, self.password, self.url("owa", owa.HOME))
        response = self.call(
            "POST", "owa", owa.LOGON_POST, data=urlencode(form), headers=FORM, classify=self.classify
        )
        # A logon that got no answer at all has no headers to read (status 0): the user is not logged on.
        if response.status_code == 302 and owa.logon_reason(response.headers.get("Location", "")) is None:
            self.logged_on = True
            self.call("GET", "owa", owa.HOME, name="owa home", classify=self.classify)

    def on_start(self) -> None:
        self.logon()

    @task(6)
    def read_folder(self) -> None:
        self.owa("GET", owa.folder_page(self.rng.choice(owa.FOLDERS)), name="owa folder page")

    @task(6)
    def script_call(self) -> None:
        namespace, event = self.rng.choice(owa.EVENTS)
        self.owa(
            "POST", owa.event_call(namespace, event), name="owa ev.owa", headers=owa.XHR_HEADERS, data=b""
        )

    @task(1)
    def options(self) -> None:
        self.owa("GET", owa.ECP_HOME, name="ecp home")
        canary = next((c.value for c in self.client.cookiejar if c.name == owa.CANARY_COOKIE), "")
        if self.logged_on and canary:
            service, method = self.rng.choice(owa.ECP_CALLS)
            self.owa(
                "POST",
                owa.ecp_call(service, method, canary),
                name="ecp .svc call",
                headers={**owa.XHR_HEADERS, "Content-Type": "application/json"},
                data=b"{}",
            )
