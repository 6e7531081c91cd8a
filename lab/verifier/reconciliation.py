"""Reconciliation (DESIGN.md section 7): each client event carrying a request id is matched to the
ledger row of that id, so that nothing is silently dropped.

What does not match is counted by why: transport failures and cuts (no answer; a cut Ping's row is
written when its answer was due, `cuts_seen_by_cas` counts those found), answers the balancer gave
itself (no CAS named, e.g. Envoy's 503 with no healthy CAS), answers of a CAS without a ledger row (the
lab lost rows: `unmatched`), answers of a CAS that a fault stopped while the request was still open,
such as an RPC/HTTP channel (a killed CAS never writes those rows: `lost_with_stopped_cas`), events
without a request id (exchanges inside an open connection, cuts of channels and connections), ledger
rows no client asked for (health probes, connections cut), ids on several ledger rows (a balancer
retry) or on several events (clients whose ids are not unique) and events whose answering server
differs from the ledger's.

A ledger row whose request id no event carries (`ledger_not_in_events`) is a request the clients sent
but never logged. At the end of the load that is normal: the clients are stopped with requests in
flight (a held Ping, a Sync on its way), and the CAS writes their rows when it answers or finds them
gone, after the load ended. So is a request the CAS holds open by design (an EAS Ping, an RPC/HTTP
channel) whose answer never reached its client: a device that dropped the idle flow without a word, or
a balancer that retried the Ping on another CAS after its timeout, leaves the phone waiting until the
stop. Any other row the CAS answered well before the load ended (`not_logged_in_load`, more than
LOGGING_GRACE_S before) is an event the lab lost: it may have been a break.

An Outlook Anywhere virtual connection whose IN and OUT halves reached different CAS waits there for the
CAS's pairing wait (caslab.records.RPC_PAIRING_WAIT_S, real time), after which each CAS records its
half `foreign channel-split` and the client sees the hard break. A run that stops inside that wait ends
both halves `cas-closing` while each is still the only half on its CAS (state `new`), and their client,
still in its connect, logged nothing: the split is certain (one virtual-connection cookie, two CAS) but
uncounted (`channel_splits_at_stop`). Where no hard-break check failed without them, the run's figure
would be wrong, so the run is invalid.

Reconciliation is also a check that the lab can vouch for the run: a client request answered by a CAS
without its ledger row (`unmatched`), a request the CAS answered during the load that no client logged
(`not_logged_in_load`), or a ledger row of another run (`foreign_run_rows`: its run id is not this
run's, so another lab's clients reached this run's CAS) makes the run invalid.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from caslab.records import CAS_CLOSING, RPC_PAIRING_WAIT_S
from lab.verifier.coding import CodedEvents, first_row_values, ledger_column, numbers, request_id_keys

# A client logs its request when it has read the answer: milliseconds after the CAS wrote the row, on a
# load generator that keeps up (its saturation check trips first when it does not). Measured over ten
# bundled scenarios on four drivers, every row no client logged was answered after the load ended (by
# 0.06-0.2 s); 5 s leaves room for a busy load generator without judging the requests cut by the stop.
LOGGING_GRACE_S = 5.0


def reconcile(
    request_ids: pd.Series,
    ledger: pd.DataFrame,
    events: CodedEvents,
    ledger_server: np.ndarray,
    stopped: np.ndarray,
    foreign_run_rows: int = 0,
    load_end: float | None = None,
) -> dict[str, int]:
    """Match every client event (its `request_ids`) to the ledger row of its request id; count whatever
    does not match. `stopped`: per event, answered by a CAS that a fault killed later; `ledger` holds
    this run's rows only, `foreign_run_rows` counts those of other runs (see rows_of_other_runs);
    `load_end`: when the clients were stopped (epoch seconds; None: unknown, `not_logged_in_load` is 0)."""
    n_events = len(request_ids)
    event_id, ledger_id, blank = request_id_keys(request_ids, ledger)
    event_has_id, ledger_has_id = ~blank[event_id], ~blank[ledger_id]
    in_ledger = np.bincount(ledger_id[ledger_has_id], minlength=len(blank)) > 0
    in_events = np.bincount(event_id[event_has_id], minlength=len(blank)) > 0
    matched = event_has_id & in_ledger[event_id]
    # The server of the first ledger row of each id, against the server the client says answered.
    ledger_server_of_id = first_row_values(ledger_id, len(blank), ledger_server.astype(np.int64), -2)
    transport = events.outcome["transport"]
    cut = events.outcome["cut"]
    answered = events.server >= 0
    not_found = event_has_id & ~matched & ~transport & ~cut
    differs = matched & ~transport & ~cut & (ledger_server_of_id[event_id] != events.server)
    known_outcomes = sum(int(mask.sum()) for mask in events.outcome.values())
    not_logged = ledger_has_id & ~in_events[ledger_id]
    if load_end is not None:
        latency_s = numbers(ledger_column(ledger, "latency_ms")) / 1000
        answered_at = numbers(ledger_column(ledger, "ts")) + latency_s
        answered_early = answered_at < load_end - LOGGING_GRACE_S  # NaN: not judged
        not_logged_in_load = not_logged & answered_early & ~held_open(ledger)
    else:
        not_logged_in_load = np.zeros(len(ledger_id), dtype=bool)
    return {
        "events": n_events,
        "matched": int(matched.sum()),
        "transport_failures": int(transport.sum()),
        "transport_seen_by_cas": int((transport & matched).sum()),
        "cuts": int(cut.sum()),
        "cuts_seen_by_cas": int((cut & matched).sum()),
        "unmatched": int((not_found & answered & ~stopped).sum()),
        "lost_with_stopped_cas": int((not_found & answered & stopped).sum()),
        "answered_by_balancer": int((not_found & ~answered).sum()),
        "without_request_id": int((~event_has_id).sum()),
        "event_duplicate_ids": int(event_has_id.sum() - np.count_nonzero(in_events)),
        "unknown_outcome": n_events - known_outcomes,
        "server_differs": int(differs.sum()),
        "ledger_rows": len(ledger_id),
        "ledger_without_request_id": int((~ledger_has_id).sum()),
        "ledger_not_in_events": int(not_logged.sum()),
        "not_logged_in_load": int(not_logged_in_load.sum()),
        "ledger_duplicate_ids": int(ledger_has_id.sum() - np.count_nonzero(in_ledger)),
        "foreign_run_rows": foreign_run_rows,
        "channel_splits_at_stop": channel_splits_at_stop(ledger),
    }


def channel_splits_at_stop(ledger: pd.DataFrame) -> int:
    """Outlook Anywhere virtual connections whose halves were each waiting alone on a different CAS when
    the CAS stopped (see the module docstring): one session key (the virtual connection's cookie) on
    `new` rows ended `cas-closing` on two or more CAS."""
    if ledger.empty or "session_key" not in ledger.columns:
        return 0
    rows = ledger[
        (ledger["service"] == "rpchttp")
        & (ledger["state"] == "new")
        & (ledger["detail"] == CAS_CLOSING)
        & (ledger["session_key"].fillna("") != "")
    ]
    return int((rows.groupby("session_key")["server"].nunique() > 1).sum())


def held_open(ledger: pd.DataFrame) -> np.ndarray:
    """Per ledger row: a request the CAS holds open by design, an EAS Ping (its row names its heartbeat)
    or an RPC/HTTP channel (one row per channel, written when it ends)."""
    blank = pd.Series("", index=ledger.index)
    detail = ledger.get("detail", blank).fillna("").astype(str)
    service = ledger.get("service", blank).fillna("").astype(str)
    return (detail.str.contains("heartbeat=", regex=False) | (service == "rpchttp")).to_numpy(dtype=bool)


def rows_of_other_runs(ledger: pd.DataFrame, run_id: str) -> np.ndarray:
    """Per ledger row: does it carry another run's id? A row without one (a balancer's health probe), a
    ledger without the column (runs from before it existed) or a run that does not know its own id
    (run_id "") has none."""
    if not run_id or "run_id" not in ledger.columns:
        return np.zeros(len(ledger), dtype=bool)
    ids = ledger["run_id"].fillna("")
    return ((ids != "") & (ids != run_id)).to_numpy(dtype=bool)


def invalid_reasons(reconciliation: dict[str, int]) -> list[str]:
    """Why reconciliation says the lab cannot vouch for the run; none when it can."""
    reasons = []
    if unmatched := reconciliation["unmatched"]:
        reasons.append(
            f"{unmatched:,} client requests answered by a CAS have no ledger row of this run "
            f"(reconciliation: unmatched {unmatched})"
        )
    if lost := reconciliation["not_logged_in_load"]:
        reasons.append(
            f"{lost:,} requests a CAS answered during the load are in no client's events, more than "
            f"{LOGGING_GRACE_S:g} s before the load ended: the lab lost client events, and a break among "
            f"them would not be counted (reconciliation: not_logged_in_load {lost})"
        )
    if foreign := reconciliation["foreign_run_rows"]:
        reasons.append(
            f"{foreign:,} ledger rows belong to another run: another lab's clients reached this run's CAS "
            f"(reconciliation: foreign_run_rows {foreign})"
        )
    return reasons


def unjudged_splits_reason(reconciliation: dict[str, int], failed_checks: list[str]) -> list[str]:
    """The invalid reason for split virtual connections the run ended before the CAS judged them, when no
    hard-break check (`failed_checks`: the names of those that failed) failed without them; else none."""
    splits = reconciliation.get("channel_splits_at_stop", 0)
    if not splits or any(name.startswith("hard_breaks") for name in failed_checks):
        return []
    return [
        f"{splits:,} Outlook Anywhere virtual connections had their IN and OUT halves waiting on different "
        f"CAS when the run ended, inside the CAS's {RPC_PAIRING_WAIT_S:g} s pairing wait: each is a hard "
        "break (a split channel pair) that no client had seen yet, so the run's hard breaks leave them out "
        "(reconciliation: "
        f"channel_splits_at_stop {splits}); a load that lasts well beyond the pairing wait counts those "
        "made before its last seconds"
    ]
