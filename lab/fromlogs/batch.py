"""What every log reader hands on, whatever its format: batches of requests in one shape, and the notes
it kept about its file.

A batch is a pyarrow Table with the columns of `SCHEMA`, one row per request line, values as logged
(the tally gives each distinct value its meaning once: lab.fromlogs.classify):
    ts         int64, when the line says the request was (epoch seconds, UTC)
    peer       the TCP peer the server saw (IIS c-ip; the client address of a balancer's own log)
    forwarded  the logged X-Forwarded-For, "" or "-" when none
    user       the user name ("DOMAIN\\user", "user@domain"...), "" or "-" when none
    agent      the User-Agent, "" or "-" when none
    path       the path of the request (no query)
    query      the query, "" or "-" when none
String columns may be dictionary-encoded; the tally reads either.

`FileNotes` is what a reader says about one file: its format, how many lines it read as requests, the
lines it could not read (counted, with the first few as examples: never guessed at), fields it
skipped, and where the client's address came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

SCHEMA = pa.schema(
    [
        ("ts", pa.int64()),
        ("peer", pa.string()),
        ("forwarded", pa.string()),
        ("user", pa.string()),
        ("agent", pa.string()),
        ("path", pa.string()),
        ("query", pa.string()),
    ]
)
EXAMPLES = 5  # misfit lines quoted per file
EXCERPT = 120  # characters of a quoted line


def excerpt(text: str) -> str:
    """A line as a message quotes it: printable, and cut short."""
    text = text.rstrip("\r\n").replace("\t", " ")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"


@dataclass
class FileNotes:
    """What a reader noted about one file."""

    path: str
    format: str  # "iis-w3c", "haproxy-httplog" or "nginx-combined"
    lines: int = 0  # every line of the file, directives and blank lines included
    requests: int = 0  # lines read as requests
    misfits: int = 0  # lines of another format, or broken: counted, not read
    examples: list[str] = field(default_factory=list)  # the first misfits: "line N: why: «text»"
    skipped_fields: list[str] = field(default_factory=list)  # fields of no known meaning, skipped
    remarks: list[str] = field(default_factory=list)  # anything else a person should know
    first_ts: int | None = None
    last_ts: int | None = None

    def misfit(self, line: int | None, why: str, text: str, count: int = 1) -> None:
        """Count `count` lines that are not requests of this file's format; quote the first few."""
        self.misfits += count
        if len(self.examples) < EXAMPLES:
            where = f"line {line}" if line is not None else "a line"
            self.examples.append(f"{where}: {why}: «{excerpt(text)}»")

    def remark(self, text: str) -> None:
        if text not in self.remarks:
            self.remarks.append(text)

    def saw(self, first_ts: int, last_ts: int) -> None:
        self.first_ts = first_ts if self.first_ts is None else min(self.first_ts, first_ts)
        self.last_ts = last_ts if self.last_ts is None else max(self.last_ts, last_ts)
