"""The client event log (DESIGN.md section 7): one row per request or TCP exchange (its columns and
outcomes are `caslab.records`).

It listens to Locust's `request` event, so every request a caslab user makes — HTTP through Locust's
client, or RPC/HTTP and MAPI exchanges that the users fire themselves — lands here. A caslab user puts
an `EventContext` in the request's `context`; the log reads the answering server from the response's
`X-CasLab-Server` header (or from the context for TCP exchanges) and the outcome the user classified.

Rows go to a CSV file (one per Locust process), flushed in batches, so a crash loses at most a batch
and the verifier can read the files of several workers together.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caslab.records import EVENT_COLUMNS
from caslab.vocab import SERVER_HEADER


@dataclass
class EventContext:
    """What a caslab user knows about one request; the user sets `outcome` once it has the answer."""

    population: str
    user: str
    client_kind: str
    service: str
    session: str
    source_ip: str
    request_id: str
    outcome: str = ""  # empty: derived from status and exception
    detail: str = ""
    server: str = ""  # for TCP exchanges, which carry no HTTP header
    status: int = 0


def derive_outcome(status: int, exception: BaseException | None, has_response: bool) -> str:
    if not has_response or status == 0:
        return "transport"
    if exception is not None or status >= 400:
        return "error"
    return "ok"


class EventLog:
    def __init__(self, path: Path, batch: int = 2000) -> None:
        self.path = path
        self.batch = batch
        self.rows: list[tuple[Any, ...]] = []
        self.written = 0
        self.outcomes: Counter[str] = Counter()  # so far, for progress lines
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(EVENT_COLUMNS)

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        response: Any = None,
        context: dict | None = None,
        exception: BaseException | None = None,
        start_time: float | None = None,
        url: str | None = None,
        **_kw: Any,
    ) -> None:
        """A Locust `request` event listener; requests without an EventContext are not ours."""
        ctx = (context or {}).get("caslab")
        if not isinstance(ctx, EventContext):
            return
        status = ctx.status
        server = ctx.server
        if response is not None and not status:
            status = int(getattr(response, "status_code", 0) or 0)
            headers = getattr(response, "headers", None) or {}
            server = server or headers.get(SERVER_HEADER, "") or ""
        outcome = ctx.outcome or derive_outcome(status, exception, response is not None or bool(server))
        detail = ctx.detail or (type(exception).__name__ if exception is not None and not ctx.outcome else "")
        self.outcomes[outcome] += 1
        self.rows.append(
            (
                round(start_time if start_time is not None else time.time(), 6),
                ctx.population,
                ctx.user,
                ctx.client_kind,
                ctx.service,
                ctx.session,
                ctx.source_ip,
                server,
                status,
                outcome,
                round(response_time, 3),
                ctx.request_id,
                detail,
            )
        )
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        self._writer.writerows(self.rows)
        self.written += len(self.rows)
        self.rows.clear()
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()
