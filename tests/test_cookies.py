"""loadgen.cookies: the caching jar sends exactly the Cookie header the standard library's jar sends."""

from __future__ import annotations

import contextlib
import http.cookiejar
import urllib.request
from email.message import Message
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.cookies import CachingCookieJar

# Few URLs, so that a program often asks one again after the jar changed (where a stale cache would show).
HOSTS = ("mail.caslab.test", "autodiscover.caslab.test")
PATHS = ("/", "/owa/auth/logon.aspx", "/ecp/", "/EWS/Exchange.asmx")


class _Answer:
    """What CookieJar.extract_cookies reads from a response: its headers."""

    def __init__(self, set_cookies: list[str]) -> None:
        self._headers = Message()
        for value in set_cookies:
            self._headers["Set-Cookie"] = value

    def info(self) -> Message:
        return self._headers


def _request(url: str, cookie: str | None = None) -> urllib.request.Request:
    request = urllib.request.Request(url)
    if cookie is not None:
        request.add_header("Cookie", cookie)
    return request


def _sent(jar: http.cookiejar.CookieJar, url: str, cookie: str | None = None) -> str | None:
    request = _request(url, cookie)
    jar.add_cookie_header(request)
    return request.get_header("Cookie")


urls = st.builds(
    lambda scheme, host, path, query: f"{scheme}://{host}{path}{query}",
    st.sampled_from(("http", "https")),
    st.sampled_from(HOSTS),
    st.sampled_from(PATHS),
    st.sampled_from(("", "?ae=Folder", "?x=1")),
)
set_cookie_values = st.builds(
    lambda name, value, path, age, secure, domain: "; ".join(
        part
        for part in (
            f"{name}={value}",
            f"Path={path}" if path else "",
            f"Max-Age={age}" if age is not None else "",
            "Secure" if secure else "",
            f"Domain={domain}" if domain else "",
        )
        if part
    ),
    st.sampled_from(("cadata", "UserContext", "exchangecookie", "SERVERID", "OutlookSession")),
    st.text("abc0123", min_size=1, max_size=6),
    st.sampled_from(("", "/", "/", "/owa", "/EWS")),
    st.one_of(st.none(), st.none(), st.integers(0, 30)),
    st.sampled_from((False, False, True)),
    st.sampled_from(("", "", ".caslab.test", "mail.caslab.test")),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("set"), urls, st.lists(set_cookie_values, min_size=1, max_size=3)),
        st.tuples(st.just("send"), urls, st.sampled_from((None, "mine=1"))),
        st.tuples(st.just("wait"), st.integers(1, 20)),
        st.tuples(st.just("clear"), st.sampled_from((None, "mail.caslab.test", ".caslab.test"))),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_caching_jar_sends_what_the_standard_jar_sends(program):
    clock = [1_800_000_000.0]
    with mock.patch("time.time", lambda: clock[0]):
        plain, caching = http.cookiejar.CookieJar(), CachingCookieJar()
        for step in program:
            if step[0] == "set":
                _, url, values = step
                for jar in (plain, caching):
                    jar.extract_cookies(_Answer(values), _request(url))
            elif step[0] == "send":
                _, url, cookie = step
                assert _sent(caching, url, cookie) == _sent(plain, url, cookie), url
            elif step[0] == "wait":
                clock[0] += step[1]
            else:
                for jar in (plain, caching):
                    # The stdlib raises KeyError for a domain it holds nothing for; so does ours.
                    with contextlib.suppress(KeyError):
                        jar.clear(step[1])


def test_a_repeated_url_is_answered_from_the_cache_until_the_jar_changes():
    jar = CachingCookieJar()
    url = "https://mail.caslab.test/EWS/Exchange.asmx"
    jar.extract_cookies(_Answer(["exchangecookie=a1; Path=/"]), _request(url))
    assert _sent(jar, url) == "exchangecookie=a1"
    stdlib = http.cookiejar.CookieJar._cookies_for_request
    with mock.patch.object(
        http.cookiejar.CookieJar, "_cookies_for_request", autospec=True, side_effect=stdlib
    ) as cookies_for_request:
        assert _sent(jar, url + "?op=1") == "exchangecookie=a1"
        assert cookies_for_request.call_count == 0  # the query does not matter: from the cache
        jar.extract_cookies(_Answer(["SERVERID=cas02; Path=/"]), _request(url))
        assert _sent(jar, url) == "exchangecookie=a1; SERVERID=cas02"
        assert cookies_for_request.call_count == 1  # the jar changed: computed anew


def test_clearing_the_jar_stops_its_cookies_at_once():
    jar = CachingCookieJar()
    url = "https://mail.caslab.test/EWS/Exchange.asmx"
    jar.extract_cookies(_Answer(["exchangecookie=a1; Path=/"]), _request(url))
    assert _sent(jar, url) == "exchangecookie=a1"
    jar.clear()
    assert _sent(jar, url) is None


def test_a_cookie_stops_being_sent_when_it_expires():
    clock = [1_800_000_000.0]
    with mock.patch("time.time", lambda: clock[0]):
        jar = CachingCookieJar()
        url = "https://mail.caslab.test/owa/"
        jar.extract_cookies(_Answer(["cadata=x; Path=/; Max-Age=10"]), _request(url))
        assert _sent(jar, url) == "cadata=x"
        clock[0] += 11
        assert _sent(jar, url) is None
