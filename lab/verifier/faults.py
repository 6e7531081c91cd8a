"""What each fault did to the sessions (DESIGN.md section 2).

A fault that takes a CAS out (stop, drain, health-down) lasts until the matching start/health-up or
the end of the run. The sessions on that CAS are those whose last answer before the fault came from
it (a session with no answer yet is where its client's last answer came from: OWA and ECP share the
logon cookie, so ECP first opened after the fault breaks the OWA logon made there); they may break. A
break of any other session in that window is **collateral**. After the CAS returns, a session that
had moved away either stays where it went or **moves back** (a second break for a service with state).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lab.verifier.breaks import Breaks
from lab.verifier.coding import CodedEvents
from lab.verifier.facts import FaultFact, RunFacts

if TYPE_CHECKING:
    from lab.scenario import Scenario

OUT_ACTIONS, BACK_ACTIONS = ("stop", "drain", "health-down"), ("start", "health-up")


def fired_faults(facts: RunFacts, scenario: Scenario) -> list[FaultFact]:
    """The faults as fired, in time order (from the scenario's schedule if the run did not record them)."""
    fired = list(facts.faults)
    if not fired and scenario.faults and facts.started_ts is not None:
        fired = [FaultFact(f.server, f.action, facts.started_ts + t) for t, f in scenario.fault_schedule()]
    return sorted(fired, key=lambda f: f.ts)


def outages(fired: list[FaultFact], run_start: float, events: CodedEvents, breaks: Breaks) -> list[dict]:
    """One entry per outage: a CAS taken out, until it is back or the run ends."""
    out = []
    for i, fault in enumerate(fired):  # a handful of faults; each one is analysed with column operations
        if fault.action not in OUT_ACTIONS or fault.server not in events.server_names:
            continue
        returns = (f for f in fired[i + 1 :] if f.server == fault.server and f.action in BACK_ACTIONS)
        back = next(returns, None)
        server = events.server_names.index(fault.server)
        out.append(
            {
                "server": fault.server,
                "action": fault.action,
                "at_s": round(fault.ts - run_start, 3),
                "back_action": back.action if back else None,
                "back_at_s": round(back.ts - run_start, 3) if back else None,
                **outage(events, breaks, server, fault.ts, back.ts if back else math.inf),
            }
        )
    return out


def answered_before_a_stop(events: CodedEvents, fired: list[FaultFact]) -> np.ndarray:
    """Per event: answered by a CAS that a `stop` killed later (its ledger row may be lost with it)."""
    stopped = np.zeros(len(events.ts), dtype=bool)
    for fault in fired:
        if fault.action == "stop" and fault.server in events.server_names:
            stopped |= (events.server == events.server_names.index(fault.server)) & (events.ts <= fault.ts)
    return stopped


def session_homes(events: CodedEvents, before: float) -> np.ndarray:
    """Per session: the CAS of its last answer before `before` (-1: none), or if it had no answer yet,
    the CAS of its client session's last answer on any service."""
    answers = events.answered_in_order
    earlier = answers.ts < before
    session, server = answers.session[earlier], answers.server[earlier]
    last = np.r_[session[1:] != session[:-1], True] if len(session) else np.zeros(0, dtype=bool)
    home = np.full(events.n_sessions, -1)
    home[session[last]] = server[last]

    seen = np.flatnonzero(events.answered & (events.ts < before))
    by_client = seen[np.lexsort((events.ts[seen], events.client[seen]))]
    client = events.client[by_client]
    client_last = np.r_[client[1:] != client[:-1], True] if len(client) else np.zeros(0, dtype=bool)
    client_home = np.full(int(events.client.max(initial=-1)) + 1, -1)
    client_home[client[client_last]] = events.server[by_client][client_last]

    homeless = home < 0
    home[homeless] = client_home[events.session_client[homeless]]
    return home


def outage(events: CodedEvents, breaks: Breaks, server: int, start: float, end: float) -> dict[str, Any]:
    """What happened to the sessions while `server` was out (start..end) and after it returned."""
    on_server = session_homes(events, before=start) == server
    during = (events.ts >= start) & (events.ts < end)
    elsewhere = during & events.answered & (events.server != server)
    first_elsewhere = pd.Series(events.ts[elsewhere]).groupby(events.session[elsewhere]).min()
    failover_s = first_elsewhere[on_server[first_elsewhere.index.to_numpy()]] - start
    entry: dict[str, Any] = {
        "sessions_on_server": int(on_server.sum()),
        "sessions_lost": int((on_server & events.sessions_with(during & (breaks.hard | breaks.error))).sum()),
        "sessions_moved": len(failover_s),
        "failover_s_median": round(float(failover_s.median()), 3) if len(failover_s) else None,
        "failover_s_max": round(float(failover_s.max()), 3) if len(failover_s) else None,
        "collateral_sessions": int((~on_server & events.sessions_with(during & breaks.hard)).sum()),
        "errors_in_window": int((during & breaks.error).sum()),
    }
    if math.isfinite(end):
        moved = np.zeros(events.n_sessions, dtype=bool)
        moved[failover_s.index.to_numpy()] = True
        entry["after_return"] = after_return(events, breaks, server, end, moved)
    return entry


def after_return(
    events: CodedEvents, breaks: Breaks, server: int, returned: float, moved: np.ndarray
) -> dict[str, Any]:
    """Of the sessions that `moved` away from `server`: which stayed where they went after it returned at
    `returned`, which moved back, and how many of those broke again."""
    after = events.ts >= returned
    came_back = events.sessions_with(after & (events.server == server))
    moved_back = moved & came_back
    stayed = moved & events.sessions_with(after & events.answered) & ~came_back
    n_services = len(events.service_names)
    back_by_service = np.bincount(events.session_service[moved_back], minlength=n_services)
    stayed_by_service = np.bincount(events.session_service[stayed], minlength=n_services)
    return {
        "stayed": int(stayed.sum()),
        "moved_back": int(moved_back.sum()),
        "second_breaks": int((moved_back & events.sessions_with(after & breaks.hard)).sum()),
        "by_service": {
            name: {"stayed": int(stayed_by_service[k]), "moved_back": int(back_by_service[k])}
            for k, name in enumerate(events.service_names)
            if stayed_by_service[k] or back_by_service[k]
        },
    }
