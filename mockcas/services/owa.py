"""Outlook Web App 2010: the forms logon, the application's pages and script calls, logoff.

Paths (lower-cased by the CAS; `/OWA` and `/owa` are one vdir):
- `GET /owa/auth/logon.aspx` the logon form (the balancers' health probe reads its "Outlook Web App");
- `POST /owa/auth.owa` checks the form's credentials: 302 to `destination` with `cadata` + `sessionid`
  (ledger `new`), or 302 back to the logon page with `reason=2`;
- `GET /owa/logoff.owa` ends the logon and clears its cookies;
- anything else is the application. Script calls (a POST, `*.owa` such as `ev.owa`, or a request with
  `X-Requested-With`) need a known `UserContext`; a page GET makes one when the client has none (the
  server session of OWA, known only to this CAS). Without an own logon (see mockcas.fba) a page is
  redirected to the logon page with `reason=0` and a script call gets 440.
Every OWA response carries `X-OWA-Version`, and `OutlookSession=<32 hex>; path=/` when the request came
without one, so the seed article's `app-cookie OutlookSession` persistence has a cookie to learn from the
very first response.
"""

from __future__ import annotations

import functools
import html
import secrets
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import istr

from mockcas import iis
from mockcas.fba import (
    AUTH_COOKIE,
    LOGON_PAGE,
    LOGON_POST,
    REASON_BAD_CREDENTIALS,
    SESSION_COOKIE,
    SESSION_KEY_MAX_CHARS,
    XHR_HEADER,
    Logon,
    forms_auth,
    login_timeout,
    logon_redirect,
    request_cookies,
    request_origin,
    without_logon,
)
from mockcas.services import HttpService, RequestContext, register

if TYPE_CHECKING:
    from mockcas.cas import Cas

USER_CONTEXT_COOKIE = "UserContext"
OUTLOOK_SESSION_COOKIE = "OutlookSession"
LOGOFF_PATH = "/owa/logoff.owa"
# Exchange 2010 SP3 (14.3.123.4); fingerprinting tools read this header to recognise OWA.
OWA_VERSION = "14.3.123.4"
_X_OWA_VERSION = istr("X-OWA-Version")  # istr: aiohttp's header map takes it without case-folding
TITLE = "Outlook Web App"
FORM_FIELDS = ("destination", "flags", "forcedownlevel", "trusted", "username", "password", "isUtf8")
FORM_MAX_BYTES = 16 * 1024  # a logon form is well under 1 KB; more is not a browser's form
_FORM_MAX_FIELDS = 32
_CREDENTIAL_MAX_CHARS = 256  # longer user names or passwords fail without being looked at
_CONTENT_TYPE_FORM = "application/x-www-form-urlencoded"
_METHODS = ("GET", "HEAD", "POST")

_LOGON_HTML = """<!DOCTYPE html>
<html><head><title>{title}</title></head>
<body><h1>{title}</h1>{message}
<form action="{action}" method="POST" name="logonForm" enctype="{enctype}" autocomplete="off">
<input type="hidden" name="destination" value="{destination}">
<input type="hidden" name="flags" value="0">
<input type="hidden" name="forcedownlevel" value="0">
<label><input type="radio" name="trusted" value="0" checked> This is a public or shared computer</label>
<label><input type="radio" name="trusted" value="4"> This is a private computer</label>
<label>Domain\\user name: <input type="text" name="username"></label>
<label>Password: <input type="password" name="password"></label>
<input type="hidden" name="isUtf8" value="1">
<input type="submit" value="Sign in">
</form></body></html>
"""
_BAD_CREDENTIALS_HTML = "<p>The user name or password you entered isn't correct. Try entering it again.</p>"
_SIGNED_OUT_HTML = (
    f"<!DOCTYPE html><html><head><title>{TITLE}</title></head>"
    "<body><p>You have successfully signed out of Outlook Web App.</p></body></html>"
)


def parse_logon_form(body: bytes, content_type: str) -> dict[str, str] | None:
    """The fields of a logon form post (the last of a repeated field wins), or None when the body is
    not a browser's form: another content type, too big, not UTF-8, too many fields."""
    if content_type != _CONTENT_TYPE_FORM or len(body) > FORM_MAX_BYTES:
        return None
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_FORM_MAX_FIELDS,
        )
    except ValueError:  # UnicodeDecodeError is one
        return None
    return dict(pairs)


def return_path(destination: str) -> str:
    """Where a good logon goes: the path and query of `destination` when it is in OWA or ECP, else
    `/owa/`. Only the path is used, so a logon never redirects to another host."""
    if not destination.isascii() or not destination.isprintable():
        return "/owa/"
    try:
        parts = urlsplit(destination)
    except ValueError:
        return "/owa/"
    if not parts.path.lower().startswith(("/owa", "/ecp")):
        return "/owa/"
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


async def _read_body(request: web.BaseRequest) -> bytes | None:
    """The whole body, or None when it is over the CAS's limit, its framing is broken or the client
    went away before sending all of it."""
    if request.content_length is not None and request.content_length > FORM_MAX_BYTES:
        return None
    try:
        return await request.read()
    except (web.HTTPRequestEntityTooLarge, HttpProcessingError, ConnectionError):
        return None


@register
class OwaService(HttpService):
    id = "owa"

    def __init__(self, cas: Cas) -> None:
        super().__init__(cas)
        self.forms = forms_auth(cas)

    def refusal(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse | None:
        """The forms logon turns away an application request without an own logon (a page goes to the
        logon page, a script call gets 440). The logon's own pages take anyone, as in Exchange 2010
        (anonymous access on /owa/auth): the logon form carries its credentials in its body, so its
        post gets `100 Continue` and is checked after. A method OWA does not serve is left to `handle`
        (405, whatever the logon). `handle` checks the logon again, which restarts its idle timer twice:
        harmless."""
        path = ctx.path
        if path == LOGON_POST or path.startswith("/owa/auth/") or request.method not in _METHODS:
            return None
        cookies = request_cookies(request)
        check = self.forms.check(cookies)
        if check.logon is not None:
            return None
        refused = without_logon(ctx, check, _is_script(request, path), self._origin(request), "/owa/")
        return _dressed(refused, cookies)

    async def handle(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        path = ctx.path
        cookies = request_cookies(request)
        if path == LOGON_PAGE:
            response = self._logon_page(request, ctx, self._origin(request))
        elif path == LOGON_POST:
            response = await self._logon_post(request, ctx, self._origin(request))
        elif path.startswith("/owa/auth/"):
            ctx.note("", "invalid", "no such page")
            response = iis.not_found()
        else:
            response = self._application(request, ctx, cookies)
        return _dressed(response, cookies)

    def _origin(self, request: web.BaseRequest) -> str:
        """Where the client came in, for the URLs it is sent back to (only redirects need it)."""
        return request_origin(request, self.cas.config.vip_host)

    def _logon_page(self, request: web.BaseRequest, ctx: RequestContext, origin: str) -> web.Response:
        destination = request.query.get("url") or f"{origin}/owa/"
        message = _BAD_CREDENTIALS_HTML if request.query.get("reason") == str(REASON_BAD_CREDENTIALS) else ""
        page = _LOGON_HTML.format(
            title=TITLE,
            message=message,
            action=LOGON_POST,
            enctype=_CONTENT_TYPE_FORM,
            destination=html.escape(destination),
        )
        ctx.note("", "none", "logon page")
        response = web.Response(text=page, content_type="text/html")
        response.set_cookie("PBack", "0", path="/")
        return response

    async def _logon_post(self, request: web.BaseRequest, ctx: RequestContext, origin: str) -> web.Response:
        if request.method != "POST":
            ctx.note("", "invalid", f"{request.method} on the logon form")
            return logon_redirect(origin, "/owa/")
        body = await _read_body(request)
        form = None if body is None else parse_logon_form(body, request.content_type)
        if form is None:
            ctx.note("", "invalid", "malformed logon form")
            return web.Response(status=400, text="400 - Bad Request")
        username, password = form.get("username", ""), form.get("password", "")
        user = None
        if len(username) <= _CREDENTIAL_MAX_CHARS and len(password) <= _CREDENTIAL_MAX_CHARS:
            user = self.cas.users.check(username, password)
        if user is None:
            ctx.note(username[:SESSION_KEY_MAX_CHARS], "none", "bad credentials")
            return logon_redirect(origin, "/owa/", REASON_BAD_CREDENTIALS)
        logon = self.forms.logon(user)
        ctx.user = user
        ctx.note(logon.sid, "new", "logon")
        response = web.Response(status=302, headers={"Location": return_path(form.get("destination", ""))})
        response.set_cookie(AUTH_COOKIE, logon.token, path="/", httponly=True)
        response.set_cookie(SESSION_COOKIE, logon.sid, path="/", httponly=True)
        return response

    def _application(
        self, request: web.BaseRequest, ctx: RequestContext, cookies: dict[str, str]
    ) -> web.Response:
        method, path = request.method, ctx.path
        if method not in _METHODS:
            ctx.note("", "invalid", f"method {method}")
            return iis.method_not_allowed("GET, POST")
        script = _is_script(request, path)
        check = self.forms.check(cookies)
        if check.logon is None:
            return without_logon(ctx, check, script, self._origin(request), "/owa/")
        logon = check.logon
        ctx.user = logon.user  # the forms logon's user, for the IIS log's cs-username
        if path == LOGOFF_PATH:
            return self._logoff(ctx, logon)
        sent = cookies.get(USER_CONTEXT_COOKIE)
        if sent is not None and sent == logon.user_context:
            ctx.note(logon.sid, "own")
            return _script_reply() if script else _page(logon)
        if script:
            # A script call runs inside a loaded page, so it must name a server session of this CAS.
            if sent:
                ctx.note(logon.sid, "foreign", "unknown user context")
            else:
                ctx.note(logon.sid, "invalid", "no user context")
            return login_timeout()
        detail = "user context resent"
        if logon.user_context is None:
            logon.user_context, detail = secrets.token_hex(16), "user context created"
        ctx.note(logon.sid, "own", detail)
        response = _page(logon)
        response.set_cookie(USER_CONTEXT_COOKIE, logon.user_context, path="/", httponly=True)
        return response

    def _logoff(self, ctx: RequestContext, logon: Logon) -> web.Response:
        self.forms.logoff(logon)
        ctx.note(logon.sid, "own", "logoff")
        response = web.Response(text=_SIGNED_OUT_HTML, content_type="text/html")
        for name in (AUTH_COOKIE, SESSION_COOKIE, USER_CONTEXT_COOKIE):
            response.del_cookie(name, path="/")
        return response


def _is_script(request: web.BaseRequest, path: str) -> bool:
    """A request made by a page's script rather than by the browser's navigation."""
    return (
        request.method == "POST"
        or XHR_HEADER in request.headers
        or (path.endswith(".owa") and path != LOGOFF_PATH)
    )


def _dressed(response: web.Response, cookies: dict[str, str]) -> web.Response:
    """What every OWA answer carries: X-OWA-Version, and an OutlookSession for a client without one."""
    response.headers[_X_OWA_VERSION] = OWA_VERSION
    if OUTLOOK_SESSION_COOKIE not in cookies:
        response.set_cookie(OUTLOOK_SESSION_COOKIE, secrets.token_hex(16), path="/")
    return response


# A page's headers as written, not through Response's content_type and charset: those build the header
# from its parts on every page.
_PAGE_HEADERS = {hdrs.CONTENT_TYPE: "text/html; charset=utf-8"}


def _page(logon: Logon) -> web.Response:
    return web.Response(body=_page_body(logon.user), headers=_PAGE_HEADERS)


@functools.cache  # one per user of the farm (only a user who logged on has a page); OWA's hot path
def _page_body(user: str) -> bytes:
    page = f"<!DOCTYPE html><html><head><title>{TITLE}</title></head><body>{html.escape(user)}</body></html>"
    return page.encode()


def _script_reply() -> web.Response:
    return web.Response(text="{}", content_type="text/javascript")
