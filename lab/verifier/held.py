"""Breaks the lab made itself: a session that expired on the CAS while its request waited in the lab.

Time compression divides every Exchange timer by `time_scale`, so a request that waits in the lab
(in the load generator's connection pool, a TLS handshake queue, the balancer's queue) for a minute
of wall clock has waited `time_scale` minutes of Exchange time. When that wait is longer than the
session's idle timeout, the CAS finds the session expired (its ledger row says `expired`) and the
client sees a hard break that no balancer setting made: the client itself was not idle. Counting it
as a persistence failure would be a wrong verdict, so the run is invalid instead, and says why.

A hard break is *held in the lab* when its ledger row says `expired` and the request's time in transit
(the client's latency minus the CAS's own) is longer than the client's idle time before sending it
(from the end of its previous request, in any service: OWA and ECP share a logon): the CAS saw more
idleness than the client made.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lab.verifier.coding import CodedEvents, first_row_values, ledger_column, numbers, request_id_keys


def held_in_lab(
    events: pd.DataFrame, ledger: pd.DataFrame, coded: CodedEvents, hard: np.ndarray
) -> np.ndarray:
    """Per event: a hard break held in the lab (see the module docstring). `hard` is per event."""
    held = np.zeros(len(coded.ts), dtype=bool)
    if not hard.any() or ledger.empty:
        return held
    # The ledger row of each hard break's request id: its state and the CAS's own latency.
    event_id, ledger_id, blank = request_id_keys(events["request_id"], ledger)
    states = ledger_column(ledger, "state").to_numpy(dtype=object)
    state = first_row_values(ledger_id, len(blank), states, "")
    latencies = numbers(ledger_column(ledger, "latency_ms"))
    cas_latency_ms = first_row_values(ledger_id, len(blank), latencies, np.nan)
    expired = hard & ~blank[event_id] & (state[event_id] == "expired")
    if not expired.any():
        return held

    latency_s = numbers(events["latency_ms"]) / 1000
    transit_s = latency_s - np.nan_to_num(cas_latency_ms[event_id]) / 1000
    # The client's idle time before each request: since the end of its request before it, in any service
    # (OWA and ECP share one logon).
    order = np.lexsort((coded.ts, coded.client))
    idle_s = np.full(len(coded.ts), np.inf)
    same_session = coded.client[order][1:] == coded.client[order][:-1]
    previous_end = coded.ts[order][:-1] + np.nan_to_num(latency_s[order][:-1])
    idle_s[order[1:][same_session]] = coded.ts[order][1:][same_session] - previous_end[same_session]
    held[expired] = transit_s[expired] > np.maximum(idle_s[expired], 0.0)
    return held


def held_reason(held: np.ndarray, events: pd.DataFrame, coded: CodedEvents, time_scale: float) -> list[str]:
    """The invalid reason for breaks held in the lab; none when there are none."""
    n_held = int(held.sum())
    if not n_held:
        return []
    waited_s = numbers(events["latency_ms"])[held] / 1000
    services = sorted({coded.service_names[s] for s in coded.service[held]})
    breaks = "1 hard break (" if n_held == 1 else f"{n_held:,} hard breaks ("
    return [
        f"{breaks}{', '.join(services)}) {'is a session' if n_held == 1 else 'are sessions'} that expired "
        f"on the CAS while {'its request' if n_held == 1 else 'their requests'} waited "
        f"{_span(waited_s, 1)} s in the lab before reaching it ({_span(waited_s, time_scale / 60)} Exchange "
        f"minutes at time_scale {time_scale:g}): the lab could not carry this load at this time scale; "
        "lower time_scale or the number of users"
    ]


def _span(values: np.ndarray, factor: float) -> str:
    """'46-72' from the smallest and largest value times factor; '50' when they round alike. Below 10 two
    significant digits ('0.06-0.27'): at a high time_scale a wait of minutes is a fraction of a second."""
    low, high = (_figure(x * factor) for x in (np.min(values), np.max(values)))
    return low if low == high else f"{low}-{high}"


def _figure(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"
