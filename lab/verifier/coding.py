"""The verifier's inputs as integer codes: client events read from their CSV files, and every text
column that is grouped on (service, user, session, server, outcome) turned into small integers.

Every later step works on these codes with whole-column numpy operations (bincount, lexsort, unique),
never a Python loop over events: that is what lets a run of a million requests be judged in seconds.
A **session** is one client session (the client's `session` id, of one `user`) on one service: the
unit a balancer must keep on one CAS. A **client session** is the same user and session id on any
service (OWA and ECP share their logon cookie, for example).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from caslab.records import EVENT_COLUMNS, LEDGER_COLUMNS, OUTCOMES
from caslab.vocab import SERVICES


def read_events(paths: list[Path]) -> pd.DataFrame:
    """The client event CSV files of a run (one per Locust process) as one frame; text stays text
    (an empty server or request id is "", never NaN or a number). An empty file (a worker killed before
    it wrote its first batch; the run names it as lost) adds nothing."""
    numbers = {"ts": "float64", "status": "int64", "latency_ms": "float64"}
    dtypes = {c: numbers.get(c, "str") for c in EVENT_COLUMNS}
    frames = [
        pd.read_csv(p, dtype=dtypes, keep_default_na=False, na_values={}) for p in paths if p.stat().st_size
    ]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
    return pd.concat(frames, ignore_index=True)


def require_event_columns(events: pd.DataFrame) -> None:
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"client events lack the columns: {', '.join(missing)}")


def empty_ledger() -> pd.DataFrame:
    """A ledger without rows, with every column (a run whose CAS saw nothing)."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in LEDGER_COLUMNS})


def ledger_column(ledger: pd.DataFrame, name: str) -> pd.Series:
    if name not in ledger.columns:
        raise ValueError(f"the ledger lacks the column {name!r}")
    return ledger[name]


def numbers(series: pd.Series) -> np.ndarray:
    """A column as floats; what is not a number becomes NaN."""
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def codes_of(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a text column of few distinct values, and the texts they stand for ("" if missing)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes, ["" if pd.isna(u) else str(u) for u in uniques]


def keys_of(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a text column of many distinct values, and per code whether it is empty/missing."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    blank = np.asarray(pd.isna(uniques) | (uniques.astype(str) == ""), dtype=bool)
    return codes, blank


def request_id_keys(
    request_ids: pd.Series, ledger: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The request ids of client events and of ledger rows as codes of one numbering: (per event, per
    ledger row, per code whether it is empty/missing)."""
    ids, blank = keys_of(pd.concat([request_ids, ledger_column(ledger, "request_id")], ignore_index=True))
    return ids[: len(request_ids)], ids[len(request_ids) :], blank


def first_row_values(ledger_id: np.ndarray, n_ids: int, values: np.ndarray, missing: Any) -> np.ndarray:
    """Per request id code: `values` of the first ledger row with that id (a retried request can have
    several), `missing` where no row has it."""
    per_id = np.full(n_ids, missing, dtype=values.dtype)
    first_ids, first_rows = np.unique(ledger_id, return_index=True)
    per_id[first_ids] = values[first_rows]
    return per_id


def recode(codes: np.ndarray, names: list[str], wanted: list[str]) -> np.ndarray:
    """Codes into `names` turned into positions in `wanted` (-1 for names not wanted)."""
    position = {name: i for i, name in enumerate(wanted)}
    return np.array([position.get(n, -1) for n in names] + [-1], dtype=np.int64)[codes]


def server_codes(servers: pd.Series, server_names: list[str]) -> np.ndarray:
    """A column of server names as positions in `server_names` (-1: empty or another name)."""
    codes, names = codes_of(servers)
    return recode(codes, names, server_names)


@dataclass(frozen=True)
class AnsweredInOrder:
    """The answered events sorted by (session, time): where each session went, one answer after another."""

    event: np.ndarray  # position of each answer among all events
    session: np.ndarray
    server: np.ndarray
    ts: np.ndarray


@dataclass(frozen=True)
class CodedEvents:
    """The client events as integer-coded columns (one entry per event), and per session its service
    and client session (one entry per session)."""

    ts: np.ndarray
    service: np.ndarray  # position in service_names
    service_names: list[str]  # the vocabulary's order first, then any other service seen
    session: np.ndarray  # session of each event: (service, user, session id)
    client: np.ndarray  # client session of each event: (user, session id), any service
    server: np.ndarray  # position in server_names, -1 when nobody answered
    server_names: list[str]  # the farm first, then any other server that answered
    outcome: dict[str, np.ndarray]  # per outcome of caslab.records.OUTCOMES: which events had it
    session_service: np.ndarray  # service of each session
    session_client: np.ndarray  # client session of each session
    answered_in_order: AnsweredInOrder

    @property
    def n_sessions(self) -> int:
        return len(self.session_service)

    @property
    def answered(self) -> np.ndarray:
        return self.server >= 0

    def sessions_with(self, mask: np.ndarray) -> np.ndarray:
        """Per session: does any event selected by `mask` belong to it?"""
        out = np.zeros(self.n_sessions, dtype=bool)
        out[self.session[mask]] = True
        return out

    def per_service(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Events (selected by `mask`, else all) counted per service."""
        service = self.service if mask is None else self.service[mask]
        return np.bincount(service, minlength=len(self.service_names))

    def per_server(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Answered events (also selected by `mask`, if given) counted per server."""
        selected = self.answered if mask is None else self.answered & mask
        return np.bincount(self.server[selected], minlength=len(self.server_names))


def code_events(events: pd.DataFrame, farm: list[str]) -> CodedEvents:
    """Integer codes for every column that is grouped on; `farm` names the CAS of the scenario."""
    ts = numbers(events["ts"])
    raw_service, raw_service_names = codes_of(events["service"])
    service_names = [s for s in SERVICES if s in raw_service_names]
    service_names += sorted(set(raw_service_names) - set(SERVICES))
    service = recode(raw_service, raw_service_names, service_names)
    user, user_blank = keys_of(events["user"])
    session_id, session_id_blank = keys_of(events["session"])
    n_users, n_session_ids = len(user_blank), len(session_id_blank)
    session, _ = pd.factorize((service * n_users + user) * n_session_ids + session_id)
    client, _ = pd.factorize(user * n_session_ids + session_id)
    n_sessions = int(session.max()) + 1 if len(session) else 0
    raw_server, raw_server_names = codes_of(events["server"])
    server_names = list(farm) + sorted(set(raw_server_names) - {""} - set(farm))
    server = recode(raw_server, raw_server_names, server_names)
    raw_outcome, outcome_names = codes_of(events["outcome"])
    outcome = {name: recode(raw_outcome, outcome_names, [name]) == 0 for name in OUTCOMES}

    session_service = np.zeros(n_sessions, dtype=np.int64)
    session_service[session] = service
    session_client = np.zeros(n_sessions, dtype=np.int64)
    session_client[session] = client

    answered = np.flatnonzero(server >= 0)
    in_order = answered[np.lexsort((ts[answered], session[answered]))]
    return CodedEvents(
        ts=ts,
        service=service,
        service_names=service_names,
        session=session,
        client=client,
        server=server,
        server_names=server_names,
        outcome=outcome,
        session_service=session_service,
        session_client=session_client,
        answered_in_order=AnsweredInOrder(in_order, session[in_order], server[in_order], ts[in_order]),
    )
