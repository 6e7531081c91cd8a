"""Why sessions moved (DESIGN.md section 13): a **move** is an answer of a session from another CAS than
its answer before. Each move is put down to the first of these causes that holds:

- `cas-failed`: an outage of the CAS it left began before the move and was not over before the
  session's previous answer (it failed under the session), or the CAS it moved to came back from an
  outage in between (hashing methods move sessions back);
- `no-persistence`: the service's method keeps no persistence (`none`, `leastconn`);
- `expired`: the balancer's persistence entry for the session's key (what the method keys on: the
  source address for `source-ip`, the user for `header Authorization`, the client session for the
  cookie methods) saw no request for longer than the persistence timeout before the move;
- `evicted`: the persistence table was full while the key was idle: more keys had live entries (used
  within the timeout) than `persistence_table_size` holds, so the balancer dropped the oldest. Counted
  per service: a driver that keeps one table for several services (OWA and ECP on one backend) fills
  it sooner than this says;
- `other`: none of these (a mobile device that changed address under `source-ip`, a balancer that
  lost its state).
Per service the moves are counted by cause, and so are those of them that broke (a hard or soft break
on the move itself: a logoff, a cold EAS cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lab.verifier.breaks import Breaks, same_as_before
from lab.verifier.coding import CodedEvents, keys_of

CAUSES = ("expired", "evicted", "cas-failed", "no-persistence", "other")
NO_PERSISTENCE = ("none", "leastconn")


@dataclass(frozen=True)
class Stickiness:
    """What the balancer kept a service's sessions by: its method (and cookie or header name), and how
    long an idle entry lived, in seconds of wall time (as the balancer ran it)."""

    method: str
    name: str | None
    timeout_s: float


@dataclass(frozen=True)
class Outage:
    server: int  # position in CodedEvents.server_names
    start: float  # epoch seconds
    end: float  # epoch seconds; inf when it never came back


def move_causes(
    coded: CodedEvents,
    events: pd.DataFrame,
    breaks: Breaks,
    stickiness: dict[str, Stickiness],
    table_size: int | None,
    outages: list[Outage],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(moves, moves that broke): per service (index) and cause (columns), counts."""
    answers = coded.answered_in_order
    moved_at = same_as_before(answers.session) & ~same_as_before(answers.server)
    previous = np.flatnonzero(moved_at) - 1  # the session's answer before each move
    move = answers.event[moved_at]
    ts, before_ts = coded.ts[move], answers.ts[previous]
    left, went = answers.server[previous], coded.server[move]
    service = coded.service[move]
    rules = [stickiness.get(s) for s in coded.service_names]
    timeout = np.array([r.timeout_s if r else np.inf for r in rules])[service]

    cause = np.full(len(move), len(CAUSES) - 1)  # other, unless something below explains it
    unexplained = np.ones(len(move), dtype=bool)

    def explain(mask: np.ndarray, name: str) -> None:
        chosen = unexplained & mask
        cause[chosen] = CAUSES.index(name)
        unexplained[chosen] = False

    failed = np.zeros(len(move), dtype=bool)
    for outage in outages:  # a handful; each with whole-array operations
        failed |= (left == outage.server) & (outage.start <= ts) & (outage.end > before_ts)
        failed |= (went == outage.server) & (before_ts < outage.end) & (outage.end <= ts)
    explain(failed, "cas-failed")
    no_persistence = np.array([r is None or r.method in NO_PERSISTENCE for r in rules])
    explain(no_persistence[service], "no-persistence")

    key = _persistence_keys(coded, events, rules)
    key_before, key_after = _neighbours(coded, key)
    idle_from = key_before[move]
    explain(ts - idle_from > timeout, "expired")
    if table_size is not None and unexplained.any():
        full = np.zeros(len(move), dtype=bool)
        candidates = unexplained & np.isfinite(idle_from)
        for s in np.unique(service[candidates]):  # the services (a few), each with array operations
            mine = candidates & (service == s)
            live = _live_keys(coded, key_after, int(s), float(timeout[mine][0]))
            full[mine] = _most_live(live, idle_from[mine], ts[mine]) > table_size
        explain(full, "evicted")

    broke = (breaks.hard | breaks.soft)[move]
    n_services = len(coded.service_names)
    tables = []
    for selected in (np.ones(len(move), dtype=bool), broke):
        counts = np.bincount(
            service[selected] * len(CAUSES) + cause[selected], minlength=n_services * len(CAUSES)
        )
        tables.append(
            pd.DataFrame(
                counts.reshape(n_services, len(CAUSES)),
                index=pd.Index(coded.service_names, name="service"),
                columns=list(CAUSES),
            )
        )
    return tables[0], tables[1]


def _persistence_keys(coded: CodedEvents, events: pd.DataFrame, rules: list[Stickiness | None]) -> np.ndarray:
    """Per event: a code of what its service's method keys on (unique across services)."""
    source, _ = keys_of(events["source_ip"])
    user, _ = keys_of(events["user"])
    kind, _ = keys_of(events["client_kind"])
    columns = {"source": source, "user": user, "client kind": kind, "client session": coded.client}
    per_service = [_keyed_on(r) for r in rules]
    width = max(int(c.max(initial=0)) for c in columns.values()) + 1
    key = np.zeros(len(coded.ts), dtype=np.int64)
    for s, what in enumerate(per_service):  # the services (a few)
        mine = coded.service == s
        key[mine] = s * width + columns[what][mine]
    return key


def _keyed_on(rule: Stickiness | None) -> str:
    """Which of an event's columns the balancer's persistence entry is keyed on."""
    if rule is None:
        return "client session"
    if rule.method == "source-ip":
        return "source"
    if rule.method == "header":
        name = (rule.name or "").lower()
        return (
            "user" if name == "authorization" else "client kind" if name == "user-agent" else "client session"
        )
    return "client session"  # the cookie methods, ssl-session-id


def _neighbours(coded: CodedEvents, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event: when the same key was last answered before it, and next after it (NaN: never)."""
    answered = np.flatnonzero(coded.answered)
    by_time = answered[np.argsort(coded.ts[answered], kind="stable")]
    order = by_time[np.argsort(key[by_time], kind="stable")]  # by key, then time
    same = same_as_before(key[order])
    times = coded.ts[order]
    before = np.full(len(coded.ts), np.nan)
    after = np.full(len(coded.ts), np.nan)
    before[order[same]] = times[np.flatnonzero(same) - 1]
    after[order[np.flatnonzero(same) - 1]] = times[same]
    return before, after


def _live_keys(
    coded: CodedEvents, key_after: np.ndarray, service: int, timeout_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """The number of keys of `service` with a live entry, as a step function: (times, count from each
    time on). An answered request makes its key's entry live until its next request or the timeout."""
    mine = coded.answered & (coded.service == service)
    start = coded.ts[mine]
    end = np.fmin(np.nan_to_num(key_after[mine], nan=np.inf), start + timeout_s)
    times = np.concatenate([start, end])
    steps = np.concatenate([np.ones(len(start)), -np.ones(len(end))])
    order = np.lexsort((steps, times))  # at one instant, an entry ends before the next one begins
    return times[order], np.cumsum(steps[order])


def _most_live(live: tuple[np.ndarray, np.ndarray], start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Per interval [start, end): the most keys live at once in it."""
    times, count = live
    if not len(times):
        return np.zeros(len(start))
    values = np.append(count, -np.inf)  # a last element, so that every range end is a valid index
    lo = np.maximum(np.searchsorted(times, start, side="right") - 1, 0)  # the count in force at start
    hi = np.maximum(np.searchsorted(times, end, side="left"), lo + 1)
    order = np.argsort(lo, kind="stable")
    bounds = np.empty(2 * len(lo), dtype=np.intp)
    bounds[0::2], bounds[1::2] = lo[order], np.minimum(hi[order], len(count))
    most = np.empty(len(lo))
    most[order] = np.maximum.reduceat(values, bounds)[0::2]
    return most
