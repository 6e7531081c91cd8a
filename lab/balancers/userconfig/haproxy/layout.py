"""What an HAProxy file listens on and connects to, as the rules and the explanation both read it:
its listeners (frontend/listen sections with `bind` lines) with the role of each port, the stats
listener, its pools (backend/listen sections with `server` lines) and the TLS mode the file amounts to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lab.balancers.userconfig import PORT_ROLES
from lab.balancers.userconfig.haproxy.parse import Line, Section

STATS_WORDS = frozenset({"enable", "uri", "admin", "auth", "realm", "refresh", "show-legends", "show-node"})
LOCAL_PREFIXES = ("unix@", "abns@", "fd@", "sockpair@")  # addresses that are not IP endpoints
MAX_RANGE = 64  # ports of one `bind` range the lab expands


@dataclass(frozen=True)
class Endpoint:
    """One address of a `bind` or `server` line: host ("" when left out), port (None when left out),
    or a local socket (`local`: the whole word, unix@/abns@/a path)."""

    host: str
    port: int | None
    local: str = ""
    offset: bool = False  # a server port written +N/-N (relative to the client's port)


def endpoint(word: str) -> Endpoint | None:
    """A server address, or None when it is no address the lab can read (a variable, a range)."""
    if word.startswith(LOCAL_PREFIXES) or word.startswith("/"):
        return Endpoint("", None, local=word)
    for prefix in ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@", "udp@", "udp4@", "udp6@"):
        if word.startswith(prefix):
            word = word[len(prefix) :]
            break
    if word.startswith("["):  # [v6]:port
        host, _, rest = word[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif word.count(":") > 1:  # bare IPv6: the port is after the last colon only if it is ":::port" style
        host, _, port_text = word.rpartition(":")
    else:
        host, _, port_text = word.partition(":")
    if not port_text:
        return Endpoint(host, None)
    offset = port_text[0] in "+-"
    digits = port_text[1:] if offset else port_text
    if not digits.isdigit():
        return None
    return Endpoint(host, int(digits), offset=offset)


def bind_endpoints(word: str) -> list[Endpoint] | None:
    """The addresses of a `bind` word (a comma list, port ranges expanded); None when one is unreadable."""
    out = []
    for part in word.split(","):
        if part.startswith(LOCAL_PREFIXES) or part.startswith("/"):
            out.append(Endpoint("", None, local=part))
            continue
        host, _, ports = part.rpartition(":")
        low, _, high = ports.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return None
        first, last = int(low), int(high or low)
        if last < first or last - first >= MAX_RANGE:
            return None
        bare = host
        for prefix in ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"):
            bare = bare.removeprefix(prefix)
        out.extend(Endpoint(bare.strip("[]"), port) for port in range(first, last + 1))
    return out


def is_stats(section: Section) -> bool:
    """A stats or admin listener: it shows the stats page (or the Prometheus exporter) and sends
    nothing to a backend."""
    shows = any(len(line.args) >= 1 and line.args[0] in STATS_WORDS for line in section.all("stats"))
    exporter = any("prometheus-exporter" in line.texts() for line in section.all("http-request"))
    routes = section.all("default_backend") or section.all("use_backend") or section.all("server")
    return (shows or exporter) and not routes


def role(port: int, section: Section) -> str | None:
    return "stats" if is_stats(section) else PORT_ROLES.get(port)


def listeners(sections: list[Section]) -> list[Section]:
    """The frontend and listen sections that have `bind` lines."""
    return [s for s in sections if s.kind in ("frontend", "listen") and s.all("bind")]


def roles(section: Section) -> set[str]:
    """The roles of a listener's ports."""
    out = set()
    for line in section.all("bind"):
        for e in (bind_endpoints(line.args[0]) if line.args else None) or []:
            if e.port is not None and (r := role(e.port, section)):
                out.add(r)
    return out


def terminates_tls(line: Line) -> bool:
    return line.has("ssl") or line.option("crt") is not None or line.option("crt-list") is not None


def pools(sections: list[Section]) -> list[Section]:
    """The backend and listen sections that list servers."""
    return [s for s in sections if s.kind in ("backend", "listen") and s.all("server")]


def server_tls(server: Line, section: Section) -> bool:
    """Whether HAProxy speaks TLS to this server (its `ssl`, or its section's / defaults' default-server)."""
    if server.has("no-ssl"):
        return False
    if server.has("ssl"):
        return True
    default = section.last("default-server")
    return bool(default and default.has("ssl"))


def tls_mode(sections: list[Section], line_of: Callable[[int], int]) -> tuple[str, str]:
    """The TLS mode the file amounts to (none, offload, bridge, passthrough) and why, with the line."""
    https = [
        (s, line)
        for s in listeners(sections)
        if "https" in roles(s)
        for line in s.all("bind")
        if line.args
        and any(e.port is not None and role(e.port, s) == "https" for e in bind_endpoints(line.args[0]) or [])
    ]
    if not https:
        return "none", "no listener on an HTTPS port: the clients speak plain HTTP"
    section, bind = https[0]
    where = f"line {line_of(bind.index)}"
    if not terminates_tls(bind):
        if section.mode == "tcp":
            return "passthrough", f"{where} forwards TLS as TCP (mode tcp, no ssl): the CAS end it"
        return "none", f"{where} listens on an HTTPS port without ssl: the clients speak plain HTTP there"
    for pool in pools(sections):
        for server in pool.all("server"):
            e = endpoint(server.args[1]) if len(server.args) > 1 else None
            if (
                server_tls(server, pool)
                and e is not None
                and (e.port is None or PORT_ROLES.get(e.port) == "https")
            ):
                return "bridge", f"{where} ends TLS and line {line_of(server.index)} speaks TLS to the server"
    return "offload", f"{where} ends TLS and no server is spoken to with TLS"
