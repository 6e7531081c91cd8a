"""Breaks and split sessions, per event and per service (DESIGN.md section 2).

- A session is **split** when its answered requests came from more than one CAS.
- A **hard break** is a request the CAS answered as `foreign` (it carried state another CAS made: a
  logoff, a lost EWS subscription, a split RPC/HTTP channel pair, an unknown MAPI handle, an OAB
  download spread over CAS that differ).
- A **soft break** is a request answered `cold` (the CAS had to warm up: EAS device cache, Address Book
  referral) and, for EAS, a request that reached another CAS than the one before it. The first request
  of an EAS session is always cold (every CAS warms up once per device), so it is not a break.
- **Errors** are requests answered with an error, plus transport failures (no answer at all) and cuts
  (a held request, channel or TCP session closed under the client: lab/verifier/timers.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lab.verifier.coding import CodedEvents

LATENCY_PERCENTILES = {"p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99}


@dataclass(frozen=True)
class Breaks:
    """Which events broke and which sessions split."""

    hard: np.ndarray  # per event
    soft: np.ndarray  # per event
    error: np.ndarray  # per event: answered with an error, or not answered at all
    split: np.ndarray  # per session: answered by more than one CAS
    sessions_per_server: np.ndarray  # per server: sessions it answered at least once


def same_as_before(values: np.ndarray) -> np.ndarray:
    """Per position: does it hold the same value as the position before it? (The first does not.)"""
    out = np.zeros(len(values), dtype=bool)
    out[1:] = values[1:] == values[:-1]
    return out


def find_breaks(events: CodedEvents) -> Breaks:
    answers = events.answered_in_order
    n_events = len(events.ts)
    same_session_as_before = same_as_before(answers.session)
    moved = np.zeros(n_events, dtype=bool)  # answered by another CAS than the session's answer before
    moved[answers.event] = same_session_as_before & ~same_as_before(answers.server)
    first = np.zeros(n_events, dtype=bool)  # the session's first answer
    first[answers.event] = ~same_session_as_before
    eas = events.service == (events.service_names.index("eas") if "eas" in events.service_names else -2)
    outcome = events.outcome

    # Each (session, server) pair that occurred once: a session with two pairs is split.
    n_servers = max(len(events.server_names), 1)
    answered = events.answered
    pairs = np.unique(events.session[answered].astype(np.int64) * n_servers + events.server[answered])
    return Breaks(
        hard=outcome["foreign"],
        soft=(outcome["cold"] & ~(eas & first)) | (eas & moved),
        error=outcome["error"] | outcome["transport"] | outcome["cut"],
        split=np.bincount(pairs // n_servers, minlength=events.n_sessions) > 1,
        sessions_per_server=np.bincount(pairs % n_servers, minlength=len(events.server_names)),
    )


def service_table(events: CodedEvents, breaks: Breaks, latency_ms: np.ndarray) -> pd.DataFrame:
    """Per service: requests, sessions, split sessions, breaks, errors (of which transport failures and
    cuts) and latency percentiles."""
    n_services = len(events.service_names)
    sessions = np.bincount(events.session_service, minlength=n_services)
    split = np.bincount(events.session_service[breaks.split], minlength=n_services)
    table = pd.DataFrame(
        {
            "requests": events.per_service(),
            "sessions": sessions,
            "split_sessions": split,
            "split_pct": np.round(100 * split / np.maximum(sessions, 1), 3),
            "hard_breaks": events.per_service(breaks.hard),
            "soft_breaks": events.per_service(breaks.soft),
            "errors": events.per_service(breaks.error),
            "transport": events.per_service(events.outcome["transport"]),
            "cut": events.per_service(events.outcome["cut"]),
        },
        index=pd.Index(events.service_names, name="service"),
    )
    # A transport failure's latency is the client's timeout, not the CAS's; a cut is no answer either.
    timed = ~(events.outcome["transport"] | events.outcome["cut"])
    levels = list(LATENCY_PERCENTILES.values())
    quantiles = pd.Series(latency_ms[timed]).groupby(events.service[timed]).quantile(levels).unstack()
    quantiles = quantiles.reindex(index=range(n_services), columns=levels).set_axis(table.index)
    quantiles.columns = list(LATENCY_PERCENTILES)
    return table.join(quantiles.round(3))
