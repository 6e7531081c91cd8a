"""A cookie jar that remembers the Cookie header it computed, for clients that ask for the same URLs
again and again.

The standard library's `CookieJar.add_cookie_header` checks every cookie against the request with its
policy on every request: about 55 µs with one cookie and more with a browser's half dozen, on this
project's machines; that is a tenth of what a whole Locust request costs, and a real client does not
pay it. `CachingCookieJar` is that same jar (the stdlib decides which cookies go, and stores them);
it keeps the header it computed for a URL until the jar changes or a cookie in it expires, and it
reads an answer's cookies only when it sets some.
"""

from __future__ import annotations

import http.cookiejar
import time
from typing import Any

MAX_URLS = 64  # per jar; a client kind asks a few dozen distinct URLs at most


class CachingCookieJar(http.cookiejar.CookieJar):
    """`http.cookiejar.CookieJar`, with `add_cookie_header` answered from a cache keyed by the URL
    without its query (cookies match on scheme, host, port and path). Setting or clearing any cookie
    empties the cache, as does the first expiry of a cookie. Requests after a redirect (unverifiable,
    where the policy also weighs the first request's host) are not cached."""

    def __init__(self, policy: http.cookiejar.CookiePolicy | None = None) -> None:
        super().__init__(policy)
        self._headers: dict[str, dict[str, str]] = {}
        self._valid_until = float("inf")  # the soonest expiry of a cookie in the jar

    def add_cookie_header(self, request: Any) -> None:
        if request.unverifiable:
            super().add_cookie_header(request)
            return
        key = request.get_full_url().partition("#")[0].partition("?")[0]
        with self._cookies_lock:
            if time.time() >= self._valid_until:
                self._forget()
            headers = self._headers.get(key)
            if headers is None:
                headers = self._compute(request)
                if len(self._headers) >= MAX_URLS:
                    self._headers.clear()
                self._headers[key] = headers
        for name, value in headers.items():
            if not request.has_header(name):
                request.add_unredirected_header(name, value)

    def extract_cookies(self, response: Any, request: Any) -> None:
        # Most answers set no cookie, and the standard library finds that out only after taking the jar's
        # lock (a gevent lock in a Locust process) and reading the clock: a few us per request for nothing.
        headers = response.info()
        if headers.get_all("Set-Cookie") or headers.get_all("Set-Cookie2"):
            super().extract_cookies(response, request)

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        with self._cookies_lock:
            super().set_cookie(cookie)
            self._forget()

    def clear(self, domain: str | None = None, path: str | None = None, name: str | None = None) -> None:
        with self._cookies_lock:
            if domain is None and not self._cookies:
                return  # nothing to forget (clients that keep no cookies clear an empty jar per request)
            super().clear(domain, path, name)
            self._forget()

    def _forget(self) -> None:
        self._headers.clear()
        expiries = [c.expires for c in self if c.expires is not None]
        self._valid_until = min(expiries, default=float("inf"))

    def _compute(self, request: Any) -> dict[str, str]:
        """The headers the standard library would add to `request` (it adds only those not present)."""
        probe = _HeaderProbe(request)
        super().add_cookie_header(probe)
        return probe.added


class _HeaderProbe:
    """Stands in for a request while the standard library decides its cookie headers: it answers the
    questions the policy asks from the real request and collects the headers instead of adding them."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.added: dict[str, str] = {}

    def has_header(self, name: str) -> bool:
        return False  # so the stdlib always says what it would add; add_cookie_header keeps set ones

    def add_unredirected_header(self, name: str, value: str) -> None:
        self.added[name] = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)
