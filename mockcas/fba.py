"""Forms-based logon (FBA), shared by the OWA and ECP services of one CAS.

Exchange 2010 runs forms logon for the whole web site: the logon page and `POST /owa/auth.owa` issue a
`cadata` cookie that only the issuing CAS can read (its keys are made on that server), and OWA and ECP
both accept it, which is why the two must share one CAS behind a balancer. Here `cadata` is signed with
the CAS's server key (mockcas.sealing) and names a logon session that `FormsAuth` keeps; each logon also
holds what the applications made for it on this CAS: OWA's `UserContext` and ECP's `msExchEcpCanary`.

A request's logon is one of:
- own: a cadata this CAS issued, for a logon still alive (its idle timer restarts);
- foreign: a cadata this CAS did not sign: another server's, tampered or malformed;
- expired: a cadata this CAS issued, for a logon that idled out (the CAS's `owa_timeout_s`: 15 min by
  default, the public-computer timeout; set it to 8 h for the private-computer one) or was logged off;
- none: no cadata at all (a client that has not logged on).
Pages answer foreign and expired logons with a 302 to the logon page (`reason=0`), script calls with
440 Login Timeout, as Exchange does.
"""

from __future__ import annotations

import math
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote

from aiohttp import hdrs, web
from multidict import istr

if TYPE_CHECKING:
    from mockcas.cas import Cas
    from mockcas.services import RequestContext

LOGON_PAGE = "/owa/auth/logon.aspx"
LOGON_POST = "/owa/auth.owa"
AUTH_COOKIE = "cadata"
SESSION_COOKIE = "sessionid"  # the logon session id in clear, as 2007/2010 FBA set it beside cadata
# The reason codes of logon.aspx: 0 = log on (again), 2 = wrong user name or password.
REASON_LOGON, REASON_BAD_CREDENTIALS = 0, 2
# A request made by script rather than by the browser's navigation (our chosen marker, besides each
# service's own script paths): it gets 440 instead of a redirect a script could not follow.
XHR_HEADER = istr("X-Requested-With")  # istr: aiohttp's header map takes it without case-folding
SESSION_KEY_MAX_CHARS = 64  # client-sent names beyond this are not ours; keeps ledger rows small


@dataclass(slots=True)
class Logon:
    """One forms logon session on this CAS."""

    sid: str  # the logon session id: the `sessionid` cookie and the ledger's session key
    user: str
    token: str  # the cadata value issued for it
    last_seen: float  # FormsAuth.clock() of its latest request
    user_context: str | None = None  # OWA's server session, made by the first OWA page on this CAS
    canary: str | None = None  # ECP's msExchEcpCanary, made by the first ECP page on this CAS


class LogonCheck(NamedTuple):  # a tuple: made on every request, and cheaper than a frozen dataclass
    """What a request's cookies say about its logon (see the module docstring for the states)."""

    state: str  # own | foreign | expired | none
    session_key: str
    detail: str = ""
    logon: Logon | None = None


class FormsAuth:
    """The logon sessions of one CAS. Issued cadata values are kept with their logon, so a known value
    skips the unsealing (the hot path); any other value is unsealed to tell foreign from ended."""

    def __init__(self, cas: Cas) -> None:
        self._sealer = cas.server_sealer
        self.idle_s = cas.scaled(cas.config.owa_timeout_s)
        self.clock: Callable[[], float] = time.monotonic  # tests may swap it to move time
        self._by_token: dict[str, Logon] = {}
        self._last_sweep = -math.inf  # the first logon sweeps (nothing) and starts the period

    def __len__(self) -> int:
        return len(self._by_token)

    def logon(self, user: str) -> Logon:
        """Open a logon session for a user whose credentials were checked."""
        now = self.clock()
        self._sweep(now)
        sid = str(uuid.uuid4())
        token = self._sealer.seal({"u": user, "s": sid, "t": int(time.time())})
        logon = Logon(sid=sid, user=user, token=token, last_seen=now)
        self._by_token[token] = logon
        return logon

    def logoff(self, logon: Logon) -> None:
        self._by_token.pop(logon.token, None)

    def check(self, cookies: Mapping[str, str]) -> LogonCheck:
        """Read the request's cadata; an own, live logon has its idle timer restarted."""
        token = cookies.get(AUTH_COOKIE, "")
        logon = self._by_token.get(token) if token else None
        if logon is None:
            return self._check_unknown(token, cookies.get(SESSION_COOKIE, ""))
        now = self.clock()
        if now - logon.last_seen > self.idle_s:
            self.logoff(logon)
            return LogonCheck("expired", logon.sid, "idle timeout")
        logon.last_seen = now
        return LogonCheck("own", logon.sid, "", logon)  # positional: a NamedTuple takes them faster

    def _check_unknown(self, token: str, sent_sid: str) -> LogonCheck:
        # The session key of a cadata we cannot read is the sessionid the client sent beside it, so the
        # lab can still tell whose session broke.
        key = sent_sid if len(sent_sid) <= SESSION_KEY_MAX_CHARS else ""
        if not token:
            return LogonCheck("none", key, "not logged on")
        state, data = self._sealer.open(token)
        if state == "foreign":
            return LogonCheck("foreign", key, "cadata not issued by this server")
        sid = data.get("s") if isinstance(data, dict) else None
        return LogonCheck("expired", sid if isinstance(sid, str) else key, "logon session ended")

    def _sweep(self, now: float) -> None:
        """Forget logons idle for longer than the timeout, at most once per timeout period."""
        if now - self._last_sweep < self.idle_s:
            return
        self._last_sweep = now
        for token in [t for t, lg in self._by_token.items() if now - lg.last_seen > self.idle_s]:
            del self._by_token[token]


def request_cookies(request: web.BaseRequest) -> dict[str, str]:
    """The request's cookies as name -> value (the first of a repeated name wins, as browsers send the
    most specific path first). aiohttp's `request.cookies` builds a Morsel per cookie, which was the
    largest cost of an authenticated OWA page here (about 14% of the CAS's time); the Cookie header
    of RFC 6265 needs only this split."""
    jar: dict[str, str] = {}
    for pair in request.headers.get(hdrs.COOKIE, "").split(";"):
        name, sep, value = pair.partition("=")
        if sep:
            value = value.strip()
            if len(value) > 1 and value[0] == value[-1] == '"':
                value = value[1:-1]
            jar.setdefault(name.strip(), value)
    return jar


# IIS runs forms logon once for the web site, so OWA and ECP of one CAS share one FormsAuth.
_BY_CAS: weakref.WeakKeyDictionary[Cas, FormsAuth] = weakref.WeakKeyDictionary()


def forms_auth(cas: Cas) -> FormsAuth:
    """The logon sessions of this CAS (made on first use)."""
    auth = _BY_CAS.get(cas)
    if auth is None:
        auth = _BY_CAS[cas] = FormsAuth(cas)
    return auth


def logon_url(origin: str, vdir: str, reason: int) -> str:
    """The logon page URL Exchange redirects to, naming the application to return to at `origin` (the
    scheme, host and port the client used: see request_origin)."""
    back = quote(f"{origin}{vdir}", safe="")
    return f"{LOGON_PAGE}?url={back}&reason={reason}"


def request_origin(request: web.BaseRequest, default_host: str) -> str:
    """`scheme://host[:port]` as the client used it, for URLs the client is sent back to.

    The host is the Host header (every lab balancer passes the client's on; aiohttp's own fallback
    would look the machine's name up). The scheme is the client's connection's, unless a balancer that
    ended TLS says otherwise in `X-Forwarded-Proto`: HAProxy sets it on its HTTPS listeners, nginx,
    Envoy and Traefik on every request; a plain-HTTP listener of HAProxy sets none, and there the
    balancer's connection to the CAS is plain HTTP too, so the connection's scheme is right."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",", 1)[0].strip().lower()
    scheme = forwarded if forwarded in ("http", "https") else ("https" if request.secure else "http")
    return f"{scheme}://{request.headers.get('Host') or default_host}"


def logon_redirect(origin: str, vdir: str, reason: int = REASON_LOGON) -> web.Response:
    return web.Response(status=302, headers={"Location": logon_url(origin, vdir, reason)})


def login_timeout() -> web.Response:
    """Exchange's non-standard 440: the script's logon is gone; the page must log on again."""
    return web.Response(status=440, reason="Login Timeout", text="440 - Login Timeout")


def without_logon(
    ctx: RequestContext, check: LogonCheck, script: bool, origin: str, vdir: str
) -> web.Response:
    """The answer of OWA and ECP to a request that has no own logon: 440 for a script call, else a
    redirect to the logon page that returns to `vdir` at `origin`; the ledger row says what the logon
    was."""
    ctx.note(check.session_key, check.state, check.detail)
    return login_timeout() if script else logon_redirect(origin, vdir)
