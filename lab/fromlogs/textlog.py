"""A balancer's access log read line by line with one compiled regular expression per format
(haproxy.py, nginx.py), streamed into batches of the common shape (lab.fromlogs.batch).

A line the expression does not match is a misfit: counted, the first few quoted with their line
number, never guessed at. A format module gives `LINE` (the expression) and `request(match)`, which
turns a match into a `Request` or None when the line is the format's but holds no request (HAProxy's
`<BADREQ>`, nginx's 400 for a connection that sent nothing).
"""

from __future__ import annotations

import calendar
import datetime as dt
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from lab.fromlogs.batch import SCHEMA, FileNotes
from lab.fromlogs.sources import GZIP_ERRORS, LogError, open_log

BATCH_LINES = 65_536
MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}


class Request(NamedTuple):
    ts: int
    peer: str
    forwarded: str
    user: str
    agent: str
    path: str
    query: str


class Clock:
    """Epoch seconds of the `dd/Mon/yyyy:HH:MM:SS` times both formats write, worked out once a minute
    (a log's lines come minute after minute, so the minute's start is kept)."""

    def __init__(self) -> None:
        self._minute = ""
        self._minute_ts = 0

    def epoch(self, stamp: str, zone: str = "+0000") -> int | None:
        """`stamp` as written (`06/Feb/2009:12:14:14`), in the time zone `zone` (`+0100`); None if it
        is not such a time."""
        minute = stamp[:17]
        if minute != self._minute:
            try:
                day, month, year = int(minute[0:2]), MONTHS[minute[3:6]], int(minute[7:11])
                at = dt.datetime(year, month, day, int(minute[12:14]), int(minute[15:17]), tzinfo=dt.UTC)
            except (KeyError, ValueError):
                return None
            self._minute_ts = int(at.timestamp())
            self._minute = minute
        if stamp[17:18] != ":":
            return None
        try:
            seconds = int(stamp[18:20])
            offset = (int(zone[1:3]) * 60 + int(zone[3:5])) * 60 * (-1 if zone[0] == "-" else 1)
        except (ValueError, IndexError):
            return None
        return self._minute_ts + seconds - offset


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target; an absolute URL (a proxy's request) loses its scheme and host."""
    if "://" in target[:10]:
        rest = target.split("://", 1)[1]
        target = rest[rest.find("/") :] if "/" in rest else "/"
    path, _, query = target.partition("?")
    return path, query


class LineLogReader:
    """Batches of one text log file of a format given by its expression and request maker."""

    def __init__(
        self,
        path: Path,
        format_name: str,
        line: re.Pattern[str],
        request: Callable[[re.Match[str], Clock], Request | None],
        misfit_reason: str,
    ) -> None:
        self.path = path
        self.notes = FileNotes(str(path), format_name)
        self._line = line
        self._request = request
        self._misfit_reason = misfit_reason

    def batches(self) -> Iterator[pa.Table]:
        clock = Clock()
        rows: list[Request] = []
        number = 0
        with open_log(self.path) as stream:
            text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="\n")
            try:
                for number, raw in enumerate(text, 1):
                    match = self._line.search(raw)
                    if match is None:
                        if raw.strip():
                            self.notes.misfit(number, self._misfit_reason, raw)
                        continue
                    request = self._request(match, clock)
                    if request is None:
                        continue
                    if request.ts < 0:
                        self.notes.misfit(number, "a time not as the format writes it", raw)
                        continue
                    rows.append(request)
                    if len(rows) >= BATCH_LINES:
                        yield self._batch(rows)
                        rows = []
            except GZIP_ERRORS as err:
                raise LogError(self.path, number + 1, f"the gzip data is broken: {err}") from None
        if rows:
            yield self._batch(rows)
        self.notes.lines = number

    def _batch(self, rows: list[Request]) -> pa.Table:
        columns = list(zip(*rows, strict=True))
        table = pa.table([pa.array(c) for c in columns], schema=SCHEMA)
        self.notes.requests += len(rows)
        self.notes.saw(min(columns[0]), max(columns[0]))
        return table
