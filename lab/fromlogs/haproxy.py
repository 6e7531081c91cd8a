"""HAProxy's `option httplog` lines, as syslog writes them:

    Feb  6 12:14:14 lb1 haproxy[14389]: 10.0.1.2:33317 [06/Feb/2009:12:14:14.655] https~ owa/cas01
        10/0/30/69/109 200 2750 - - ---- 1/1/1/1/0 0/0 {ua|xff} "GET /owa/ HTTP/1.1"

What a line gives: the client's address and the time (the accept date: HAProxy writes the local time
of its host without a zone, read here as UTC), the request line (method, path, query). What it does
not give by default: the User-Agent and the user. So from an httplog alone, ActiveSync devices are
still known (DeviceId, DeviceType and User are in their query) and every service by its path, but
Outlook 2007 cannot be told from 2010, browsers and EWS applications cannot be told apart by their
agent, and only ActiveSync has users. Headers HAProxy was told to capture (`capture request header
User-Agent len 128`) are logged between braces in the order of the config, without their names:
name them with `--haproxy-capture User-Agent,X-Forwarded-For` (the same order) and they are read.
"""

from __future__ import annotations

import re
from pathlib import Path

from lab.fromlogs.textlog import Clock, LineLogReader, Request, split_target

FORMAT = "haproxy-httplog"
LINE = re.compile(
    r"(?P<ip>[0-9A-Fa-f.:]+):(?P<port>\d+) "
    r"\[(?P<date>\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2})(?:\.\d+)?\] "
    r"(?P<frontend>\S+) (?P<backend>[^\s/]+)/(?P<server>\S+) "
    r"(?P<timers>[-+\d]+(?:/[-+\d]+){3,6}) (?P<status>-?\d+) (?P<bytes>\+?\d+) "
    r"\S+ \S+ (?P<termination>\S{4}) (?P<connections>[+\d]+(?:/[+\d]+){4}) (?P<queues>\d+/\d+)"
    r"(?: \{(?P<captured>[^}]*)\})?(?: \{[^}]*\})? "
    r'"(?P<request>[^"]*)"'
)
MISFIT = "not an HAProxy httplog line"


def reader(path: Path, captures: tuple[str, ...] = ()) -> LineLogReader:
    """The reader of one HAProxy log; `captures` names the captured request headers, in order."""
    names = [c.strip().lower() for c in captures]
    result = LineLogReader(path, FORMAT, LINE, lambda m, clock: _request(m, clock, names), MISFIT)
    result.notes.remark("HAProxy writes its host's local time without a zone: read as UTC")
    if not names:
        result.notes.remark(
            "HAProxy httplog has no User-Agent and no user: Outlook versions, browsers and EWS "
            "applications cannot be told apart (ActiveSync devices still can, by their query)"
        )
    return result


def _request(match: re.Match[str], clock: Clock, captures: list[str]) -> Request | None:
    parts = match["request"].split(" ")
    if len(parts) < 2 or parts[0] == "<BADREQ>":
        return None
    headers = dict(zip(captures, (match["captured"] or "").split("|"), strict=False))
    path, query = split_target(parts[1])
    ts = clock.epoch(match["date"])
    return Request(
        ts=-1 if ts is None else ts,
        peer=match["ip"],
        forwarded=headers.get("x-forwarded-for", ""),
        user="",
        agent=headers.get("user-agent", ""),
        path=path,
        query=query,
    )
