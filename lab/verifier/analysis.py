"""The verifier's result: tables for the report, plain dicts for summary.json, and the verdict.

The verdict (DESIGN.md section 9) is `invalid` when the lab cannot vouch for the run (any invalid
reason: the run's own, such as a saturated load generator, or reconciliation's: client requests
without their ledger rows, ledger rows of another run), whatever the checks say; else `fail` when a
check did not hold, else `pass`. Each comes with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lab.verifier.checks import Check


@dataclass
class Timers:
    """What time did to the run (DESIGN.md section 13; lab/verifier/timers.py and moves.py)."""

    cut_timeline: pd.DataFrame = field(default_factory=pd.DataFrame)  # time bin x service: cuts seen
    heartbeats: pd.DataFrame = field(default_factory=pd.DataFrame)  # ts, heartbeat_s of each EAS Ping
    eas_heartbeat: dict[str, Any] | None = None  # mean_s, min_s, max_s, alert, recent_mean_s, pings
    moves: pd.DataFrame = field(default_factory=pd.DataFrame)  # service x cause: moves
    move_breaks: pd.DataFrame = field(default_factory=pd.DataFrame)  # service x cause: moves that broke


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
    timers: Timers = field(default_factory=Timers)
    invalid_reasons: list[str] = field(default_factory=list)  # why the lab cannot vouch for the run

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def verdict(self) -> str:
        """pass, fail or invalid (lab.verdict.VERDICTS)."""
        if self.invalid_reasons:
            return "invalid"
        return "fail" if self.failed_checks else "pass"

    @property
    def verdict_reason(self) -> str:
        """Why the verdict is what it is, in one sentence."""
        if self.invalid_reasons:
            return "; ".join(self.invalid_reasons)
        if failed := self.failed_checks:
            return "failed: " + "; ".join(c.rule_broken for c in failed)
        return f"all {len(self.checks)} checks held"
