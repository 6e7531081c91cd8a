"""Log files as the readers get them: opened plain or gunzipped (by their first bytes, not their name),
their format told from their first line, and the one error a file that is not a log raises.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path
from typing import BinaryIO

from lab.fromlogs.batch import excerpt

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"  # what Windows PowerShell's Out-File / Set-Content -Encoding UTF8 put first
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
SNIFF_BYTES = 64 * 1024
# What a broken gzip stream raises while it is read.
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


class LogError(ValueError):
    """A file that cannot be read as a log; the message names the file, the line and why."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}: line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


def open_log(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped when it is a gzip file, after a UTF-8 byte-order mark if it has one (a
    log saved again on Windows)."""
    try:
        with open(path, "rb") as probe:
            gzipped = probe.read(2) == GZIP_MAGIC
        stream = gzip.open(path, "rb") if gzipped else open(path, "rb")  # noqa: SIM115 (the caller closes it)
    except OSError as err:
        raise LogError(path, None, f"cannot open: {err.strerror or err}") from None
    try:
        if read_block(stream, len(UTF8_BOM), path) != UTF8_BOM:
            stream.seek(0)
    except LogError:
        stream.close()
        raise
    return stream


def read_block(stream: BinaryIO, size: int, path: Path) -> bytes:
    """The next `size` bytes of a log (fewer at its end); a broken gzip stream is a LogError."""
    try:
        return stream.read(size)
    except GZIP_ERRORS as err:
        raise LogError(path, None, f"the gzip data is broken: {err}") from None


def first_line(path: Path) -> tuple[int, str] | None:
    """(line number, text) of the file's first non-blank line, None for an empty file. A file of binary
    data (NUL bytes) is a LogError."""
    with open_log(path) as stream:
        head = read_block(stream, SNIFF_BYTES, path)
    if head.startswith(UTF16_BOMS):
        raise LogError(
            path, 1, "UTF-16 text (as Windows PowerShell 5.1's `>` writes it), not a log as IIS writes it: "
            "save it as UTF-8 (Get-Content IN | Set-Content -Encoding UTF8 OUT) and read that",
        )  # fmt: skip
    for number, raw in enumerate(head.split(b"\n"), 1):
        if b"\0" in raw:  # NULs further on (a log cut short by a crash) are lines the reader counts
            raise LogError(path, number, "binary data, not a text log")
        text = raw.decode("utf-8", "replace").strip()
        if text:
            return number, text
    return None


def not_a_log(path: Path, number: int, text: str) -> LogError:
    if re.match(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} ", text):
        return LogError(
            path,
            number,
            "an IIS W3C request line with no #Fields line before it, so its columns are unknown (a slice "
            "of a log?): put the header lines of the log it came from (#Software ... #Fields) first: "
            f"«{excerpt(text)}»",
        )
    return LogError(
        path,
        number,
        "not an IIS W3C log (which begins with #Software, #Version, #Date and #Fields lines), nor an "
        f"HAProxy httplog line, nor an nginx combined line: «{excerpt(text)}»",
    )
