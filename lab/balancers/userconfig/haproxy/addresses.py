"""Every address an HAProxy file would listen on or connect to, read from the file as run (the safety
check's only input, so it reads every directive with a host, whether or not a rule rewrote it).

Listeners: `bind`, `stats socket`. Connections: `server` (and its `addr`, `port`, `socks4`),
`default-server addr`, `dispatch`, `log` targets, `tcp-check connect` / `http-check connect addr`.
What the lab cannot place is kind "name": the sections and directives that reach hosts by themselves
(resolvers, peers, mailers, rings, programs, log forwarding, Lua, external checks, server templates,
`source`, destinations set at run time, DNS resolution, mail alerts).
"""

from __future__ import annotations

from lab.balancers.userconfig import Address
from lab.balancers.userconfig.haproxy import layout
from lab.balancers.userconfig.haproxy.parse import Line, Section, parse

NAMED_SECTIONS = ("resolvers", "peers", "mailers", "ring", "program", "log-forward")
NAMED_KEYWORDS = (
    "lua-load", "lua-load-per-thread", "external-check", "server-template", "source", "email-alert",
    "parse-resolv-conf", "nameserver", "peer", "mailer",
)  # fmt: skip
NAMED_ACTIONS = ("do-resolve", "set-dst", "set-dst-port")
LOG_LOCAL = ("global", "stdout", "stderr")


def addresses(name: str, text: str) -> list[Address]:
    """The addresses of one HAProxy file as run."""
    _lines, sections = parse(text)
    out: list[Address] = []
    for section in sections:
        if section.kind in NAMED_SECTIONS:
            out.append(_at(name, section.header, "name", section.kind, section.name or section.kind))
        for line in section.lines:
            if line.words:
                out += _of_line(name, section, line)
    return out


def _at(name: str, line: Line, kind: str, what: str, host: str, port: int | None = None) -> Address:
    return Address(name, line.index + 1, kind, what, host, port, line.raw)


def _of_line(name: str, section: Section, line: Line) -> list[Address]:
    texts, keyword = line.texts(), line.keyword
    out: list[Address] = []

    def endpoint(word: str, what: str, kind: str) -> None:
        e = layout.endpoint(word)
        if e is None:
            out.append(_at(name, line, "name", what, word))
        elif e.local:
            if not e.local.startswith("abns@"):  # abstract sockets stay inside this network namespace
                path = e.local.split("@", 1)[1] if "@" in e.local else e.local
                out.append(
                    _at(name, line, "unix" if e.local.startswith(("unix@", "/")) else "name", what, path)
                )
        elif e.offset:
            out.append(_at(name, line, "name", what, word))
        else:
            out.append(_at(name, line, kind, what, e.host, e.port))

    if keyword in NAMED_KEYWORDS or texts[:2] == ["option", "external-check"]:
        out.append(_at(name, line, "name", keyword, " ".join(texts[1:3]) or keyword))
    if keyword in ("http-request", "tcp-request", "http-response") and any(
        t.split("(")[0] in NAMED_ACTIONS for t in texts[1:3]
    ):
        out.append(_at(name, line, "name", " ".join(texts[:2]), " ".join(texts[1:3])))
    if keyword == "stick-table" and line.has("peers"):
        out.append(_at(name, line, "name", "stick-table peers", line.option("peers") or ""))
    if keyword == "bind" and line.args:
        endpoints = layout.bind_endpoints(line.args[0])
        if endpoints is None:
            out.append(_at(name, line, "name", "bind", line.args[0]))
        for e in endpoints or []:
            if e.local:
                endpoint(e.local, "bind", "listen")
            else:
                out.append(_at(name, line, "listen", "bind", e.host, e.port))
    elif texts[:2] == ["stats", "socket"] and len(texts) > 2:
        endpoint(texts[2], "stats socket", "listen")
    elif keyword == "server" and len(texts) > 2:
        endpoint(texts[2], "server", "connect")
        e = layout.endpoint(texts[2])
        port = line.option("port")
        addr = line.option("addr")
        if addr is not None or (port is not None and e is not None and not e.local):
            host = addr if addr is not None else (e.host if e else "")
            out.append(
                _at(
                    name,
                    line,
                    "connect",
                    "server check",
                    host,
                    int(port) if port and port.isdigit() else (e.port if e else None),
                )
            )
        if line.option("socks4"):
            endpoint(line.option("socks4") or "", "server socks4", "connect")
        if line.has("resolvers"):
            out.append(_at(name, line, "name", "server resolvers", line.option("resolvers") or ""))
    elif keyword == "default-server" and line.option("addr"):
        out.append(_at(name, line, "connect", "default-server addr", line.option("addr") or "", None))
    elif keyword == "dispatch" and line.args:
        endpoint(line.args[0], "dispatch", "connect")
    elif (
        keyword == "log"
        and line.args
        and line.args[0] not in LOG_LOCAL
        and not line.args[0].startswith(("fd@", "ring@"))
    ):
        endpoint(line.args[0], "log", "connect")
    elif keyword in ("tcp-check", "http-check") and line.args[:1] == ["connect"] and line.option("addr"):
        port = line.option("port")
        out.append(_at(name, line, "connect", f"{keyword} connect", line.option("addr") or "",
                       int(port) if port and port.isdigit() else None))  # fmt: skip
    return out
