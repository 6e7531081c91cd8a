"""`verify`: one run's client events, CAS ledgers, scenario and facts in; figures, checks and a verdict out.

Each step is a module of this package; this file only says in which order they run and what each
one gets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lab.verifier.analysis import Analysis
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
from lab.verifier.load import population_tables, server_table, timeline
from lab.verifier.reconciliation import invalid_reasons, reconcile, rows_of_other_runs

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
    totals = _totals(coded, breaks)
    population_requests, population_shares = population_tables(events["population"], coded)
    reconciliation = reconcile(
        events["request_id"], ledger, coded, ledger_server, stopped, foreign_run_rows=int(other_runs.sum())
    )
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
        checks=threshold_checks(scenario.thresholds, services, totals, balance, faults),
        invalid_reasons=[*facts.invalid_reasons, *invalid_reasons(reconciliation)],
    )


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
    }
