"""The CAS's IIS log: one line per HTTP request in the W3C extended format IIS 7.5 writes on an Exchange
2010 CAS, so that a run's logs can be read back like a real farm's (`caslab scenario from-logs`).

As IIS writes it: one file per day, `u_exYYMMDD.log` (the `u_` of a UTF-8 log), dates and times in UTC;
a header block (`#Software`, `#Version`, `#Date`, `#Fields`) opens every file and is written again when
the process starts anew, so a restarted CAS appends a second block to the day's file, as a recycled
worker process does. The fields are the IIS 7.5 default set plus the balancer's `X-Forwarded-For`:

    date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent)
    sc-status sc-substatus sc-win32-status time-taken cs(X-Forwarded-For)

Why `cs(X-Forwarded-For)`: it is the W3C extended format's own spelling of a client-to-server header
(`cs(header)`, the form IIS itself uses for `cs(User-Agent)`, `cs(Referer)` and `cs(Cookie)`), and the
name under which log tools look for it. IIS 7.5 has no built-in field for it: sites add it with the
Advanced Logging module, and IIS 8.5 with a custom field whose name the administrator chooses, so real
files also say plain `X-Forwarded-For`; the reader takes either.

Values as IIS writes them: an empty value is `-`; a space inside a value is `+` (the User-Agent
`Microsoft+Office/14.0+(Windows+NT+6.1;...)`); `time` is when the request ended and `time-taken` is
in milliseconds, so a long-held request (an RPC/HTTP channel, an ActiveSync Ping) is logged when it
ends. `cs-username` is the user the request authenticated as, `-` for an anonymous or refused one. A
client that went away is logged with `sc-win32-status` 64 (ERROR_NETNAME_DELETED), as IIS logs it.

Not logged, as on a real CAS: MAPI and the Address Book (RPC on their own TCP ports, served by the RPC
Client Access service, not by IIS: their ledger rows stay, their traffic is absent here, so a reader
must infer intranet Outlook from its Autodiscover, EWS and OAB calls); requests the HTTP parser
rejected before IIS saw them (HTTP.sys writes those to its own HTTPERR log).

Lines are buffered and flushed at least once a second while requests come, and when the CAS stops;
a CAS that is killed loses its last unflushed lines, as IIS loses its buffer when its worker dies.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TextIO

SOFTWARE = "Microsoft Internet Information Services 7.5"
FIELDS: tuple[str, ...] = (
    "date",
    "time",
    "s-ip",
    "cs-method",
    "cs-uri-stem",
    "cs-uri-query",
    "s-port",
    "cs-username",
    "c-ip",
    "cs(User-Agent)",
    "sc-status",
    "sc-substatus",
    "sc-win32-status",
    "time-taken",
    "cs(X-Forwarded-For)",
)
FLUSH_EVERY_S = 1.0
WIN32_NETNAME_DELETED = 64  # the client's connection went away before the answer was sent
CLIENT_GONE_STATUSES = frozenset({499})  # the ledger's status for a request whose client or CAS went away

# IIS writes a space inside a value as '+'; other whitespace and control characters would break the
# line's columns, so they are written as '+' too.
_ESCAPES = {c: "+" for c in (*range(0x00, 0x21), 0x7F)}


def field(value: str) -> str:
    """One value as IIS writes it: `-` when empty, no whitespace inside."""
    if not value:
        return "-"
    if not value.isascii():  # aiohttp hands undecodable header bytes on as lone surrogates
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.translate(_ESCAPES)


def file_name(day: dt.date) -> str:
    """The day's file, as IIS names a daily UTF-8 W3C log."""
    return f"u_ex{day:%y%m%d}.log"


class W3cLog:
    """The IIS log of one CAS, in `folder` (made if missing)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._day: dt.date | None = None
        self._file: TextIO | None = None
        self._flushed = 0.0

    def write(
        self,
        *,
        ended: float,
        server_ip: str,
        server_port: int,
        method: str,
        target: str,
        username: str,
        client_ip: str,
        user_agent: str,
        status: int,
        time_taken_ms: int,
        forwarded_for: str,
    ) -> None:
        """One request's line. `target` is the request target as the client sent it (path and query),
        `ended` when the answer was done (epoch seconds)."""
        when = dt.datetime.fromtimestamp(ended, dt.UTC)
        out = self._file if self._day == when.date() else self._open(when)
        stem, _, query = target.partition("?")
        win32 = WIN32_NETNAME_DELETED if status in CLIENT_GONE_STATUSES else 0
        out.write(
            f"{when:%Y-%m-%d %H:%M:%S} {server_ip} {field(method)} {field(stem)} {field(query)} "
            f"{server_port} {field(username)} {field(client_ip)} {field(user_agent)} {status} 0 {win32} "
            f"{max(time_taken_ms, 0)} {field(forwarded_for)}\n"
        )
        now = time.monotonic()
        if now - self._flushed >= FLUSH_EVERY_S:
            out.flush()
            self._flushed = now

    def _open(self, when: dt.datetime) -> TextIO:
        self.close()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._day = when.date()
        out = self._file = open(self.folder / file_name(self._day), "a", encoding="utf-8")  # noqa: SIM115
        out.write(
            f"#Software: {SOFTWARE}\n#Version: 1.0\n#Date: {when:%Y-%m-%d %H:%M:%S}\n"
            f"#Fields: {' '.join(FIELDS)}\n"
        )
        return out

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
