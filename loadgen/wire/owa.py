"""Outlook Web App and ECP as a browser speaks them: pure helpers (no I/O) for the browser client kind.

A browser session against Exchange 2010, with a real cookie jar and redirects not followed:
1. `GET HOME` -> 302 to the logon page (`reason=0`); `GET LOGON_PAGE` -> the form, cookie `PBack=0`;
2. `POST LOGON_POST` with `logon_form(...)` -> 302 to the destination, cookies `cadata` + `sessionid`;
3. `GET HOME` -> the application, cookie `UserContext` (and `OutlookSession` on the first OWA answer);
4. `GET folder_page(...)` pages, script calls `POST event_call(...)` with `XHR_HEADERS`;
5. options: `GET ECP_HOME` -> cookie `msExchEcpCanary`; `POST ecp_call(..., canary)` with `XHR_HEADERS`;
6. `GET LOGOFF`.
`classify()` tells from an answer whether the session held (ok), broke because the request reached a
CAS that did not make its state (foreign: the logon page again, 440, or an invalid canary), or failed.
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

HOME = "/owa/"
LOGON_PAGE = "/owa/auth/logon.aspx"
LOGON_POST = "/owa/auth.owa"
LOGOFF = "/owa/logoff.owa"
ECP_HOME = "/ecp/?rfr=owa"  # OWA's Options link
AUTH_COOKIE = "cadata"
CANARY_COOKIE = "msExchEcpCanary"
XHR_HEADERS = {"X-Requested-With": "XMLHttpRequest"}
# The folder classes a user opens most (mail, calendar, contacts, tasks).
FOLDERS = ("IPF.Note", "IPF.Appointment", "IPF.Contact", "IPF.Task")
# Script calls OWA 2010 premium makes while a page is open: (namespace, event).
EVENTS = (("PendingRequest", "PendingNotificationRequest"), ("Messaging", "GetItems"))
ECP_CALLS = (("PersonalSettings/Accounts", "GetObject"), ("RulesEditor/InboxRules", "GetList"))

REASON_LOGON, REASON_BAD_CREDENTIALS = "0", "2"


def logon_form(username: str, password: str, destination: str, *, private: bool = False) -> dict[str, str]:
    """The fields OWA 2010's logon page posts (`trusted` 4 = a private computer, 0 = public)."""
    return {
        "destination": destination,
        "flags": "4" if private else "0",
        "forcedownlevel": "0",
        "trusted": "4" if private else "0",
        "username": username,
        "password": password,
        "isUtf8": "1",
    }


def folder_page(folder_class: str) -> str:
    return f"/owa/?ae=Folder&t={quote(folder_class)}"


def event_call(namespace: str, event: str) -> str:
    return f"/owa/ev.owa?oeh=1&ns={quote(namespace)}&ev={quote(event)}"


def ecp_call(service: str, method: str, canary: str) -> str:
    return f"/ecp/{service}.svc/{method}?{CANARY_COOKIE}={quote(canary, safe='')}"


def logon_reason(location: str) -> str | None:
    """The `reason` of a redirect to the logon page ('0' log on, '2' bad credentials), else None."""
    parts = urlsplit(location)
    if parts.path.lower() != LOGON_PAGE:
        return None
    return parse_qs(parts.query).get("reason", [""])[0]


def classify(status: int, location: str = "", body: str = "", *, logged_on: bool = True) -> tuple[str, str]:
    """(outcome, detail) of one answer: ok, foreign (the session's state is not on the CAS that
    answered, or it timed out: the user is sent to log on again) or error. `logged_on` is False before
    the logon, when being sent to the logon page is the expected answer."""
    if status == 440:
        return "foreign", "440 login timeout"
    if status == 403 and "invalid canary" in body:
        return "foreign", "invalid canary"
    if status in (301, 302, 303, 307):
        reason = logon_reason(location)
        if reason == REASON_BAD_CREDENTIALS:
            return "error", "bad credentials"
        if reason is not None and logged_on:
            return "foreign", "sent to the logon page"
    if status >= 400:
        return "error", f"http {status}"
    return "ok", ""
