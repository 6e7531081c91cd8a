"""nginx's `combined` access log lines:

    203.0.113.7 - user1 [06/Feb/2009:12:14:14 +0100] "POST /EWS/Exchange.asmx HTTP/1.1" 200 512 "-"
        "ExchangeServicesClient/14.03.0032.000"

What a line gives: the client's address, the time with its zone, the request line, the User-Agent,
and `$remote_user`, the user name of Basic credentials, which nginx reads from the Authorization header
whether or not it checks them: so Outlook's, EWS applications' and ActiveSync's users are known, while
an OWA browser (forms logon, no Basic credentials) has none. nginx writes a `\\` in a value as `\\x5C`,
so `CONTOSO\\x5Cuser1` is read as `CONTOSO\\user1`. A format that adds fields after the User-Agent still
reads as combined: nginx's own `main` format, whose last field is `"$http_x_forwarded_for"` (addresses
or `-`), gives the clients' addresses behind a balancer that source-NATs; other fields are not used.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from lab.fromlogs.textlog import Clock, LineLogReader, Request, split_target

FORMAT = "nginx-combined"
LINE = re.compile(
    r"^(?P<ip>[0-9A-Fa-f.:]+) \S+ (?P<user>\S+) "
    r"\[(?P<date>\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2}) (?P<zone>[+-]\d{4})\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"'
)
_QUOTED = re.compile(r'"([^"]*)"')
MISFIT = "not an nginx combined line"


def reader(path: Path) -> LineLogReader:
    return LineLogReader(path, FORMAT, LINE, _request, MISFIT)


def _request(match: re.Match[str], clock: Clock) -> Request | None:
    parts = match["request"].split(" ")
    if len(parts) < 2:  # "-" or a bare word: a connection that sent no request (logged as 400)
        return None
    path, query = split_target(parts[1])
    ts = clock.epoch(match["date"], match["zone"])
    return Request(
        ts=-1 if ts is None else ts,
        peer=match["ip"],
        forwarded=_forwarded(match),
        user=match["user"].replace("\\x5C", "\\"),
        agent=match["agent"],
        path=path,
        query=query,
    )


def _forwarded(match: re.Match[str]) -> str:
    """The X-Forwarded-For of nginx's `main` format: the line's last quoted field after the User-Agent,
    when every entry of it is a bare address (not `-`, not an `$upstream_addr` with its port)."""
    extra = _QUOTED.findall(match.string, match.end())
    if not extra:
        return ""
    entries = [e.strip() for e in extra[-1].split(",")]
    try:
        for entry in entries:
            ipaddress.ip_address(entry)
    except ValueError:
        return ""
    return extra[-1]
