"""The IIS W3C extended log of an Exchange 2010 CAS (u_exYYMMDD.log), read as a stream.

The file is read in blocks of whole lines (BLOCK_BYTES), so a day of a large farm's logs is never
held in memory. Directive lines (`#Software`, `#Version`, `#Date`, `#Fields`) may come again anywhere
(IIS writes a new header block whenever its worker starts), and each `#Fields` decides the columns of
the lines after it. The runs of request lines between directives go to pyarrow's CSV reader
(space-delimited, no quoting: IIS writes a space inside a value as "+"), which splits them in C++;
dates, times and the values this reader needs are then worked out once per distinct value, or with
numpy on whole columns, never per line in Python.

Fields: `date`, `time` and `cs-uri-stem` are required; the reader uses `c-ip`, `cs-username`,
`cs(User-Agent)`, `cs-uri-query` and the balancer's X-Forwarded-For (logged as `cs(X-Forwarded-For)`,
the W3C spelling of a request header, or `X-Forwarded-For`, as an IIS 8.5 custom field is often
named). The other fields of IIS's own set are skipped silently; a field IIS does not define is
skipped with a note. A line with another number of fields than its `#Fields` says, or a date and
time not as IIS writes them, is counted as a misfit and quoted, never read.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from lab.fromlogs.batch import EXAMPLES, SCHEMA, FileNotes, excerpt
from lab.fromlogs.sources import LogError, open_log, read_block

FORMAT = "iis-w3c"
BLOCK_BYTES = 16 << 20
MAX_LINE_BYTES = 1 << 20  # a "line" longer than this is not a log line
# Every field IIS 7.5 can log (W3C extended format), in lower case. Header fields cs(...)/sc(...) are
# the W3C spelling of a request or response header and are known too.
IIS_FIELDS = frozenset(
    ("date", "time", "s-sitename", "s-computername", "s-ip", "cs-method", "cs-uri-stem", "cs-uri-query",
     "s-port", "cs-username", "c-ip", "cs-version", "cs-host", "sc-status", "sc-substatus",
     "sc-win32-status", "sc-bytes", "cs-bytes", "time-taken")
)  # fmt: skip
FORWARDED_FIELDS = ("cs(x-forwarded-for)", "x-forwarded-for")
USED = {  # the normalized column -> the W3C field it comes from
    "peer": "c-ip",
    "user": "cs-username",
    "agent": "cs(user-agent)",
    "path": "cs-uri-stem",
    "query": "cs-uri-query",
}
REQUIRED = ("date", "time", "cs-uri-stem")
DICTIONARY_ROLES = ("date", "peer", "forwarded", "user", "agent", "path")
DICTIONARY = pa.dictionary(pa.int32(), pa.string())
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH = dt.date(1970, 1, 1)


class W3cReader:
    """Batches (lab.fromlogs.batch) of one IIS W3C log file; `notes` says what it found."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notes = FileNotes(str(path), FORMAT)
        self._names: list[str] | None = None  # the columns of the current #Fields, for pyarrow
        self._said_no_query = False
        self._roles: dict[str, str] = {}  # normalized column -> column name in _names

    def batches(self) -> Iterator[pa.Table]:
        self._line = 1  # the number of the next line to read
        pending = b""
        with open_log(self.path) as stream:
            while True:
                chunk = read_block(stream, BLOCK_BYTES, self.path)
                data = pending + chunk if pending else chunk
                if not data:
                    break
                if chunk:
                    end = data.rfind(b"\n") + 1
                    if end == 0:
                        if len(data) > MAX_LINE_BYTES:
                            raise LogError(
                                self.path, self._line, f"a line longer than {MAX_LINE_BYTES} bytes"
                            )
                        pending = data
                        continue
                    pending = data[end:]
                else:
                    data, end, pending = data + b"\n", len(data) + 1, b""  # the last line had no newline
                yield from self._block(data, end)
                if not chunk:
                    break
        self.notes.lines = self._line - 1

    # -- directives and runs of request lines ---------------------------------------------------------
    def _block(self, data: bytes, end: int) -> Iterator[pa.Table]:
        """The lines of data[:end] (whole lines). Runs of request lines go to pyarrow as views of `data`,
        never copied; the lines are counted from what pyarrow read, not by another pass over them."""
        position = 0
        while position < end:
            if data.startswith(b"#", position):
                stop = data.index(b"\n", position, end) + 1
                self._directive(data[position:stop].decode("utf-8", "replace").strip(), self._line)
                self._line += 1
                position = stop
                continue
            stop = _next_directive(data, position, end)
            run = memoryview(data)[position:stop]
            if stop - position < 4096 and run.tobytes().isspace():
                self._line += data.count(b"\n", position, stop)
            else:
                batch = self._requests(run, self._line)
                if batch is not None:
                    yield batch
            position = stop

    def _directive(self, text: str, line: int) -> None:
        name, _, value = text.partition(":")
        name = name.lower()
        if name == "#fields":
            self._fields(value.split(), line)
        elif name == "#version" and value.strip() != "1.0":
            self.notes.remark(f"line {line}: #Version {value.strip()}, not 1.0; read as 1.0")
        elif name not in ("#software", "#version", "#date", "#remark", "#start-date", "#end-date"):
            self.notes.misfit(line, "not a W3C directive", text)

    def _fields(self, fields: list[str], line: int) -> None:
        lowered = [f.lower() for f in fields]
        missing = [f for f in REQUIRED if f not in lowered]
        if missing:
            raise LogError(
                self.path, line, f"#Fields lacks {', '.join(missing)}: when and what was requested is unknown"
            )
        forwarded = next((f for f in lowered if f in FORWARDED_FIELDS), None)
        if "c-ip" not in lowered and forwarded is None:
            raise LogError(
                self.path, line, "#Fields has neither c-ip nor X-Forwarded-For: the clients are unknown"
            )
        if "cs-uri-query" not in lowered and not self._said_no_query:
            self._said_no_query = True
            self.notes.remark(
                f"line {line}: #Fields has no cs-uri-query: ActiveSync devices are told apart by the "
                "DeviceId in it, so their requests name no device here"
            )
        names: list[str] = []
        for f in lowered:  # pyarrow needs distinct names; a repeated field is read once (its first)
            names.append(f if f not in names else f"{f}#{len(names)}")
        self._names = names
        self._roles = {role: field for role, field in USED.items() if field in names}
        self._roles.update(date="date", time="time")
        if forwarded:
            self._roles["forwarded"] = forwarded
        for original, f in zip(fields, lowered, strict=True):
            known = f in IIS_FIELDS or f in FORWARDED_FIELDS or re.fullmatch(r"(cs|sc|s|c)\(.+\)", f)
            if not known and original not in self.notes.skipped_fields:
                self.notes.skipped_fields.append(original)

    def _requests(self, run: memoryview, line: int) -> pa.Table | None:
        if self._names is None:
            raise LogError(
                self.path, line, f"a request line before any #Fields line, so its columns are unknown: "
                f"«{excerpt(run[:200].tobytes().decode('utf-8', 'replace'))}»",
            )  # fmt: skip
        skipped = _Skipped(quote=len(self.notes.examples) < EXAMPLES)
        try:
            table = self._parse(run, skipped)
        except pa.ArrowInvalid:  # bytes that are not UTF-8: read again with replacement characters
            skipped = _Skipped(quote=len(self.notes.examples) < EXAMPLES)
            self.notes.remark("some lines hold bytes that are not UTF-8; they were read with U+FFFD")
            table = self._parse(run.tobytes().decode("utf-8", "replace").encode(), skipped)
        self._line += table.num_rows + skipped.count  # blank lines are rows of empty values
        self.notes.misfits += skipped.count - skipped.blank
        for number, why in skipped.quoted:
            if len(self.notes.examples) < EXAMPLES:
                self.notes.examples.append(f"line {_line_of(line, number)}: {why}")
        return self._normalized(table, line, skipped)

    def _parse(self, run: memoryview | bytes, skipped: _Skipped) -> pa.Table:
        assert self._names is not None
        expected = len(self._names)

        def misfit(row: pacsv.InvalidRow) -> str:
            if row.text.strip():
                why = f"{row.actual_columns} fields where #Fields names {expected}: «{excerpt(row.text)}»"
                skipped.add(row.number, why)
            else:
                skipped.add(row.number, "")  # spaces only: a blank line
            return "skip"

        wanted = sorted(set(self._roles.values()))
        # Columns of few distinct values come dictionary-encoded: the converter hashes each value once,
        # and everything after works per distinct value (the tally's interners, the dates).
        encoded = {self._roles[r] for r in DICTIONARY_ROLES if r in self._roles}
        types = {name: DICTIONARY if name in encoded else pa.string() for name in wanted}
        return pacsv.read_csv(
            pa.py_buffer(run),
            read_options=pacsv.ReadOptions(
                column_names=self._names, use_threads=False, block_size=len(run) + 1
            ),  # one block: columns of one chunk
            parse_options=pacsv.ParseOptions(
                delimiter=" ",
                quote_char=False,
                double_quote=False,
                escape_char=False,
                newlines_in_values=False,
                ignore_empty_lines=False,  # so that a row's number is its line's
                invalid_row_handler=misfit,
            ),
            convert_options=pacsv.ConvertOptions(include_columns=wanted, column_types=types),
        )

    # -- the batch ----------------------------------------------------------------------------------------
    def _normalized(self, table: pa.Table, line: int, skipped: _Skipped) -> pa.Table | None:
        n = table.num_rows
        if n == 0:
            return None
        dates, times = _column(table, "date"), _column(table, "time")
        days, day_ok = _per_value(dates, _epoch_day)
        seconds, time_ok, time_empty = _seconds(times)
        ok = day_ok & time_ok
        ts = days * 86400 + seconds
        bad = np.flatnonzero(~ok & ~(time_empty & pc.equal(dates, "").to_numpy(zero_copy_only=False)))
        if len(bad):
            self.notes.misfits += len(bad)
            for index in bad[: max(0, EXAMPLES - len(self.notes.examples))]:
                number = skipped.row_number(int(index)) if skipped.quote else None
                self.notes.examples.append(
                    f"line {_line_of(line, number)}: a date and time not as IIS writes them "
                    f"(YYYY-MM-DD HH:MM:SS): «{excerpt(f'{dates[index]} {times[index]}')}»"
                )
        if not ok.all():  # the misfits, and blank lines (rows of empty values)
            table, ts = table.filter(pa.array(ok)), ts[ok]
            n = table.num_rows
            if n == 0:
                return None
        self.notes.requests += n
        self.notes.saw(int(ts.min()), int(ts.max()))
        columns = {"ts": pa.array(ts, pa.int64())}
        for role in SCHEMA.names[1:]:
            name = self._roles.get(role)
            columns[role] = _column(table, name) if name else _constant("", n)
        return pa.table(columns)


class _Skipped:
    """The lines of one run that pyarrow skipped: how many (blank ones apart), the first few quoted,
    and (while quoting) the numbers of all, to find the line of a later row."""

    def __init__(self, quote: bool) -> None:
        self.quote = quote
        self.count = 0
        self.blank = 0
        self.numbers: list[int] = []  # the run's line numbers, from 1
        self.quoted: list[tuple[int | None, str]] = []

    def add(self, number: int | None, why: str) -> None:
        """One skipped line; `why` is "" for a blank one."""
        self.count += 1
        self.blank += not why
        if self.quote and number is not None:
            self.numbers.append(number)
        if self.quote and why and len(self.quoted) < EXAMPLES:
            self.quoted.append((number, why))

    def row_number(self, index: int) -> int:
        """The line number in the run (from 1) of the parsed table's row `index`."""
        number = index + 1
        for skipped in self.numbers:  # in order
            if skipped <= number:
                number += 1
        return number


def _next_directive(data: bytes, start: int, end: int) -> int:
    """Where the next directive line of data[start:end] begins (`end` when none does): a "#" at the start
    of a line. ("#" is rare inside request lines, so looking for it alone is fast.)"""
    found = data.find(b"#", start, end)
    while found > 0 and data[found - 1] != 0x0A:
        found = data.find(b"#", found + 1, end)
    return end if found < 0 else found


def _column(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks()


def _constant(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array([value]))


def _per_value(values: pa.Array, convert: Callable[[str], int | None]) -> tuple[np.ndarray, np.ndarray]:
    """`convert` of every value, worked out once per distinct value: (results, which were valid)."""
    encoded = values if pa.types.is_dictionary(values.type) else values.dictionary_encode()
    converted = [convert(v) for v in encoded.dictionary.to_pylist()]
    results = np.array([-1 if c is None else c for c in converted], np.int64)
    valid = np.array([c is not None for c in converted], bool)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    return results[indices], valid[indices]


def _epoch_day(text: str) -> int | None:
    if not _DATE.match(text):
        return None
    try:
        return (dt.date.fromisoformat(text) - _EPOCH).days
    except ValueError:
        return None


def _seconds(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seconds of the day of `HH:MM:SS` values, worked out with numpy on the column's bytes (every
    value is 8 characters long in a good run): (seconds, which are such a time, which are empty)."""
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], np.int32)[values.offset : values.offset + n + 1]
    lengths = np.diff(offsets)
    ok = lengths == 8
    raw = np.frombuffer(values.buffers()[2], np.uint8) if values.buffers()[2] else np.zeros(0, np.uint8)
    if ok.all():
        chars = raw[offsets[0] : offsets[-1]].reshape(n, 8)
    else:  # a misfit among them: look at the good ones only
        chars = np.full((n, 8), ord("0"), np.uint8)
        good = np.flatnonzero(ok)
        starts = offsets[:-1][good]
        chars[good] = raw[starts[:, None] + np.arange(8)]
    digits = chars.astype(np.int32) - ord("0")
    positions = [0, 1, 3, 4, 6, 7]
    ok &= ((digits[:, positions] >= 0) & (digits[:, positions] <= 9)).all(axis=1)
    ok &= (chars[:, 2] == ord(":")) & (chars[:, 5] == ord(":"))
    hours = digits[:, 0] * 10 + digits[:, 1]
    minutes = digits[:, 3] * 10 + digits[:, 4]
    secs = digits[:, 6] * 10 + digits[:, 7]
    ok &= (hours < 24) & (minutes < 60) & (secs < 61)
    return (hours * 3600 + minutes * 60 + secs).astype(np.int64), ok, lengths == 0


def _line_of(first_line: int, number: int | None) -> int | None:
    """The file's line number of a run's line `number` (from 1), the run starting at `first_line`."""
    return None if number is None else first_line + number - 1
