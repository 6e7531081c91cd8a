"""The verifier: client events + CAS ledgers + scenario -> figures, checks and a verdict (DESIGN.md 7-9).

Everything is computed with whole-column operations (numpy/pandas), never a Python loop over events,
so a run of a million requests is judged in seconds. Definitions, in the words of DESIGN.md section 2:

- A **session** is one client session (the client's `session` id, of one `user`) on one service: the
  unit a balancer must keep on one CAS. A session is **split** when its answered requests came from
  more than one CAS.
- A **hard break** is a request the CAS answered as `foreign` (it carried state another CAS made: a
  logoff, a lost EWS subscription, a split RPC/HTTP channel pair, an unknown MAPI handle, an OAB
  download spread over CAS that differ).
- A **soft break** is a request answered `cold` (the CAS had to warm up: EAS device cache, Address Book
  referral) and, for EAS, a request that reached another CAS than the one before it. The first request
  of an EAS session is always cold (every CAS warms up once per device), so it is not a break.
- **Errors** are requests answered with an error, plus transport failures (no answer at all).
- **Balance** is over the answered requests per CAS of the farm: max/mean, the coefficient of variation
  and Jain's fairness index. To say whether a skew is the balancer's doing or just the luck of few
  sessions, the same sessions (weighted by their requests) are placed on the farm uniformly at random
  many times (seeded); the report gives the percentile of the observed max/mean among those placements.
- A **fault** that takes a CAS out (stop, drain, health-down) lasts until the matching start/health-up
  or the end of the run. The sessions on that CAS are those whose last answer before the fault came
  from it (a session with no answer yet is where its client's last answer came from: OWA and ECP share
  the logon cookie, so ECP first opened after the fault breaks the OWA logon made there); they may
  break. A break of any other session in that window is **collateral**. After the CAS returns, a
  session that had moved away either stays where it went or **moves back** (a second break for a
  service with state).
- **Reconciliation**: each client event carrying a request id is matched to the ledger row of that id.
  What does not match is counted by why: transport failures (no answer), answers the balancer gave
  itself (no CAS named, e.g. Envoy's 503 with no healthy CAS), answers of a CAS without a ledger row
  (the lab lost rows: `unmatched`), answers of a CAS that a fault stopped while the request was still
  open, such as an RPC/HTTP channel (a killed CAS never writes those rows: `lost_with_stopped_cas`),
  events without a request id (exchanges inside an open connection), ledger rows no client asked for
  (health probes), ids on several ledger rows (a balancer retry) or on several events (clients whose
  ids are not unique) and events whose answering server differs from the ledger's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from caslab.records import EVENT_COLUMNS, LEDGER_COLUMNS, OUTCOMES
from caslab.vocab import SERVICES
from lab.scenario import Scenario

# Services whose sessions need affinity (DESIGN.md section 3): a scalar split_sessions_pct limit covers these.
AFFINITY_SERVICES = tuple(s for s in SERVICES if s not in ("oab", "autodiscover"))
OUT_ACTIONS, BACK_ACTIONS = ("stop", "drain", "health-down"), ("start", "health-up")
RANDOM_TRIALS = 200
SKEW_PERCENTILE = 95.0  # an observed max/mean above this share of random placements is the balancer's doing


@dataclass(frozen=True)
class FaultFact:
    """A fault as it was fired: which server, what, and when (epoch seconds)."""

    server: str
    action: str
    ts: float


@dataclass
class RunFacts:
    """What the run knows beyond events and ledgers: the balancer it ran and when things happened."""

    driver: str
    driver_version: str = ""
    methods: dict[str, str] = field(default_factory=dict)  # service -> "cookie-hash OutlookSession ..."
    preset: str | None = None
    started_ts: float | None = None  # epoch seconds when the load generator started (the ramp begins)
    ended_ts: float | None = None
    faults: list[FaultFact] = field(default_factory=list)
    server_stats: dict[str, dict] = field(default_factory=dict)  # /caslab/stats of each CAS at the end
    balancer_counters: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. "load generator saturated: ..."

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunFacts:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["faults"] = [FaultFact(f["server"], f["action"], f["ts"]) for f in data.get("faults", [])]
        return cls(**values)


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    passed: bool
    op: str = "<="  # the value must be <= limit (">=" for minimums)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "op": self.op,
            "pass": self.passed,
        }


@dataclass
class Analysis:
    """The verifier's result: tables for the report, plain dicts for summary.json, checks for the verdict."""

    # index service: requests, sessions, split_sessions, split_pct, hard/soft breaks, errors, p50/95/99
    services: pd.DataFrame
    servers: pd.DataFrame  # index server: requests, share, sessions, peak_connections, ledger_rows
    balance: dict[str, Any]
    population_requests: pd.DataFrame  # population x server: answered requests
    population_shares: pd.DataFrame  # the same, each row as shares of that population's requests
    timeline: pd.DataFrame  # index: seconds since the run started (bin start); columns: servers
    faults: list[dict[str, Any]]
    reconciliation: dict[str, int]
    totals: dict[str, Any]
    checks: list[Check]

    @property
    def verdict(self) -> str:
        return "pass" if all(c.passed for c in self.checks) else "fail"


# ---- inputs ----------------------------------------------------------------------------------------


def read_events(paths: list[Path]) -> pd.DataFrame:
    """The client event CSV files of a run (one per Locust process) as one frame; text stays text
    (an empty server or request id is "", never NaN or a number)."""
    numbers = {"ts": "float64", "status": "int64", "latency_ms": "float64"}
    dtypes = {c: numbers.get(c, "str") for c in EVENT_COLUMNS}
    frames = [pd.read_csv(p, dtype=dtypes, keep_default_na=False, na_values={}) for p in paths]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
    return pd.concat(frames, ignore_index=True)


def _codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a text column of few distinct values, and the texts they stand for ("" if missing)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes, ["" if pd.isna(u) else str(u) for u in uniques]


def _keys(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a text column of many distinct values, and per code whether it is empty/missing."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    blank = np.asarray(pd.isna(uniques) | (uniques.astype(str) == ""), dtype=bool)
    return codes, blank


def _recode(codes: np.ndarray, names: list[str], wanted: list[str]) -> np.ndarray:
    """Codes into `names` turned into positions in `wanted` (-1 for names not wanted)."""
    position = {name: i for i, name in enumerate(wanted)}
    return np.array([position.get(n, -1) for n in names] + [-1], dtype=np.int64)[codes]


def _ledger_column(ledger: pd.DataFrame, name: str) -> pd.Series:
    if name not in ledger.columns:
        raise ValueError(f"the ledger lacks the column {name!r}")
    return ledger[name]


def _numbers(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


# ---- the verifier ----------------------------------------------------------------------------------


def verify(
    events: pd.DataFrame,
    ledger: pd.DataFrame | None,
    scenario: Scenario,
    facts: RunFacts,
    trials: int = RANDOM_TRIALS,
) -> Analysis:
    """Judge one run. `events` has EVENT_COLUMNS, `ledger` LEDGER_COLUMNS (caslab.records)."""
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"client events lack the columns: {', '.join(missing)}")
    if ledger is None or ledger.empty:
        ledger = pd.DataFrame({c: pd.Series(dtype=object) for c in LEDGER_COLUMNS})

    # Integer codes for everything that is grouped on; a session unit is (service, user, session).
    ts = _numbers(events["ts"])
    svc_raw, svc_raw_names = _codes(events["service"])
    svc_names = [s for s in SERVICES if s in svc_raw_names] + sorted(set(svc_raw_names) - set(SERVICES))
    svc = _recode(svc_raw, svc_raw_names, svc_names)
    user, user_blank = _keys(events["user"])
    sess, sess_blank = _keys(events["session"])
    unit, _ = pd.factorize((svc * len(user_blank) + user) * len(sess_blank) + sess)
    n_units = int(unit.max()) + 1 if len(unit) else 0
    client, _ = pd.factorize(user * len(sess_blank) + sess)  # one client session, all its services
    srv_raw, srv_raw_names = _codes(events["server"])
    farm = list(scenario.farm.server_names)
    servers = farm + sorted(set(srv_raw_names) - {""} - set(farm))
    srv = _recode(srv_raw, srv_raw_names, servers)  # -1: nobody answered
    n_srv = len(servers)
    answered = srv >= 0
    out_raw, out_names = _codes(events["outcome"])
    outcome = {name: _recode(out_raw, out_names, [name]) == 0 for name in OUTCOMES}
    is_eas = svc == (svc_names.index("eas") if "eas" in svc_names else -2)

    unit_svc = np.zeros(n_units, dtype=np.int64)
    unit_svc[unit] = svc
    unit_client = np.zeros(n_units, dtype=np.int64)
    unit_client[unit] = client

    # Answered requests in (session, time) order: moves between CAS and each session's first answer.
    a_idx = np.flatnonzero(answered)
    order = a_idx[np.lexsort((ts[a_idx], unit[a_idx]))]
    su, ss, st = unit[order], srv[order], ts[order]
    same_prev = np.r_[False, su[1:] == su[:-1]] if len(su) else np.zeros(0, dtype=bool)
    move = np.zeros(len(ts), dtype=bool)
    move[order] = same_prev & (ss != np.r_[-1, ss[:-1]])
    first = np.zeros(len(ts), dtype=bool)
    first[order] = ~same_prev

    hard = outcome["foreign"]
    soft = (outcome["cold"] & ~(is_eas & first)) | (is_eas & move)
    error = outcome["error"] | outcome["transport"]

    pairs = np.unique(unit[answered].astype(np.int64) * max(n_srv, 1) + srv[answered])
    pair_unit, pair_srv = pairs // max(n_srv, 1), pairs % max(n_srv, 1)
    split_unit = np.bincount(pair_unit, minlength=n_units) > 1

    latency = _numbers(events["latency_ms"])
    services = _service_table(svc, svc_names, unit_svc, split_unit, hard, soft, error, outcome, latency)
    t0 = facts.started_ts if facts.started_ts is not None else (float(np.nanmin(ts)) if len(ts) else 0.0)
    requests_per_srv = np.bincount(srv[answered], minlength=n_srv)
    led_srv_raw, led_srv_names = _codes(_ledger_column(ledger, "server"))
    led_srv = _recode(led_srv_raw, led_srv_names, servers)
    server_table = _server_table(
        servers, requests_per_srv, np.bincount(pair_srv, minlength=n_srv), ledger, led_srv, facts
    )
    weights = np.bincount(unit[answered], minlength=n_units)
    balance = _balance(requests_per_srv[: len(farm)], weights[weights > 0], trials, scenario.seed)
    pop_requests, pop_shares = _population_tables(events["population"], srv, servers, answered)
    end = facts.ended_ts if facts.ended_ts is not None else t0
    timeline = _timeline(ts[answered], srv[answered], servers, t0, end)
    coded = _Coded(ts, unit, client, srv, hard, error, unit_svc, unit_client, svc_names, su, ss, st)
    fired = _fired_faults(facts, scenario)
    faults = _faults(fired, t0, servers, coded)
    stopped = np.zeros(len(ts), dtype=bool)  # answered by a CAS that a later `stop` killed
    for fault in fired:
        if fault.action == "stop" and fault.server in servers:
            stopped |= (srv == servers.index(fault.server)) & (ts <= fault.ts)
    reconciliation = _reconcile(events, ledger, srv, led_srv, outcome, stopped)

    n_requests = len(ts)
    n_errors = int(error.sum())
    totals = {
        "requests": n_requests,
        "answered": int(answered.sum()),
        "sessions": n_units,
        "split_sessions": int(split_unit.sum()),
        "hard_breaks": int(hard.sum()),
        "soft_breaks": int(soft.sum()),
        "errors": n_errors,
        "error_rate_pct": round(100 * n_errors / n_requests, 4) if n_requests else 0.0,
    }
    checks = _checks(scenario, services, totals, balance, faults)
    return Analysis(
        services=services,
        servers=server_table,
        balance=balance,
        population_requests=pop_requests,
        population_shares=pop_shares,
        timeline=timeline,
        faults=faults,
        reconciliation=reconciliation,
        totals=totals,
        checks=checks,
    )


def _service_table(svc, svc_names, unit_svc, split_unit, hard, soft, error, outcome, latency) -> pd.DataFrame:
    n = len(svc_names)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(svc[mask], minlength=n)

    sessions = np.bincount(unit_svc, minlength=n)
    split = np.bincount(unit_svc[split_unit], minlength=n)
    table = pd.DataFrame(
        {
            "requests": np.bincount(svc, minlength=n),
            "sessions": sessions,
            "split_sessions": split,
            "split_pct": np.round(100 * split / np.maximum(sessions, 1), 3),
            "hard_breaks": count(hard),
            "soft_breaks": count(soft),
            "errors": count(error),
            "transport": count(outcome["transport"]),
        },
        index=pd.Index(svc_names, name="service"),
    )
    timed = ~outcome["transport"]  # a transport failure's latency is the client's timeout, not the CAS's
    levels = [0.5, 0.95, 0.99]
    quantiles = pd.Series(latency[timed]).groupby(svc[timed]).quantile(levels).unstack()
    quantiles = quantiles.reindex(index=range(n), columns=levels).set_axis(table.index)
    quantiles.columns = ["p50_ms", "p95_ms", "p99_ms"]
    return table.join(quantiles.round(3))


def _server_table(servers, requests, sessions, ledger, led_srv, facts: RunFacts) -> pd.DataFrame:
    total = requests.sum()
    peak_from_ledger = _peak_concurrency(ledger, led_srv, len(servers))
    peaks = [
        facts.server_stats.get(name, {}).get("peak_inflight", peak_from_ledger[i])
        for i, name in enumerate(servers)
    ]
    return pd.DataFrame(
        {
            "requests": requests,
            "share": np.round(requests / total, 4) if total else np.zeros(len(servers)),
            "sessions": sessions,
            "peak_connections": np.asarray(peaks, dtype=np.int64),
            "ledger_rows": np.bincount(led_srv[led_srv >= 0], minlength=len(servers)),
            "balancer_count": [facts.balancer_counters.get(name) for name in servers],
        },
        index=pd.Index(servers, name="server"),
    )


def _peak_concurrency(ledger: pd.DataFrame, led_srv: np.ndarray, n_srv: int) -> np.ndarray:
    """Most requests in progress at once on each CAS, from arrival time + latency of its ledger rows."""
    start = _numbers(_ledger_column(ledger, "ts"))
    end = start + np.nan_to_num(_numbers(_ledger_column(ledger, "latency_ms"))) / 1000
    peaks = np.zeros(n_srv, dtype=np.int64)
    for s in range(n_srv):  # per CAS (a few), each with whole-array operations
        starts, ends = np.sort(start[led_srv == s]), np.sort(end[led_srv == s])
        if len(starts):
            # Open at the i-th arrival: arrivals so far minus requests that ended by then.
            peaks[s] = int(
                (np.arange(1, len(starts) + 1) - np.searchsorted(ends, starts, side="right")).max()
            )
    return peaks


def _balance(load: np.ndarray, weights: np.ndarray, trials: int, seed: int) -> dict[str, Any]:
    """Spread figures of the per-CAS load, and where its max/mean falls among random placements."""
    n = len(load)
    load = load.astype(float)
    if n == 0 or load.sum() == 0:
        return {"max_over_mean": math.nan, "cv": math.nan, "jain": math.nan, "random_placement_pct": math.nan,
                "random_max_over_mean_p50": math.nan, "random_max_over_mean_p95": math.nan,
                "exceeds_random": False}  # fmt: skip
    mean = load.mean()
    observed = load.max() / mean
    simulated = _random_max_over_mean(weights.astype(float), n, trials, seed)
    pct = float((simulated < observed).mean() * 100 + (simulated == observed).mean() * 50)
    return {
        "max_over_mean": round(float(observed), 4),
        "cv": round(float(load.std() / mean), 4),
        "jain": round(float(load.sum() ** 2 / (n * (load**2).sum())), 4),
        "random_placement_pct": round(pct, 1),
        "random_max_over_mean_p50": round(float(np.percentile(simulated, 50)), 4),
        "random_max_over_mean_p95": round(float(np.percentile(simulated, 95)), 4),
        "exceeds_random": pct > SKEW_PERCENTILE,
    }


def _random_max_over_mean(weights: np.ndarray, servers: int, trials: int, seed: int) -> np.ndarray:
    """max/mean of the per-server load when each session goes to a uniformly random server."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(trials, 2_000_000 // max(len(weights), 1)))
    out = []
    for start in range(0, trials, chunk):  # chunks of trials bound the memory, not a loop over events
        c = min(chunk, trials - start)
        placed = rng.integers(0, servers, size=(c, len(weights))) + (np.arange(c) * servers)[:, None]
        loads = np.bincount(placed.ravel(), weights=np.tile(weights, c), minlength=c * servers)
        loads = loads.reshape(c, servers)
        out.append(loads.max(axis=1) / loads.mean(axis=1))
    return np.concatenate(out)


def _population_tables(population: pd.Series, srv, servers, answered) -> tuple[pd.DataFrame, pd.DataFrame]:
    pop, pop_names = _codes(population)
    n_srv, n_pop = len(servers), len(pop_names)
    counts = np.bincount(pop[answered] * n_srv + srv[answered], minlength=n_pop * n_srv)
    requests = pd.DataFrame(
        counts.reshape(n_pop, n_srv),
        index=pd.Index(pop_names, name="population"),
        columns=pd.Index(servers, name="server"),
    )
    shares = requests.div(requests.sum(axis=1).replace(0, np.nan), axis=0).fillna(0).round(4)
    return requests, shares


def _timeline(ts: np.ndarray, srv: np.ndarray, servers: list[str], t0: float, end: float) -> pd.DataFrame:
    """Answered requests per CAS per time bin (about 80 bins from t0 to the run's end, at a round width)."""
    n_srv = len(servers)
    rel = np.maximum(ts - t0, 0)
    span = max(float(rel.max(initial=0)), end - t0) or 1.0
    width = next((w for w in (0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600) if span / w <= 80), 1800)
    bins = (rel // width).astype(np.int64)
    n_bins = int(span // width) + 1
    counts = np.bincount(bins * n_srv + srv, minlength=n_bins * n_srv).reshape(n_bins, n_srv)
    return pd.DataFrame(counts, index=pd.Index(np.arange(n_bins) * width, name="t_s"), columns=servers)


@dataclass(frozen=True)
class _Coded:
    """The events as integer-coded columns, and per session unit what the fault analysis needs."""

    ts: np.ndarray
    unit: np.ndarray  # session unit of each event
    client: np.ndarray  # client session (user and session id, any service) of each event
    srv: np.ndarray  # position in the server list, -1 when nobody answered
    hard: np.ndarray
    error: np.ndarray
    unit_svc: np.ndarray  # service code of each unit
    unit_client: np.ndarray  # client session of each unit
    svc_names: list[str]
    # Answered events sorted by (unit, time): their unit, server and time.
    sorted_unit: np.ndarray
    sorted_srv: np.ndarray
    sorted_ts: np.ndarray

    @property
    def n_units(self) -> int:
        return len(self.unit_svc)

    def units_with(self, mask: np.ndarray) -> np.ndarray:
        """Per unit: does any event selected by `mask` belong to it?"""
        out = np.zeros(self.n_units, dtype=bool)
        out[self.unit[mask]] = True
        return out


def _fired_faults(facts: RunFacts, scenario: Scenario) -> list[FaultFact]:
    """The faults as fired, in time order (from the scenario's schedule if the run did not record them)."""
    fired = list(facts.faults)
    if not fired and scenario.faults and facts.started_ts is not None:
        fired = [FaultFact(f.server, f.action, facts.started_ts + t) for t, f in scenario.fault_schedule()]
    return sorted(fired, key=lambda f: f.ts)


def _faults(fired: list[FaultFact], t0: float, servers: list[str], ev: _Coded) -> list[dict]:
    """One entry per outage: a CAS taken out, until it is back or the run ends."""
    out = []
    for i, fault in enumerate(fired):  # a handful of faults; each one is analysed with column operations
        if fault.action not in OUT_ACTIONS or fault.server not in servers:
            continue
        back = next(
            (g for g in fired[i + 1 :] if g.server == fault.server and g.action in BACK_ACTIONS), None
        )
        entry = _outage(ev, servers.index(fault.server), fault.ts, back.ts if back else math.inf)
        out.append(
            {
                "server": fault.server,
                "action": fault.action,
                "at_s": round(fault.ts - t0, 3),
                "back_action": back.action if back else None,
                "back_at_s": round(back.ts - t0, 3) if back else None,
                **entry,
            }
        )
    return out


def _outage(ev: _Coded, s: int, start: float, end: float) -> dict[str, Any]:
    """What happened to the sessions while server `s` was out (start..end) and after it returned."""
    # Each session's home: the CAS of its last answer before the fault.
    before = ev.sorted_ts < start
    bu, bs = ev.sorted_unit[before], ev.sorted_srv[before]
    last = np.r_[bu[1:] != bu[:-1], True] if len(bu) else np.zeros(0, dtype=bool)
    home = np.full(ev.n_units, -1)
    home[bu[last]] = bs[last]
    # A session with no answer of its own yet is where its client's last answer (any service) came from.
    seen = np.flatnonzero((ev.srv >= 0) & (ev.ts < start))
    by_client = seen[np.lexsort((ev.ts[seen], ev.client[seen]))]
    cu = ev.client[by_client]
    client_last = np.r_[cu[1:] != cu[:-1], True] if len(cu) else np.zeros(0, dtype=bool)
    client_home = np.full(int(ev.client.max(initial=-1)) + 1, -1)
    client_home[cu[client_last]] = ev.srv[by_client][client_last]
    homeless = home < 0
    home[homeless] = client_home[ev.unit_client[homeless]]
    on_server = home == s

    window = (ev.ts >= start) & (ev.ts < end)
    answered_elsewhere = window & (ev.srv >= 0) & (ev.srv != s)
    first_elsewhere = pd.Series(ev.ts[answered_elsewhere]).groupby(ev.unit[answered_elsewhere]).min()
    failover = first_elsewhere[on_server[first_elsewhere.index.to_numpy()]] - start
    entry: dict[str, Any] = {
        "sessions_on_server": int(on_server.sum()),
        "sessions_lost": int((on_server & ev.units_with(window & (ev.hard | ev.error))).sum()),
        "sessions_moved": len(failover),
        "failover_s_median": round(float(failover.median()), 3) if len(failover) else None,
        "failover_s_max": round(float(failover.max()), 3) if len(failover) else None,
        "collateral_sessions": int((~on_server & ev.units_with(window & ev.hard)).sum()),
        "errors_in_window": int((window & ev.error).sum()),
    }
    if math.isfinite(end):
        moved = np.zeros(ev.n_units, dtype=bool)
        moved[failover.index.to_numpy()] = True
        after = ev.ts >= end
        came_back = ev.units_with(after & (ev.srv == s))
        moved_back = moved & came_back
        stayed = moved & ev.units_with(after & (ev.srv >= 0)) & ~came_back
        back_by_svc = np.bincount(ev.unit_svc[moved_back], minlength=len(ev.svc_names))
        stay_by_svc = np.bincount(ev.unit_svc[stayed], minlength=len(ev.svc_names))
        entry["after_return"] = {
            "stayed": int(stayed.sum()),
            "moved_back": int(moved_back.sum()),
            "second_breaks": int((moved_back & ev.units_with(after & ev.hard)).sum()),
            "by_service": {
                name: {"stayed": int(stay_by_svc[k]), "moved_back": int(back_by_svc[k])}
                for k, name in enumerate(ev.svc_names)
                if stay_by_svc[k] or back_by_svc[k]
            },
        }
    return entry


def _reconcile(events, ledger, srv, led_srv, outcome, stopped) -> dict[str, int]:
    """Match every client event to the ledger row of its request id; count whatever does not match."""
    n_ev = len(events)
    ids, no_id = _keys(
        pd.concat([events["request_id"], _ledger_column(ledger, "request_id")], ignore_index=True)
    )
    ev_id, led_id = ids[:n_ev], ids[n_ev:]
    has_id, led_has = ~no_id[ev_id], ~no_id[led_id]
    in_ledger = np.bincount(led_id[led_has], minlength=len(no_id)) > 0
    in_events = np.bincount(ev_id[has_id], minlength=len(no_id)) > 0
    matched = has_id & in_ledger[ev_id]
    # The server of the first ledger row of each id, against the server the client says answered.
    ids_first, first_row = np.unique(led_id, return_index=True)
    ledger_server = np.full(len(no_id), -2, dtype=np.int64)
    ledger_server[ids_first] = led_srv[first_row]
    transport = outcome["transport"]
    differs = matched & ~transport & (ledger_server[ev_id] != srv)
    return {
        "events": n_ev,
        "matched": int(matched.sum()),
        "transport_failures": int(transport.sum()),
        "transport_seen_by_cas": int((transport & matched).sum()),
        "unmatched": int((has_id & ~matched & ~transport & (srv >= 0) & ~stopped).sum()),
        "lost_with_stopped_cas": int((has_id & ~matched & ~transport & (srv >= 0) & stopped).sum()),
        "answered_by_balancer": int((has_id & ~matched & ~transport & (srv < 0)).sum()),
        "without_request_id": int((~has_id).sum()),
        "event_duplicate_ids": int(has_id.sum() - np.count_nonzero(in_events)),
        "unknown_outcome": int(n_ev - sum(int(m.sum()) for m in outcome.values())),
        "server_differs": int(differs.sum()),
        "ledger_rows": len(led_id),
        "ledger_without_request_id": int((~led_has).sum()),
        "ledger_not_in_events": int((led_has & ~in_events[led_id]).sum()),
        "ledger_duplicate_ids": int(led_has.sum() - np.count_nonzero(in_ledger)),
    }


def _number(value: float) -> float:
    """Counts stay whole numbers in summaries; measures keep four decimals."""
    return int(value) if float(value).is_integer() else round(float(value), 4)


def _checks(
    scenario: Scenario, services: pd.DataFrame, totals: dict, balance: dict, faults: list
) -> list[Check]:
    t = scenario.thresholds

    def check(name: str, value: float, limit: float, op: str = "<=") -> Check:
        value = float(value)
        passed = (value >= limit if op == ">=" else value <= limit) and not math.isnan(value)
        return Check(name, _number(value), _number(limit), passed, op)

    def column(name: str, service: str) -> float:
        return float(services[name].get(service, 0))

    # A run in which nothing was answered proves nothing: it must never pass.
    checks = [check("answered_requests", totals["answered"], 1, ">=")]
    if isinstance(t.hard_breaks, dict):
        checks += [check(f"hard_breaks.{s}", column("hard_breaks", s), v) for s, v in t.hard_breaks.items()]
    elif t.hard_breaks is not None:
        checks.append(check("hard_breaks", totals["hard_breaks"], t.hard_breaks))
    if isinstance(t.split_sessions_pct, dict):
        checks += [
            check(f"split_sessions_pct.{s}", column("split_pct", s), v)
            for s, v in t.split_sessions_pct.items()
        ]
    elif t.split_sessions_pct is not None:
        affinity = services.loc[services.index.isin(AFFINITY_SERVICES)]
        pct = 100 * affinity["split_sessions"].sum() / max(affinity["sessions"].sum(), 1)
        checks.append(check("split_sessions_pct", pct, t.split_sessions_pct))
    if t.balance_max_over_mean is not None:
        checks.append(check("balance_max_over_mean", balance["max_over_mean"], t.balance_max_over_mean))
    if t.error_rate_pct is not None:
        checks.append(check("error_rate_pct", totals["error_rate_pct"], t.error_rate_pct))
    if t.fault_collateral_breaks is not None:
        collateral = sum(f["collateral_sessions"] for f in faults)
        checks.append(check("fault_collateral_breaks", collateral, t.fault_collateral_breaks))
    return checks
