"""Time (DESIGN.md section 13): cuts, and the heartbeats ActiveSync devices asked for.

A **cut** is a held request, channel or TCP session (an EAS Ping, an RPC/HTTP virtual connection, a MAPI
or Address Book connection) closed by something other than the CAS's own answer, such as a balancer's
idle timeout. It is seen from both sides:
- the client's: an event with outcome `cut` (detail `eof` or `reset`). This is the figure that is
  judged (`services.<id>.cut`, `[thresholds] cut`): every lab client watches what it holds, so it
  finds every cut, also one under a connection it only says goodbye on;
- the CAS's: a ledger row with detail `peer-closed` (`client-gone` in ledgers from before the word):
  the other side closed it first (`cut_seen_by_cas`). Only rows that ended while the load ran count:
  when the load stops, the load generator drops what its users hold (HTTP has no goodbye), and that
  is no cut. A CAS cannot tell a balancer from a client that left, so this figure is the evidence
  beside the clients' count, not a second count of the same cuts.

A cut may be the lab's own when it was found after a keep-alive fell due by more than KEEPALIVE_LATE_S:
an Outlook Anywhere client's ping up IN (its cut event says `keepalive-late=S`) or the CAS's ping down
OUT (its ledger row says `peer-closed keepalive-late=S`). The load generator or the CAS fell behind, so
the channel was silent longer than the protocol asks, and the balancer's idle timeout may have run out
for that reason alone. The run cannot vouch for its cuts then, and is invalid (`late_keepalive_reason`).

ActiveSync: each Ping's event says the heartbeat its device asked for (`heartbeat=540`, seconds of
Exchange time). Exchange 2010 logs event 1040 when the mean of the most recent heartbeats (a sliding
window of 200) is at or below 540 s: devices behind something that cuts their Pings fall back to
short heartbeats. `alert` is that condition at the end of the run, when the devices have adapted to
the network (every device starts at the 9-minute default, so it holds at the start of any run); the
window is the farm's (each Exchange CAS keeps its own: the same figure when devices are spread evenly).
Pings answered with an error (Status 5: a heartbeat out of the CAS's range) are not counted, as
Exchange counts the heartbeats it accepts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from caslab.records import (
    HEARTBEAT_FIELD,
    KEEPALIVE_LATE_FIELD,
    KEEPALIVE_LATE_S,
    PEER_CLOSED,
    PEER_CLOSED_OLD,
)
from lab.verifier.coding import CodedEvents, codes_of, ledger_column, numbers, recode
from lab.verifier.load import binned

HEARTBEAT_WINDOW = 200  # Exchange 2010's sliding window of recent heartbeats
HEARTBEAT_ALERT_S = 540  # its alert threshold: event 1040 at or below this mean
_PEER_CLOSED = f"^(?:{PEER_CLOSED}|{PEER_CLOSED_OLD})\\b"
_HEARTBEAT = f"\\b{HEARTBEAT_FIELD}=(\\d+)\\b"
_KEEPALIVE_LATE = f"\\b{KEEPALIVE_LATE_FIELD}=(\\d+(?:\\.\\d+)?)\\b"


def cuts_seen_by_cas(ledger: pd.DataFrame, service_names: list[str], load_end: float) -> np.ndarray:
    """Per service (in `service_names` order): ledger rows the other side closed before the CAS's answer
    or the client's goodbye, that ended before `load_end`. (A ledger without details has none.)"""
    if not {"detail", "service"} <= set(ledger.columns):
        return np.zeros(len(service_names), dtype=np.int64)
    detail = ledger_column(ledger, "detail").fillna("").astype(str)
    ended = (
        numbers(ledger_column(ledger, "ts"))
        + np.nan_to_num(numbers(ledger_column(ledger, "latency_ms"))) / 1000
    )
    peer_closed = detail.str.contains(_PEER_CLOSED, regex=True).to_numpy(dtype=bool) & (ended < load_end)
    raw, names = codes_of(ledger_column(ledger, "service").fillna(""))
    service = recode(raw, names, service_names)
    counted = peer_closed & (service >= 0)
    return np.bincount(service[counted], minlength=len(service_names))


def cut_timeline(events: CodedEvents, run_start: float, run_end: float) -> pd.DataFrame:
    """Cuts the clients saw, per service per time bin (the load timeline's bins)."""
    cut = events.outcome["cut"]
    return binned(events.ts[cut], events.service[cut], events.service_names, run_start, run_end)


def heartbeats(events: pd.DataFrame, coded: CodedEvents) -> pd.DataFrame:
    """The EAS Pings the CAS took in or the network cut, oldest first: ts and the heartbeat asked (s)."""
    eas = coded.service_names.index("eas") if "eas" in coded.service_names else -1
    taken = coded.outcome["ok"] | coded.outcome["cold"] | coded.outcome["cut"]
    rows = np.flatnonzero((coded.service == eas) & taken)
    asked = events["detail"].iloc[rows].astype(str).str.extract(_HEARTBEAT, expand=False)
    found = asked.notna().to_numpy(dtype=bool)
    table = pd.DataFrame({"ts": coded.ts[rows][found], "heartbeat_s": asked[found].astype(float).to_numpy()})
    return table.sort_values("ts", kind="stable").reset_index(drop=True)


def heartbeat_figures(table: pd.DataFrame) -> dict | None:
    """{mean_s, min_s, max_s, alert, recent_mean_s, pings} of the run's Ping heartbeats (None: no Ping)."""
    if table.empty:
        return None
    asked = table["heartbeat_s"].to_numpy()
    recent = float(asked[-HEARTBEAT_WINDOW:].mean())
    return {
        "mean_s": round(float(asked.mean()), 1),
        "min_s": int(asked.min()),
        "max_s": int(asked.max()),
        "alert": recent <= HEARTBEAT_ALERT_S,
        "recent_mean_s": round(recent, 1),
        "pings": len(asked),
    }


def late_keepalive_reason(events: pd.DataFrame, coded: CodedEvents, ledger: pd.DataFrame) -> list[str]:
    """The invalid reason when cuts were found after a keep-alive fell due late (see the module docstring):
    the clients' (their cut events) and the CAS's (their ledgers' peer-closed rows); none without such."""
    cut = np.flatnonzero(coded.outcome["cut"])
    said = events["detail"].iloc[cut].astype(str).str.extract(_KEEPALIVE_LATE, expand=False)
    client = said[said.notna().to_numpy(dtype=bool)].astype(float)
    cas = pd.Series(dtype=float)
    if "detail" in ledger.columns:
        detail = ledger_column(ledger, "detail").fillna("").astype(str)
        closed = detail[detail.str.contains(_PEER_CLOSED, regex=True)]
        cas = closed.str.extract(_KEEPALIVE_LATE, expand=False).dropna().astype(float)
    late = [
        f"{len(found):,} by {whose} up to {found.max():.2f} s late"
        for whose, found in (("the load generator", client), ("the CAS", cas))
        if len(found)
    ]
    if not late:
        return []
    return [
        f"cuts were found after a keep-alive went out late ({'; '.join(late)}; more than "
        f"{KEEPALIVE_LATE_S:g} s): the balancer's idle timeout may have run out because the lab fell "
        "behind, not because of its setting"
    ]
