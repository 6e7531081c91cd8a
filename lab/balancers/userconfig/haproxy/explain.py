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
    fronts = [s for s in layout.listeners(sections) if not layout.is_stats(s)]
    pools = {s.name: s for s in sections if s.kind in ("backend", "listen")}
    mode, _why = layout.tls_mode(sections, line_of)
    web = "https" if mode != "none" else "http"
    out = []
    for service in SERVICES:
        role = service if service in TCP_SERVICES else web
        candidates = [f for f in fronts if role in layout.roles(f)]
        if not candidates:
            out.append(Reading(service, None, f"no listener on a port of the {role} role", None, ""))
            continue
        host = f"{place.vip.service_host(service, place.topology)}:{place.vip_port(role)}"
        best: tuple[Section, Route] | None = None
        for front in candidates:
            r = route(front, _request(service, host, front), line_of)
            if best is None or (best[1].pool is None and r.pool is not None):
                best = (front, r)
        assert best is not None
        front, r = best
        if r.pool is None:
            out.append(Reading(service, None, r.how, None, "", unread=tuple(r.unknown)))
            continue
        backend = pools.get(r.pool)
        if backend is None:
            out.append(Reading(service, None, f"{r.how}: backend {r.pool} is not in the file", None, ""))
            continue
        bp = read(backend, pools, line_of)
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
            )
        )
    return out


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
