"""The verifier's result: tables for the report, plain dicts for summary.json, checks for the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from lab.verifier.checks import Check


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
