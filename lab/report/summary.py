"""summary.json (DESIGN.md section 9): the run's figures and verdict as plain JSON for other tools.

Schema caslab.summary/1 only grows: fields are added, none removed or renamed (verdict_reason and
invalid_reasons came with the `invalid` verdict; with time (DESIGN.md section 13) came per service `cut`,
`cut_seen_by_cas`, `moves` and `breaks_by_cause` (counts per cause: expired, evicted, cas-failed,
no-persistence, other), `totals.cut`, and `eas_heartbeat`: {mean_s, min_s, max_s, alert, recent_mean_s,
pings}, or null when no ActiveSync device pinged). `expected` is the verdict the scenario is meant to
produce on the run's driver, and `expected_reason` why it differs from the known answer there ("" where
it does not; scenario.expect_by_driver). `timers_advice` is what the report's Timers section says the
cuts, heartbeats and moves mean and what fixes them (lab.report.timers), a list of sentences.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lab.report.timers import timers_section
from lab.scenario import Scenario

if TYPE_CHECKING:
    from lab.balancers.userconfig import Explanation
from lab.verifier import CAUSES, Analysis, RunFacts

SCHEMA = "caslab.summary/1"


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN to null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def balancer_methods(scenario: Scenario, facts: RunFacts) -> dict[str, str]:
    """Per service, the persistence the balancer ran with (the scenario's, if the run did not say)."""
    return facts.methods or {s: str(p) for s, p in scenario.balancer.methods().items()}


def _causes(table: pd.DataFrame, service: str) -> dict[str, int]:
    """One service's row of a service x cause table, as {cause: count} (all zero when it has none)."""
    if service not in table.index:
        return dict.fromkeys(CAUSES, 0)
    return {cause: int(table.loc[service, cause]) for cause in CAUSES}


def summary(
    analysis: Analysis, scenario: Scenario, facts: RunFacts, explanation: Explanation | None = None
) -> dict[str, Any]:
    """summary.json; `explanation`: the user's own balancer file as the lab read it, when the run had one."""
    timers = analysis.timers
    services = {
        name: {
            **{k: v for k, v in row.items() if not k.endswith("_ms")},
            "latency_ms": {"p50": row["p50_ms"], "p95": row["p95_ms"], "p99": row["p99_ms"]},
            "moves": _causes(timers.moves, name),
            "breaks_by_cause": _causes(timers.move_breaks, name),
        }
        for name, row in analysis.services.to_dict("index").items()
    }
    servers = analysis.servers.to_dict("index")
    populations = {
        name: {
            "requests": int(analysis.population_requests.loc[name].sum()),
            "shares": analysis.population_shares.loc[name].to_dict(),
        }
        for name in analysis.population_requests.index
    }
    return _plain(
        {
            "schema": SCHEMA,
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "scenario": scenario.to_dict(),
            "balancer": {
                "driver": facts.driver,
                "version": facts.driver_version,
                "preset": None if scenario.balancer.config else facts.preset or scenario.balancer.preset,
                "config": Path(scenario.balancer.config).name if scenario.balancer.config else None,
                "methods": balancer_methods(scenario, facts),
                "topology": scenario.balancer.topology,
                "tls": scenario.farm.tls,
            },
            "farm": {
                "servers": list(scenario.farm.server_names),
                "tls": scenario.farm.tls,
                "tls_max_version": scenario.farm.tls_max_version,
                "oab_skew": scenario.farm.oab_skew,
            },
            "verdict": analysis.verdict,
            "verdict_reason": analysis.verdict_reason,
            "invalid_reasons": analysis.invalid_reasons,
            "expected": scenario.expected,
            "expected_reason": scenario.expected_reason,
            "checks": [c.to_dict() for c in analysis.checks],
            "totals": analysis.totals,
            "services": services,
            "servers": servers,
            "balance": analysis.balance,
            "populations": populations,
            "reconciliation": analysis.reconciliation,
            "faults": analysis.faults,
            "eas_heartbeat": timers.eas_heartbeat,
            "timers_advice": timers_section(analysis, facts.driver, scenario, explanation).advice,
            "notes": list(facts.notes),
        }
    )
