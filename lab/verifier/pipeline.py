"""`verify`: one run's client events, CAS ledgers, scenario and facts in; figures, checks and a verdict out.

Each step is a module of this package; this file only says in which order they run and what each
one gets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lab.verifier.analysis import Analysis, Timers
from lab.verifier.balance import RANDOM_TRIALS, balance_figures
from lab.verifier.breaks import Breaks, find_breaks, service_table
from lab.verifier.checks import threshold_checks
from lab.verifier.coding import (
    CodedEvents,
    code_events,
    empty_ledger,
    ledger_column,
    numbers,
    require_event_columns,
    server_codes,
)
from lab.verifier.facts import RunFacts
from lab.verifier.faults import answered_before_a_stop, fired_faults, outages
from lab.verifier.held import held_in_lab, held_reason
from lab.verifier.limits import lag_reason, limits_reason
from lab.verifier.load import population_tables, server_table, timeline
from lab.verifier.moves import Outage, Stickiness, move_causes
from lab.verifier.reconciliation import invalid_reasons, reconcile, rows_of_other_runs, unjudged_splits_reason
from lab.verifier.timers import (
    cut_timeline,
    cuts_seen_by_cas,
    heartbeat_figures,
    heartbeats,
    late_keepalive_reason,
)

if TYPE_CHECKING:
    from lab.scenario import Scenario


def verify(
    events: pd.DataFrame,
    ledger: pd.DataFrame | None,
    scenario: Scenario,
    facts: RunFacts,
    trials: int = RANDOM_TRIALS,
) -> Analysis:
    """Judge one run. `events` has EVENT_COLUMNS, `ledger` LEDGER_COLUMNS (caslab.records); `trials`
    is how many random placements the balance is compared with."""
    require_event_columns(events)
    if ledger is None or ledger.empty:
        ledger = empty_ledger()
    other_runs = rows_of_other_runs(ledger, facts.run_id)
    if other_runs.any():  # another run's rows say nothing about this run's clients: counted, then left out
        ledger = ledger[~other_runs]
    farm = list(scenario.farm.server_names)
    coded = code_events(events, farm)
    ledger_server = server_codes(ledger_column(ledger, "server"), coded.server_names)
    breaks = find_breaks(coded)

    run_start = facts.started_ts
    if run_start is None:  # a run that did not record its start began with its first event
        run_start = float(np.nanmin(coded.ts)) if len(coded.ts) else 0.0
    run_end = facts.ended_ts if facts.ended_ts is not None else run_start
    fired = fired_faults(facts, scenario)
    faults = outages(fired, run_start, coded, breaks)
    stopped = answered_before_a_stop(coded, fired)

    load_per_cas = coded.per_server()[: len(farm)]  # the farm's CAS come first among the servers
    answers_per_session = np.bincount(coded.session[coded.answered], minlength=coded.n_sessions)
    session_weights = answers_per_session[answers_per_session > 0]
    balance = balance_figures(load_per_cas, session_weights, trials, scenario.seed)
    services = service_table(coded, breaks, numbers(events["latency_ms"]))
    load_end = run_start + scenario.ramp_s + scenario.duration_s if facts.started_ts is not None else run_end
    services.insert(
        services.columns.get_loc("cut") + 1,
        "cut_seen_by_cas",
        cuts_seen_by_cas(ledger, coded.service_names, load_end),
    )
    totals = _totals(coded, breaks)
    ping_heartbeats = heartbeats(events, coded)
    eas_heartbeat = heartbeat_figures(ping_heartbeats)
    moves, move_breaks = move_causes(
        coded,
        events,
        breaks,
        _stickiness(scenario, facts),
        _table_size(scenario, facts),
        [
            Outage(coded.server_names.index(f["server"]), run_start + f["at_s"], _back(f, run_start))
            for f in faults
        ],
    )
    population_requests, population_shares = population_tables(events["population"], coded)
    reconciliation = reconcile(
        events["request_id"], ledger, coded, ledger_server, stopped, foreign_run_rows=int(other_runs.sum()),
        load_end=load_end if facts.started_ts is not None else None,
    )  # fmt: skip
    checks = threshold_checks(scenario.thresholds, services, totals, balance, faults, eas_heartbeat)
    failed = [check.name for check in checks if not check.passed]
    return Analysis(
        services=services,
        servers=server_table(coded, breaks, ledger, ledger_server, facts),
        balance=balance,
        population_requests=population_requests,
        population_shares=population_shares,
        timeline=timeline(coded, run_start, run_end),
        faults=faults,
        reconciliation=reconciliation,
        totals=totals,
        checks=checks,
        timers=Timers(
            cut_timeline=cut_timeline(coded, run_start, run_end),
            heartbeats=ping_heartbeats,
            eas_heartbeat=eas_heartbeat,
            moves=moves,
            move_breaks=move_breaks,
        ),
        invalid_reasons=[
            *facts.invalid_reasons,
            *invalid_reasons(reconciliation),
            *unjudged_splits_reason(reconciliation, failed),
            *held_reason(held_in_lab(events, ledger, coded, breaks.hard), events, coded, scenario.time_scale),
            *limits_reason(facts.balancer_limits, totals, reconciliation["transport_failures"], failed),
            *lag_reason(facts.cas_lags, totals, reconciliation["transport_failures"]),
            *late_keepalive_reason(events, coded, ledger),
        ],
    )


def _stickiness(scenario: Scenario, facts: RunFacts) -> dict[str, Stickiness]:
    """Per service, the persistence the balancer ran: the scenario's methods, with the idle timeouts
    the run recorded (else the scenario's, time-scaled)."""
    return {
        service: Stickiness(
            p.method, p.name, facts.persistence_timeouts_s.get(service, p.timeout_s / scenario.time_scale)
        )
        for service, p in scenario.balancer.methods().items()
    }


def _table_size(scenario: Scenario, facts: RunFacts) -> int | None:
    """How many entries a persistence table held: as the run recorded it, else as the scenario set it."""
    if facts.persistence_table_size is not None:
        return facts.persistence_table_size
    return scenario.balancer.persistence_table_size


def _back(outage: dict[str, Any], run_start: float) -> float:
    """When an outage ended (epoch seconds): its CAS's return, or never."""
    return run_start + outage["back_at_s"] if outage["back_at_s"] is not None else np.inf


def _totals(coded: CodedEvents, breaks: Breaks) -> dict[str, Any]:
    n_requests = len(coded.ts)
    n_errors = int(breaks.error.sum())
    return {
        "requests": n_requests,
        "answered": int(coded.answered.sum()),
        "sessions": coded.n_sessions,
        "split_sessions": int(breaks.split.sum()),
        "hard_breaks": int(breaks.hard.sum()),
        "soft_breaks": int(breaks.soft.sum()),
        "errors": n_errors,
        "error_rate_pct": round(100 * n_errors / n_requests, 4) if n_requests else 0.0,
        "cut": int(coded.outcome["cut"].sum()),
    }
