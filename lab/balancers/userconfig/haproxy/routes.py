"""Which backend each service's requests reach in an HAProxy file: its `use_backend` rules and ACLs,
evaluated for the requests the lab's clients send (their paths, the Host they send: the VIP's address).

ACL conditions are read in three values: true, false, or unknown (a fetch the lab cannot know before a
run, such as the client's address or a cookie). The first `use_backend` rule whose condition is true
wins; a rule before it whose condition is unknown is said (the run may route otherwise). Rules that make
the balancer answer by itself (deny, redirect, return, tarpit) count the same way. Fetches read: path and
url (all match methods, `-i`, `,lower`/`,upper`), the Host header, `ssl_fc`, SNI (the lab's clients
connect by address, so they send none), `always_true`/`always_false` and the predefined ACLs that do not
depend on the client.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.balancers.userconfig.haproxy.parse import Line, Section

# A request of each HTTP service as the lab's clients send it (loadgen.wire): (path, query, method).
REQUESTS: dict[str, tuple[str, str, str]] = {
    "owa": ("/owa/", "", "GET"),
    "ecp": ("/ecp/", "rfr=owa", "GET"),
    "ews": ("/EWS/Exchange.asmx", "", "POST"),
    "eas": ("/Microsoft-Server-ActiveSync", "Cmd=Sync&User=user1&DeviceId=D1&DeviceType=iPhone", "POST"),
    "rpchttp": ("/rpc/rpcproxy.dll", "CAS01:6001", "RPC_IN_DATA"),
    "oab": ("/OAB/00000000-0000-0000-0000-000000000000/oab.xml", "", "GET"),
    "autodiscover": ("/Autodiscover/Autodiscover.xml", "", "POST"),
}
ANSWERS = ("deny", "redirect", "return", "tarpit", "reject", "silent-drop", "auth")
# Predefined ACLs whose value the lab knows (its clients speak HTTP/1.1 from 127.x addresses).
_PREDEFINED = {
    "TRUE": True, "FALSE": False, "HTTP": True, "HTTP_1.1": True, "HTTP_1.0": False, "LOCALHOST": True,
}  # fmt: skip


@dataclass(frozen=True)
class Request:
    service: str
    path: str
    query: str
    method: str
    host: str  # the Host header the lab's clients send
    tls: bool  # TLS ended at this listener (ssl_fc)
    http: bool  # the listener reads HTTP (mode http); else paths are not seen


@dataclass
class Route:
    pool: str | None  # the backend reached; None: the balancer answers itself, or nothing takes it
    how: str
    unknown: list[str] = field(default_factory=list)  # conditions the lab could not read on the way


def request_for(service: str, host: str, tls: bool, http: bool) -> Request:
    path, query, method = REQUESTS[service]
    return Request(service, path, query, method, host, tls, http)


def route(frontend: Section, request: Request, line_of: Callable[[int], int]) -> Route:
    """Where `frontend` sends `request`: the first rule that takes it. `line_of` turns a line's index
    into its line as written, for the words that say which rule it was."""
    acls = _acls(frontend)
    unknown: list[str] = []

    def said(line: Line) -> str:
        return f"{' '.join(line.texts())} (line {line_of(line.index)})"

    for line in frontend.lines:
        texts = line.texts()
        if not texts:
            continue
        answers = len(texts) > 1 and texts[0] in ("http-request", "tcp-request") and texts[1] in ANSWERS
        answers = answers or texts[:3] == ["tcp-request", "content", "reject"]
        if answers and (texts[0] != "http-request" or request.http):
            verdict = _condition(texts, acls, request)
            if verdict is None:
                unknown.append(said(line))
            elif verdict:
                return Route(None, f"answered by the balancer: {said(line)}", unknown)
        elif texts[0] == "use_backend" and len(texts) > 1:
            verdict = _condition(texts, acls, request)
            if verdict is None:
                unknown.append(said(line))
            elif verdict:
                if "%[" in texts[1]:
                    unknown.append(f"{said(line)}: a backend chosen at run time")
                    return Route(None, f"chosen at run time: {said(line)}", unknown)
                return Route(texts[1], said(line), unknown)
    default = frontend.last("default_backend")
    if default is not None and default.args:
        return Route(default.args[0], said(default), unknown)
    if frontend.kind == "listen":
        return Route(frontend.name, f"listen {frontend.name}: its own servers", unknown)
    return Route(None, "no use_backend takes it and there is no default_backend", unknown)


def _condition(texts: list[str], acls: dict[str, list[Line]], request: Request) -> bool | None:
    """The rule's condition (`if`/`unless` ...): True when there is none, None when unknown."""
    for i, word in enumerate(texts):
        if word in ("if", "unless"):
            value = _or(texts[i + 1 :], acls, request)
            if value is None:
                return None
            return value if word == "if" else not value
    return True


def _or(words: list[str], acls: dict[str, list[Line]], request: Request) -> bool | None:
    """Terms joined by `or`/`||`, each a run of ANDed, possibly negated ACLs."""
    groups: list[list[str]] = [[]]
    depth = 0
    for word in words:
        if word == "{":
            depth += 1
        elif word == "}":
            depth -= 1
        if depth == 0 and word in ("or", "||"):
            groups.append([])
        else:
            groups[-1].append(word)
    values = [_and(group, acls, request) for group in groups]
    if any(v is True for v in values):
        return True
    if any(v is None for v in values):
        return None
    return False


def _and(words: list[str], acls: dict[str, list[Line]], request: Request) -> bool | None:
    terms: list[tuple[bool, bool | None]] = []
    i, negate = 0, False
    while i < len(words):
        word = words[i]
        if word == "!":
            negate, i = True, i + 1
            continue
        if word.startswith("!"):
            negate, word = True, word[1:]
        if word == "{":
            end = _closing(words, i)
            value = _criterion(words[i + 1 : end], request)
            i = end + 1
        else:
            value = _named(word, acls, request)
            i += 1
        terms.append((negate, value))
        negate = False
    result: bool | None = True
    for negated, value in terms:
        if value is None:
            result = None if result is not False else False
            continue
        if value == negated:  # this term is false
            return False
    return result


def _closing(words: list[str], start: int) -> int:
    depth = 0
    for j in range(start, len(words)):
        depth += words[j] == "{"
        depth -= words[j] == "}"
        if depth == 0:
            return j
    return len(words) - 1


def _named(name: str, acls: dict[str, list[Line]], request: Request) -> bool | None:
    if name in acls:  # several lines of one name are ORed
        values = [_criterion(line.args[1:], request) for line in acls[name]]
        if any(v is True for v in values):
            return True
        return None if any(v is None for v in values) else False
    return _PREDEFINED.get(name)


def _acls(section: Section) -> dict[str, list[Line]]:
    out: dict[str, list[Line]] = {}
    for line in section.all("acl"):
        if len(line.args) >= 2:
            out.setdefault(line.args[0], []).append(line)
    return out


_FETCH = re.compile(r"^(?P<name>[a-z0-9_.]+)(?:\((?P<arg>[^)]*)\))?(?P<conv>(?:,[a-z0-9_]+(?:\([^)]*\))?)*)$")
_SUFFIXES = ("beg", "end", "sub", "dir", "dom", "reg", "len", "str")


def _criterion(words: list[str], request: Request) -> bool | None:
    """One ACL criterion (`path_beg -i /owa /OWA`): fetch, flags, patterns."""
    if not words:
        return None
    match = _FETCH.match(words[0])
    if not match:
        return None
    name, arg, conv = match.group("name"), match.group("arg") or "", match.group("conv")
    method = "str"
    for suffix in _SUFFIXES:
        if name.endswith("_" + suffix):
            name, method = name[: -len(suffix) - 1], suffix
            break
    value = _fetch(name, arg.strip().lower(), request)
    if value is _UNKNOWN:
        return None
    for converter in filter(None, conv.split(",")):
        if converter == "lower" and isinstance(value, str):
            value = value.lower()
        elif converter == "upper" and isinstance(value, str):
            value = value.upper()
        else:
            return None
    ignore_case, patterns, i = False, [], 1
    while i < len(words):
        word = words[i]
        if word == "-i":
            ignore_case = True
        elif word == "-m" and i + 1 < len(words):
            method, i = words[i + 1], i + 1
        elif word in ("-f", "-M") or word.startswith("-f"):
            return None  # patterns from a file the lab does not read
        elif word in ("-n", "-u", "--"):
            pass
        else:
            patterns.append(word)
        i += 1
    if isinstance(value, bool):
        return value if not patterns else None
    if value is None:  # the sample does not exist (no SNI): nothing matches, not even -m found
        return False
    if method == "found":
        return True
    return any(_matches(value, p, method, ignore_case) for p in patterns)


_UNKNOWN = object()


def _fetch(name: str, arg: str, request: Request) -> object:
    """The sample a fetch gives for the request: a string, a bool, None (absent), or _UNKNOWN."""
    if name in ("always_true", "always_false"):
        return name == "always_true"
    if name in ("ssl_fc",):
        return request.tls
    if name in ("ssl_fc_sni", "req.ssl_sni", "req_ssl_sni", "ssl_sni"):
        return None
    if not request.http:
        return _UNKNOWN
    if name in ("path", "req.path"):
        return request.path
    if name in ("url", "req.url"):
        return request.path + (f"?{request.query}" if request.query else "")
    if name == "query":
        return request.query or None
    if name == "base":
        return request.host.split(":")[0] + request.path
    if name in ("hdr", "req.hdr", "req.fhdr", "fhdr") and arg == "host":
        return request.host
    return _UNKNOWN


def _matches(value: str, pattern: str, method: str, ignore_case: bool) -> bool:
    if method == "reg":
        return re.search(pattern, value, re.IGNORECASE if ignore_case else 0) is not None
    if ignore_case:
        value, pattern = value.lower(), pattern.lower()
    if method == "str":
        return value == pattern
    if method == "beg":
        return value.startswith(pattern)
    if method == "end":
        return value.endswith(pattern)
    if method == "sub":
        return pattern in value
    if method == "dir":  # slash-delimited
        return f"/{pattern.strip('/')}/" in f"/{value.split('?')[0].strip('/')}/"
    if method == "dom":  # dot-delimited (slashes and colons delimit too)
        return f".{pattern.strip('.')}." in "." + re.sub(r"[/:]", ".", value) + "."
    if method == "len":
        return pattern.isdigit() and len(value) == int(pattern)
    return False
