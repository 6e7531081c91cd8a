"""Reading many log files, of any of the three formats, plain or gzipped, into one tally.

Each file's format is told from its first line (an IIS W3C directive, an HAProxy httplog line, an
nginx combined line), never from its name; a file that is none of them is a LogError naming its first
line. A file of a known format none of whose lines could be read is one too (it names the first line
that could not be). The result with no request to any Exchange service is an error, not an empty
scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from lab.fromlogs import haproxy, nginx
from lab.fromlogs.batch import FileNotes
from lab.fromlogs.sources import LogError, first_line, not_a_log
from lab.fromlogs.tally import Observed, Tally
from lab.fromlogs.w3c import W3cReader


def read_logs(
    paths: Iterable[Path],
    time_scale: float = 1.0,
    haproxy_capture: tuple[str, ...] = (),
    on_file: Callable[[FileNotes], None] | None = None,
) -> Observed:
    """Every file into one tally; `on_file` hears of each file when it has been read."""
    tally = Tally(time_scale)
    files = []
    for path in paths:
        notes = read_file(Path(path), tally, haproxy_capture)
        files.append(notes)
        if on_file:
            on_file(notes)
    if not files:
        raise LogError("(no files)", None, "no log files were given")
    observed = tally.observed(files)
    exchange = observed.activity[observed.activity["service"] > 0]
    if exchange.empty:
        read = sum(f.requests for f in files)
        raise LogError(
            ", ".join(f.path for f in files[:3]) + (" ..." if len(files) > 3 else ""),
            None,
            f"no Exchange traffic found: of {read:,} requests read, none was to /owa, /ecp, /EWS, "
            "/Microsoft-Server-ActiveSync, /rpc, /OAB or /Autodiscover",
        )
    return observed


def read_file(path: Path, tally: Tally, haproxy_capture: tuple[str, ...] = ()) -> FileNotes:
    if path.is_dir():
        raise LogError(path, None, "is a folder: name its log files (e.g. FOLDER/*/u_ex*.log)")
    first = first_line(path)
    if first is None:
        notes = FileNotes(str(path), "empty")
        notes.remark("the file is empty")
        return notes
    number, text = first
    if text.startswith("#"):
        reader = W3cReader(path)
    elif haproxy.LINE.search(text):
        reader = haproxy.reader(path, haproxy_capture)
    elif nginx.LINE.search(text):
        reader = nginx.reader(path)
    else:
        raise not_a_log(path, number, text)
    for batch in reader.batches():
        tally.add(batch)
    notes = reader.notes
    if notes.requests == 0 and notes.misfits:
        raise LogError(path, None, f"no line could be read as {notes.format}; the first: {notes.examples[0]}")
    return notes
