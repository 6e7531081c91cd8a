"""A worker's event log carried to the master over Locust's own transport, for a worker on another
machine (`caslab worker` without `--events`), which cannot write into the run folder.

    worker -> master  caslab-events      {"part": n, "data": bytes}: the log's next CHUNK_BYTES
    master -> worker  caslab-events-ack  {"part": n}: part n is written
    worker -> master  caslab-result      with "shipped": how many parts it sent (loadgen.worker)

The worker sends once its users are stopped and its log is closed, keeping at most WINDOW parts
unacknowledged so that a large log never piles up in either side's memory. The master (`Inbox`)
writes the parts to <stem>-<worker id>.csv.part beside the run's events.csv and renames the file to
.csv when the result says every part came: the lab then reads it as it reads a local worker's log
(events*.csv), and a log cut short by a lost worker is never read as if it were whole.

Plain Python (no Locust, no gevent): loadgen.worker and loadgen.distributed bring the transport.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

EVENTS, EVENTS_ACK = "caslab-events", "caslab-events-ack"
CHUNK_BYTES = 512 * 1024
WINDOW = 8  # parts in flight: 4 MiB


class ShippingError(ValueError):
    """A shipped event log did not arrive whole; the message says how."""


def parts(path: Path, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The file at `path` in pieces of at most `size` bytes (none for an empty file)."""
    with path.open("rb") as file:
        while data := file.read(size):
            yield data


def ship(
    path: Path,
    send: Callable[[dict], None],
    wait_acked: Callable[[int], None],
    size: int = CHUNK_BYTES,
) -> int:
    """Send the log at `path` part by part with `send({"part", "data"})`; `wait_acked(n)` returns once
    the master has acknowledged n parts. Returns how many parts were sent, every one acknowledged."""
    sent = 0
    for data in parts(path, size):
        wait_acked(sent - WINDOW + 1)
        send({"part": sent, "data": data})
        sent += 1
    wait_acked(sent)
    return sent


class Inbox:
    """The master's side: each shipping worker's parts written to its own file beside `events_path`."""

    def __init__(self, events_path: Path) -> None:
        self.events_path = events_path
        self._open: dict[str, BinaryIO] = {}
        self._received: dict[str, int] = {}
        self._problems: dict[str, str] = {}

    def path_for(self, worker_id: str) -> Path:
        """Where a worker's log goes: events.csv -> events-<worker id>.csv (Locust's worker ids are
        unique: its host name and a random id)."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", worker_id)
        return self.events_path.with_name(f"{self.events_path.stem}-{safe}{self.events_path.suffix}")

    def _partial(self, worker_id: str) -> Path:
        return self.path_for(worker_id).with_suffix(".csv.part")

    def on_part(self, worker_id: str, part: int, data: bytes) -> None:
        """Append part `part` of a worker's log; a part out of order spoils the log (said at `finish`)."""
        expected = self._received.get(worker_id, 0)
        if part != expected:
            self._problems.setdefault(worker_id, f"part {part} came where part {expected} was due")
            return
        try:
            if worker_id not in self._open:
                self.events_path.parent.mkdir(parents=True, exist_ok=True)
                self._open[worker_id] = self._partial(worker_id).open("wb")
            self._open[worker_id].write(data)
        except OSError as err:  # e.g. a full disk: said at `finish`, not raised into Locust's listener
            self._problems.setdefault(worker_id, f"part {part} could not be written: {err}")
            return
        self._received[worker_id] = expected + 1

    def finish(self, worker_id: str, shipped: int) -> Path | None:
        """The worker says it sent `shipped` parts: the complete log under its final name (None for a
        log of no bytes: no file, which the lab could not read as CSV). Raises ShippingError, leaving no
        log to read, when parts are missing or came out of order."""
        file = self._open.pop(worker_id, None)
        if file is not None:
            file.close()
        partial = self._partial(worker_id)
        received = self._received.get(worker_id, 0)
        problem = self._problems.get(worker_id) or (
            f"{received} of {shipped} parts arrived" if received != shipped else ""
        )
        if problem:
            with suppress(OSError):  # none there, or none could be made
                partial.unlink()
            raise ShippingError(f"event log incomplete: {problem}")
        if not received:
            return None
        return partial.rename(self.path_for(worker_id))

    def close(self) -> None:
        """Drop what never finished (a worker lost while shipping)."""
        for worker_id, file in self._open.items():
            file.close()
            with suppress(OSError):
                self._partial(worker_id).unlink()
        self._open.clear()
