"""The persistence of one HAProxy backend, in the lab's words where it is one of the lab's methods
(lab.model.Persistence), and the file's words always.

What maps to what (the inverse of how lab.balancers.drivers.haproxy renders each method):
- `cookie NAME insert ...` -> lb-cookie (maxidle, else maxlife, is its lifetime); `cookie NAME rewrite|
  prefix` and a passive `cookie NAME` -> app-cookie NAME (the CAS sets NAME, the balancer marks it);
- `stick on|match KEY` (with `stick store-request`/`store-response`): `src` -> source-ip; `req.hdr(N)`
  -> header N; `req.cook(N)` with `stick store-response res.cook(N)` -> app-cookie N, without it
  -> cookie-hash N (learned from the client's first request, not hashed, but the same for clients);
  `payload_lv(43,1)` / `req.ssl_sid` -> ssl-session-id; a second rule on `src` after a header or
  cookie -> its source-ip fallback. The stick table's `expire` is the timeout;
- `balance`: roundrobin, static-rr, random, first -> none; leastconn; source -> source-ip;
  `hdr(N)` -> header N; `hash req.cook(N)` -> cookie-hash N; `hash req.hdr(N)` -> header N;
  `hash src` -> source-ip; `hash var(txn.V)` with `http-request set-var(txn.V)` from a cookie or header,
  then `src` when it was not found -> that method with a source-ip fallback. uri, url_param and
  rdp-cookie are none of the lab's methods.
Conditions on stick rules, `use-server`, `force-persist`, `ignore-persist` and `option persist` are
said as unread: the run measures what they do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from lab.balancers.userconfig.haproxy.parse import Line, Section, seconds
from lab.model import Persistence

_KEY = re.compile(r"^(?P<fetch>[a-z0-9_.]+)(?:\((?P<arg>[^)]*)\))?$")


@dataclass(frozen=True)
class BackendPersistence:
    persistence: Persistence | None
    words: str
    rule: str  # what holds the client's CAS: "stick table T", "cookie N", "hash K"
    timeouts: tuple[tuple[str, float, Line], ...]  # (name, seconds, line)
    unread: tuple[str, ...]


def read(backend: Section, sections: dict[str, Section], line_of: Callable[[int], int]) -> BackendPersistence:
    """What `backend` does to keep a client on one server."""
    timeouts: list[tuple[str, float, Line]] = []
    unread: list[str] = []
    said: list[str] = []

    def say(line: Line) -> None:
        said.append(" ".join(line.texts()))

    balance = backend.last("balance")
    algorithm = balance.args if balance is not None else ["roundrobin"]
    placed = _balance(algorithm, backend)
    if balance is not None:
        say(balance)
    for keyword in ("use-server", "force-persist", "ignore-persist"):
        for line in backend.all(keyword):
            unread.append(f"{' '.join(line.texts())} (line {line_of(line.index)})")
    persist = backend.last("option", "persist")
    if persist is not None:
        unread.append(f"option persist (line {line_of(persist.index)})")

    cookie = backend.last("cookie")
    if cookie is not None and cookie.args:
        say(cookie)
        name = cookie.args[0]
        for option in ("maxidle", "maxlife"):
            value = cookie.option(option)
            if value and seconds(value) is not None:
                timeouts.append((f"cookie {option}", seconds(value), cookie))
        lifetime = next((t[1] for t in timeouts if t[0].startswith("cookie")), math.inf)
        if cookie.has("insert"):
            p = Persistence("lb-cookie", timeout_s=lifetime)
        else:
            p = Persistence("app-cookie", name, timeout_s=lifetime)
        return BackendPersistence(p, "; ".join(said), f"cookie {name}", tuple(timeouts), tuple(unread))

    sticks = [line for line in backend.lines if line.keyword == "stick" and len(line.args) >= 2]
    if sticks:
        return _sticky(backend, sections, sticks, said, timeouts, unread, line_of)
    if placed is None:
        unread.append(f"balance {' '.join(algorithm)}: none of the lab's methods")
        return BackendPersistence(None, "; ".join(said), "", tuple(timeouts), tuple(unread))
    p, rule = placed
    return BackendPersistence(
        p, "; ".join(said) or "balance roundrobin", rule, tuple(timeouts), tuple(unread)
    )


def _sticky(
    backend: Section,
    sections: dict[str, Section],
    sticks: list[Line],
    said: list[str],
    timeouts: list[tuple[str, float, Line]],
    unread: list[str],
    line_of: Callable[[int], int],
) -> BackendPersistence:
    """Persistence from `stick` rules: the first rule that reads the request is the method, a later one
    on `src` its fallback."""
    requests: list[tuple[Line, str, str]] = []  # (line, fetch, arg) of rules that read requests
    responses: list[tuple[str, str]] = []
    for line in sticks:
        said.append(" ".join(line.texts()))
        kind, key = line.args[0], line.args[1]
        match = _KEY.match(key)
        fetch, arg = (match.group("fetch"), match.group("arg") or "") if match else (key, "")
        if line.has("if", "unless"):
            unread.append(f"{' '.join(line.texts())} (line {line_of(line.index)}): a condition")
        if kind in ("on", "match", "store-request"):
            if kind != "store-request" or not any(r[1] == fetch for r in requests):
                requests.append((line, fetch, arg))
        elif kind == "store-response":
            responses.append((fetch, arg))
    methods = []
    for _line, fetch, arg in requests:
        method = _stick_method(fetch, arg, responses)
        if method is None or method not in methods:
            methods.append(method)
    table_line = requests[0][0] if requests else sticks[0]
    table_name = table_line.option("table") or backend.name
    table = _table(sections.get(table_name))
    if table is not None:
        said.append(" ".join(table.texts()))
        expire = table.option("expire")
        if expire and seconds(expire) is not None:
            timeouts.append(("stick-table expire", seconds(expire), table))
    timeout = next((t[1] for t in timeouts if t[0] == "stick-table expire"), math.inf)
    words = "; ".join(said)
    rule = f"stick table {table_name}"
    if not methods or methods[0] is None:
        unread.append(f"stick on {requests[0][1] if requests else '?'}: none of the lab's methods")
        return BackendPersistence(None, words, rule, tuple(timeouts), tuple(unread))
    first = methods[0]
    fallback = None
    if (
        len(methods) > 1
        and methods[1] == ("source-ip", None)
        and first[0] in ("header", "cookie-hash", "app-cookie")
    ):
        fallback = Persistence("source-ip", timeout_s=timeout)
    p = Persistence(first[0], first[1], timeout, fallback)
    return BackendPersistence(p, words, rule, tuple(timeouts), tuple(unread))


def _stick_method(fetch: str, arg: str, responses: list[tuple[str, str]]) -> tuple[str, str | None] | None:
    if fetch == "src":
        return ("source-ip", None)
    if fetch in ("req.hdr", "hdr", "req.fhdr", "fhdr") and arg:
        return ("header", arg.split(",")[0].strip())
    if fetch in ("req.cook", "cook", "cookie") and arg:
        learned = any(f in ("res.cook", "set-cookie", "scook") and a == arg for f, a in responses)
        return ("app-cookie" if learned else "cookie-hash", arg)
    if fetch in ("payload_lv", "req.payload_lv", "req.ssl_sid", "req_ssl_sid"):
        return ("ssl-session-id", None)
    return None


def _table(section: Section | None) -> Line | None:
    if section is None:
        return None
    return section.last("stick-table", inherit=False)


def _balance(args: list[str], backend: Section) -> tuple[Persistence, str] | None:
    """The persistence a `balance` line amounts to alone, and its rule; None for none of the lab's."""
    algorithm = args[0] if args else "roundrobin"
    if algorithm in ("roundrobin", "static-rr", "random", "first") or algorithm.startswith("random("):
        return Persistence("none"), ""
    if algorithm == "leastconn":
        return Persistence("leastconn"), ""
    if algorithm == "source":
        return Persistence("source-ip", timeout_s=math.inf), "hash src"
    match = _KEY.match(algorithm)
    if match and match.group("fetch") == "hdr" and match.group("arg"):
        name = match.group("arg")
        return Persistence("header", name, math.inf), f"hash hdr({name})"
    if algorithm == "hash" and len(args) > 1:
        return _hashed(args[1], backend)
    return None


def _hashed(expression: str, backend: Section) -> tuple[Persistence, str] | None:
    """`balance hash EXPR`: a cookie, a header, the source, or a variable set from them."""
    match = _KEY.match(expression)
    if not match:
        return None
    fetch, arg = match.group("fetch"), match.group("arg") or ""
    rule = f"hash {expression}"
    if fetch == "src":
        return Persistence("source-ip", timeout_s=math.inf), rule
    if fetch in ("req.cook", "cook") and arg:
        return Persistence("cookie-hash", arg, math.inf), rule
    if fetch in ("req.hdr", "hdr", "req.fhdr") and arg:
        return Persistence("header", arg, math.inf), rule
    if fetch == "var" and arg:
        sets = [line for line in backend.lines if line.texts()[:2] == ["http-request", f"set-var({arg})"]]
        keys = [line.args[1] for line in sets if len(line.args) > 1]
        first = _hashed(keys[0], backend) if keys else None
        if first is None:
            return None
        primary = first[0]
        fallback = None
        if len(keys) > 1 and keys[1] == "src" and primary.method in ("cookie-hash", "header"):
            fallback = Persistence("source-ip", timeout_s=math.inf)
        return Persistence(primary.method, primary.name, math.inf, fallback), rule
    return None
