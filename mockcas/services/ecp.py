"""Exchange Control Panel 2010 (OWA's Options): pages and web-service calls behind OWA's forms logon.

ECP accepts the `cadata` of OWA's logon (mockcas.fba), so OWA and ECP must share one CAS. Against
cross-site requests it issues a canary: a page (`GET /ecp/...`) sets `msExchEcpCanary` for the logon
(one per logon session, made by this CAS), and every web-service call (`POST /ecp/<x>.svc/<method>`, any
POST, or a request with `X-Requested-With`) must echo it in the `msExchEcpCanary` query parameter or
header, equal to the cookie. Exchange 2010 SP1 logs the failure as event 38 "invalid canary".

Without an own logon, a page goes to the logon page (`reason=0`, returning to `/ecp/`) and a call gets
440, as in OWA. With an own logon, a call whose canary is unknown to this CAS or differs from the cookie
gets 403 "invalid canary" (ledger `foreign`: its page's script holds a canary another CAS issued); a
call that echoes no canary, whether or not it sends the cookie, is a client's mistake, not a move between
CAS: 403 too, ledger `invalid`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from aiohttp import web

from mockcas import iis
from mockcas.fba import (
    XHR_HEADER,
    Logon,
    forms_auth,
    request_cookies,
    request_origin,
    without_logon,
)
from mockcas.services import HttpService, RequestContext, register

if TYPE_CHECKING:
    from mockcas.cas import Cas

CANARY = "msExchEcpCanary"  # the cookie, the query parameter and the header share this name
TITLE = "Options"
_PAGE_HTML = (
    f"<!DOCTYPE html><html><head><title>{TITLE}</title></head>"
    "<body><h1>Exchange Control Panel</h1></body></html>"
)
# The shape of ECP's JSON (WCF) answers; the mock has no settings to return.
_SERVICE_JSON = '{"d":{"__type":"PowerShellResults","ErrorRecords":[],"Output":[]}}'
_METHODS = ("GET", "HEAD", "POST")


def _is_call(request: web.BaseRequest, path: str) -> bool:
    """A web-service call (made by a page's script) rather than a page."""
    return request.method == "POST" or ".svc" in path or XHR_HEADER in request.headers


@register
class EcpService(HttpService):
    id = "ecp"

    def __init__(self, cas: Cas) -> None:
        super().__init__(cas)
        self.forms = forms_auth(cas)

    def refusal(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse | None:
        """OWA's forms logon turns away a request without an own logon (a page goes to the logon page, a
        call gets 440). A method ECP does not serve is left to `handle` (405, whatever the logon)."""
        if request.method not in _METHODS:
            return None
        check = self.forms.check(request_cookies(request))
        if check.logon is not None:
            return None
        origin = request_origin(request, self.cas.config.vip_host)
        return without_logon(ctx, check, _is_call(request, ctx.path), origin, "/ecp/")

    async def handle(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        method = request.method
        if method not in _METHODS:
            ctx.note("", "invalid", f"method {method}")
            return iis.method_not_allowed("GET, POST")
        call = _is_call(request, ctx.path)
        cookies = request_cookies(request)
        check = self.forms.check(cookies)
        if check.logon is None:
            origin = request_origin(request, self.cas.config.vip_host)
            return without_logon(ctx, check, call, origin, "/ecp/")
        ctx.user = check.logon.user  # the forms logon's user, for the IIS log's cs-username
        if call:
            return self._call(request, ctx, cookies.get(CANARY), check.logon)
        return self._page(ctx, cookies.get(CANARY), check.logon)

    def _page(self, ctx: RequestContext, cookie: str | None, logon: Logon) -> web.Response:
        detail = ""
        if logon.canary is None:
            logon.canary, detail = str(uuid.uuid4()), "canary issued"
        ctx.note(logon.sid, "own", detail)
        response = web.Response(text=_PAGE_HTML, content_type="text/html")
        if cookie != logon.canary:
            response.set_cookie(CANARY, logon.canary, path="/ecp")
        return response

    def _call(
        self, request: web.BaseRequest, ctx: RequestContext, cookie: str | None, logon: Logon
    ) -> web.Response:
        echoed = request.query.get(CANARY) or request.headers.get(CANARY)
        if echoed is None:
            ctx.note(logon.sid, "invalid", "no canary echoed" if cookie else "no canary")
        elif cookie != echoed:
            ctx.note(logon.sid, "foreign", "invalid canary: cookie differs from query/header")
        elif logon.canary is None or cookie != logon.canary:
            ctx.note(logon.sid, "foreign", "invalid canary: not issued by this server")
        else:
            ctx.note(logon.sid, "own")
            return web.Response(text=_SERVICE_JSON, content_type="application/json")
        return web.Response(status=403, text="403 - invalid canary")
