"""The per-CAS ledger: one row per request (or TCP exchange) this CAS saw (DESIGN.md section 7; the row
and its states are `caslab.records`).

Rows are kept in memory in arrival order with a sequence number, so the lab can read them
incrementally (`/caslab/ledger?since=N`) while a run goes on, and none is lost between reads.
"""

from __future__ import annotations

import time
from collections import Counter

from caslab.records import LEDGER_COLUMNS, LEDGER_STATES, LedgerRow


def _text(value: str) -> str:
    """Client-supplied text as valid Unicode: aiohttp hands undecodable header bytes on as lone
    surrogates, which JSON and Parquet writers refuse (one bad client must not sink a run's report)."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class Ledger:
    def __init__(self, server: str) -> None:
        self.server = server
        # Plain tuples in LedgerRow's field order: one is made per request, a plain tuple costs a fifth
        # of a named one, and Python's garbage collector stops tracking a tuple of strings and numbers
        # (never a named one), so a run's million rows do not make every full collection longer.
        self._rows: list[tuple] = []
        self.counts: Counter[tuple[str, str]] = Counter()  # (service, state) -> rows, for the CAS's stats

    def record(
        self,
        ts: float,
        service: str,
        session_key: str,
        client_ip: str,
        state: str,
        status: int,
        request_id: str = "",
        run_id: str = "",
        detail: str = "",
    ) -> None:
        """Append the row of one request that arrived at `ts` and ends now (its latency). Services call this
        for TCP exchanges (`self.cas.ledger.record(...)`); HTTP rows are written for them by the server's
        access logger."""
        if state not in LEDGER_STATES:
            raise ValueError(f"unknown ledger state {state!r}")
        self.counts[(service, state)] += 1
        if not (session_key + client_ip + request_id + run_id + detail).isascii():
            session_key, client_ip, request_id, run_id, detail = map(
                _text, (session_key, client_ip, request_id, run_id, detail)
            )
        row = (
            len(self._rows),
            ts,
            self.server,
            service,
            session_key,
            client_ip,
            state,
            status,
            request_id,
            run_id,
            detail,
            round((time.time() - ts) * 1000, 3),
        )
        self._rows.append(row)

    def __len__(self) -> int:
        return len(self._rows)

    def since(self, seq: int, limit: int = 50_000) -> list[dict]:
        """Rows with sequence number >= seq (seq >= 0), oldest first, as plain dicts (JSON-ready)."""
        return [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in self._rows[seq : seq + limit]]

    def rows(self) -> list[LedgerRow]:
        return [LedgerRow._make(row) for row in self._rows]
