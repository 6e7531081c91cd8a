"""Which upstream each service's requests reach in an nginx file, and the persistence of that upstream.

nginx picks a request's `server` block by the listening address, then by `server_name`: the lab's
clients connect by address and send it as Host, which no production `server_name` matches, so they reach
the default server of each listening address (`default_server`, else the first block listening there);
the explanation says so where a file names its servers. Within the server, a location is chosen as nginx
does (exact `=`, then the longest prefix, `^~` ending the search, then regexes in file order, `~*`
ignoring case; nested locations likewise), for the path the lab's clients send (farm.CLIENT_PATHS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lab.balancers.userconfig.farm import header_name
from lab.balancers.userconfig.nginx.tree import Directive
from lab.model import Persistence


@dataclass(frozen=True)
class Target:
    """Where a location sends requests: an upstream, or nothing (the balancer answers itself)."""

    upstream: str | None
    how: str  # the location and its proxy_pass, with lines, or why there is none
    location: Directive | None
    via_map: Directive | None = None  # proxy_pass $var: the map that turns a cookie into an upstream
    unknown: tuple[str, ...] = ()


def location_for(server: Directive, path: str) -> tuple[Directive | None, list[str]]:
    """The location of `server` that nginx chooses for `path`, and what the lab could not evaluate."""
    return _search(server.all("location"), path)


def _search(locations: list[Directive], path: str) -> tuple[Directive | None, list[str]]:
    unknown: list[str] = []
    best: Directive | None = None
    best_len = -1
    regexes: list[tuple[Directive, str, bool]] = []
    for loc in locations:
        args = loc.args
        if not args or args[0].startswith("@"):
            continue
        if args[0] == "=" and len(args) > 1:
            if path == args[1]:
                return _nested(loc, path, unknown)
            continue
        if args[0] in ("~", "~*") and len(args) > 1:
            regexes.append((loc, args[1], args[0] == "~*"))
            continue
        prefix = args[1] if args[0] == "^~" and len(args) > 1 else args[0]
        if path.startswith(prefix) and len(prefix) > best_len:
            best, best_len = loc, len(prefix)
    if best is not None and best.args[0] == "^~":
        return _nested(best, path, unknown)
    for loc, pattern, caseless in regexes:
        try:
            hit = re.search(pattern, path, re.IGNORECASE if caseless else 0)
        except re.error:
            unknown.append(f"location {' '.join(loc.args)}: a regex the lab cannot read")
            continue
        if hit:
            return _nested(loc, path, unknown)
    if best is None:
        return None, unknown
    return _nested(best, path, unknown)


def _nested(loc: Directive, path: str, unknown: list[str]) -> tuple[Directive | None, list[str]]:
    inner, more = _search(loc.all("location"), path)
    return (inner or loc), unknown + more


def default_server(servers: list[Directive], port_of: dict[int, int]) -> Directive | None:
    """The server block that takes requests with a Host no server_name matches: the one whose listen has
    `default_server` (or `default`), else the first. `port_of` maps a server's id to its port of interest."""
    candidates = [s for s in servers if id(s) in port_of]
    for s in candidates:
        if any("default_server" in d.args or "default" in d.args[1:] for d in s.all("listen")):
            return s
    return candidates[0] if candidates else None


def target(location: Directive | None, upstreams: dict[str, Directive], maps: dict[str, Directive]) -> Target:
    if location is None:
        return Target(None, "no location takes it: nginx answers 404", None)
    where = f"location {' '.join(location.args)} (line {location.index + 1})"
    proxy = location.first("proxy_pass")
    if proxy is None or not proxy.args:
        answers = location.first("return") or location.first("stub_status")
        words = f", {answers.text}" if answers is not None else ""
        return Target(None, f"{where}{words}: no proxy_pass, nginx answers itself", location)
    url = proxy.args[0]
    host = re.sub(r"^[a-z]+://", "", url).split("/")[0]
    if host.startswith("$"):
        m = maps.get(host)
        if m is not None and m.block:
            default = next((d.args[0] for d in m.block if d.name == "default" and d.args), None)
            if default in upstreams:
                return Target(default, f"{where}: proxy_pass {url} (map line {m.index + 1})", location, m)
        return Target(
            None,
            f"{where}: proxy_pass {url}, a variable the lab cannot follow",
            location,
            unknown=(f"proxy_pass {url}",),
        )
    name = host.split(":")[0] if host not in upstreams else host
    if name in upstreams:
        return Target(name, f"{where}: proxy_pass {url}", location)
    return Target(
        None,
        f"{where}: proxy_pass {url}, not an upstream of the file",
        location,
        unknown=(f"proxy_pass {url}",),
    )


def persistence(
    upstream: Directive, maps: dict[str, Directive], via_map: Directive | None, location: Directive | None
) -> tuple[Persistence | None, str, str, list[str]]:
    """The lab's method an upstream's balancing amounts to (None: none of the lab's), the file's words,
    the rule that holds the client's CAS (equal text for services that share one), and what the lab
    cannot read."""
    unread: list[str] = []
    # A plain hash picks the server by its index, whatever its port: upstreams that list the same hosts
    # in one order send one key to one CAS (MAPI and Address Book); a consistent hash depends on ports.
    hosts = ", ".join(s.args[0].rsplit(":", 1)[0] for s in upstream.all("server") if s.args)
    if via_map is not None and via_map.args and via_map.args[0].startswith("$cookie_"):
        cookie = via_map.args[0][len("$cookie_") :]
        sets = location is not None and any(
            d.args and d.args[0].lower() == "set-cookie" for d in location.all("add_header")
        )
        words = f"map {via_map.args[0]} {via_map.args[1]} (line {via_map.index + 1})"
        if not sets:
            unread.append("the route cookie is read but no add_header Set-Cookie sets it here")
        return (
            Persistence("lb-cookie", timeout_s=_max_age(maps, cookie) or 1800.0),
            words,
            f"cookie {cookie}",
            unread,
        )
    for name in ("sticky", "random", "ntlm"):
        d = upstream.first(name)
        if d is not None:
            return None, f"{d.text} (line {d.index + 1})", "", [f"{d.text}: not one of the lab's methods"]
    least = upstream.first("least_conn")
    if least is not None:
        return Persistence("leastconn"), f"least_conn (line {least.index + 1})", "", unread
    ip_hash = upstream.first("ip_hash")
    if ip_hash is not None:
        unread.append("ip_hash keys on the first three octets of an IPv4 address: a whole /24 shares a CAS")
        return (
            Persistence("source-ip"),
            f"ip_hash (line {ip_hash.index + 1})",
            f"ip_hash over {hosts}",
            unread,
        )
    h = upstream.first("hash")
    if h is None or not h.args:
        return Persistence("none"), "round robin (no balancing directive)", "", unread
    key, consistent = h.args[0], "consistent" in h.args[1:]
    words = f"{h.text} (line {h.index + 1})"
    rule = f"hash {key} on {upstream.args[0]}" if consistent else f"hash {key} over {hosts}"
    method = key_method(key, maps)
    if method is None:
        unread.append(f"hash {key}: a key the lab cannot name")
    return method, words, rule, unread


def key_method(key: str, maps: dict[str, Directive]) -> Persistence | None:
    """The lab's method of a hash key: the client address, a cookie, a header, or a map that takes a
    cookie or header and falls back to the address."""
    if key in ("$remote_addr", "$binary_remote_addr"):
        return Persistence("source-ip")
    if key.startswith("$cookie_"):
        return Persistence("cookie-hash", key[len("$cookie_") :])
    if key.startswith("$http_"):
        return Persistence("header", header_name(key[len("$http_") :]))
    m = maps.get(key)
    if m is not None and m.block and m.args:
        source = m.args[0]
        entries = {d.name: d.args for d in m.block}
        empty = entries.get('""') or entries.get("''") or entries.get("")
        default = entries.get("default")
        if empty == ["$remote_addr"] and default == [source]:
            primary = key_method(source, maps)
            if primary is not None and primary.method in ("cookie-hash", "header"):
                return Persistence(primary.method, primary.name, fallback=Persistence("source-ip"))
    return None


def _max_age(maps: dict[str, Directive], cookie: str) -> float | None:
    """The Max-Age of the route cookie `cookie`, where a map builds its Set-Cookie value."""
    for m in maps.values():
        for d in m.block or ():
            for arg in d.args:
                found = re.search(rf"{re.escape(cookie)}=.*Max-Age=(\d+)", arg)
                if found:
                    return float(found.group(1))
    return None


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000}


def seconds(value: str) -> float | None:
    """An nginx time ("60s", "1m30s", "500ms", "300") in seconds; None when it is not one."""
    if value.isdigit():
        return float(value)
    parts = re.findall(r"(\d+)(ms|[smhdwMy])", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(int(n) * _UNITS[u] for n, u in parts)


def duration(value: float) -> str:
    """Seconds as an nginx time: whole seconds when exact, else milliseconds."""
    return f"{int(value)}s" if value == int(value) else f"{max(1, round(value * 1000))}ms"
