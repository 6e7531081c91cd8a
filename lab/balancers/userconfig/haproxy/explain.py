"""Per service, what an HAProxy file does: the listener the lab's clients reach (the HTTPS one when the
file has one, else HTTP; MAPI and Address Book by their ports), the backend its routes send the
service's requests to, and that backend's persistence and timeouts."""

from __future__ import annotations

from collections.abc import Callable

from caslab.vocab import SERVICES, TCP_SERVICES
from lab.balancers.userconfig import Place, Reading, Source, Timeout
from lab.balancers.userconfig.haproxy import layout
from lab.balancers.userconfig.haproxy.parse import Section, parse, seconds
from lab.balancers.userconfig.haproxy.persistence import read
from lab.balancers.userconfig.haproxy.routes import Request, Route, request_for, route


def readings(source: Source, place: Place) -> list[Reading]:
    _lines, sections = parse(source.text)
    line_of = source.line_of
    mode, _why = layout.tls_mode(sections, line_of)
    out = []
    for service in SERVICES:
        path = _path(service, sections, place, mode, line_of)
        if isinstance(path, Reading):
            out.append(path)
            continue
        front, r, backend = path
        bp = read(backend, _pools(sections), line_of)
        timeouts = [Timeout(n, s, line_of(line.index)) for n, s, line in bp.timeouts]
        timeouts += _idle_timeouts(front, backend, line_of)
        out.append(
            Reading(
                service,
                r.pool,
                r.how,
                bp.persistence,
                bp.words,
                tuple(timeouts),
                tuple(r.unknown) + bp.unread,
                bp.rule,
                tcp=backend.mode != "http",
            )
        )
    return out


def notes(source: Source, place: Place) -> list[str]:
    """What the file does to Outlook Anywhere beyond persistence and timeouts. An RPC/HTTP channel is one
    long request whose body (IN) or answer (OUT) carries every call, for as long as Outlook runs. In HTTP
    mode, HAProxy sends each piece with MSG_MORE unless `option http-no-delay` is set in the frontend or
    the backend, and the kernel holds it up to 200 ms (HAProxy's manual); `option http-buffer-request`
    waits for a body that never ends."""
    _lines, sections = parse(source.text)
    mode, _why = layout.tls_mode(sections, source.line_of)
    path = _path("rpchttp", sections, place, mode, source.line_of)
    if isinstance(path, Reading):
        return []
    front, r, backend = path
    if backend.mode != "http":
        return []
    out = []
    if not (_option_set(front, "http-no-delay") or _option_set(backend, "http-no-delay")):
        out.append(
            f"Outlook Anywhere reaches backend {r.pool} in HTTP mode without `option http-no-delay`: HAProxy "
            "holds each piece of an RPC/HTTP channel up to 200 ms, so every Outlook call waits about 0.4 s "
            "(measured here: ~415 ms against ~1 ms with the option). The run measures it as written."
        )
    if _option_set(front, "http-buffer-request") or _option_set(backend, "http-buffer-request"):
        out.append(
            f"Outlook Anywhere reaches backend {r.pool} with `option http-buffer-request`: HAProxy waits for "
            "an RPC_IN_DATA body that never ends and answers 408 when `timeout http-request` runs out "
            "(measured: no Outlook Anywhere connection opened). The run measures it as written."
        )
    return out


def _pools(sections: list[Section]) -> dict[str, Section]:
    return {s.name: s for s in sections if s.kind in ("backend", "listen")}


def _path(
    service: str, sections: list[Section], place: Place, mode: str, line_of: Callable[[int], int]
) -> tuple[Section, Route, Section] | Reading:
    """The listener the lab's clients of `service` reach, its route and the backend it leads to; or a
    Reading saying why there is none (no listener, no route, a backend not in the file)."""
    fronts = [s for s in layout.listeners(sections) if not layout.is_stats(s)]
    role = service if service in TCP_SERVICES else ("https" if mode != "none" else "http")
    candidates = [f for f in fronts if role in layout.roles(f)]
    if not candidates:
        return Reading(service, None, f"no listener on a port of the {role} role", None, "")
    host = f"{place.vip.service_host(service, place.topology)}:{place.vip_port(role)}"
    best: tuple[Section, Route] | None = None
    for front in candidates:
        r = route(front, _request(service, host, front), line_of)
        if best is None or (best[1].pool is None and r.pool is not None):
            best = (front, r)
    assert best is not None
    front, r = best
    if r.pool is None:
        return Reading(service, None, r.how, None, "", unread=tuple(r.unknown))
    backend = _pools(sections).get(r.pool)
    if backend is None:
        return Reading(service, None, f"{r.how}: backend {r.pool} is not in the file", None, "")
    if not backend.all("server") and not backend.all("server-template"):
        why = f"{r.how}: backend {r.pool} has no server: HAProxy answers 503 (or its errorfile for 503)"
        return Reading(service, None, why, None, "")
    return front, r, backend


def _option_set(section: Section, name: str) -> bool:
    """Whether `option NAME` holds in `section`: its last `option NAME` or `no option NAME` line, else
    its defaults'."""
    lines = section.all("option", name) + section.all("no", "option", name)
    if lines:
        return max(lines, key=lambda line: line.index).keyword == "option"
    return section.defaults is not None and _option_set(section.defaults, name)


def _request(service: str, host: str, front: Section) -> Request:
    tls = any(layout.terminates_tls(b) for b in front.all("bind"))
    http = front.mode == "http"
    if service in TCP_SERVICES:
        return Request(service, "", "", "", host, tls, False)
    return request_for(service, host, tls, http)


def _idle_timeouts(front: Section, backend: Section, line_of: Callable[[int], int]) -> list[Timeout]:
    out = []
    for section, names in ((front, ("client",)), (backend, ("server", "tunnel", "http-keep-alive"))):
        for name in names:
            line = section.last("timeout", name)
            if line is not None and len(line.args) > 1 and seconds(line.args[1]) is not None:
                out.append(Timeout(f"timeout {name}", seconds(line.args[1]) or 0.0, line_of(line.index)))
    return out
