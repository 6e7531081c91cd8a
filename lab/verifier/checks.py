"""The scenario's thresholds as checks: one named value against its limit each (DESIGN.md section 8)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from caslab.vocab import SERVICES

if TYPE_CHECKING:
    from lab.scenario import Thresholds

# Services whose sessions need affinity (DESIGN.md section 3): a scalar split_sessions_pct limit covers these.
AFFINITY_SERVICES = tuple(s for s in SERVICES if s not in ("oab", "autodiscover"))


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    passed: bool
    op: str = "<="  # the value must be <= limit (">=" for minimums)

    @property
    def rule_broken(self) -> str:
        """What a failed check says, e.g. `hard_breaks = 3, must be <= 0`."""
        return f"{self.name} = {self.value:g}, must be {self.op} {self.limit:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "op": self.op,
            "pass": self.passed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        """A check as summary.json holds it (`to_dict`)."""
        value = math.nan if data["value"] is None else data["value"]  # summary.json writes NaN as null
        return cls(data["name"], value, data["limit"], bool(data["pass"]), data.get("op", "<="))


def _number(value: float) -> float:
    """Counts stay whole numbers in summaries; measures keep four decimals."""
    return int(value) if float(value).is_integer() else round(float(value), 4)


def check(name: str, value: float, limit: float, op: str = "<=") -> Check:
    """`value` against `limit`; a value that is not a number never passes."""
    value = float(value)
    passed = (value >= limit if op == ">=" else value <= limit) and not math.isnan(value)
    return Check(name, _number(value), _number(limit), passed, op)


def threshold_checks(
    thresholds: Thresholds,
    services: pd.DataFrame,
    totals: dict,
    balance: dict,
    faults: list,
    eas_heartbeat: dict | None = None,
) -> list[Check]:
    """A check per threshold the scenario sets, in a fixed order, after `answered_requests`."""
    t = thresholds
    cut_limit, alert_allowed = t.cut, t.eas_heartbeat_alert  # the timer thresholds, DESIGN.md section 13

    def per_service(column: str, service: str) -> float:
        return float(services[column].get(service, 0))

    # A run in which nothing was answered proves nothing: it must never pass.
    checks = [check("answered_requests", totals["answered"], 1, ">=")]
    if isinstance(t.hard_breaks, dict):
        checks += [
            check(f"hard_breaks.{s}", per_service("hard_breaks", s), v) for s, v in t.hard_breaks.items()
        ]
    elif t.hard_breaks is not None:
        checks.append(check("hard_breaks", totals["hard_breaks"], t.hard_breaks))
    if isinstance(t.split_sessions_pct, dict):
        checks += [
            check(f"split_sessions_pct.{s}", per_service("split_pct", s), v)
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
    if isinstance(cut_limit, dict):
        checks += [check(f"cut.{s}", per_service("cut", s), v) for s, v in cut_limit.items()]
    elif cut_limit is not None:
        checks.append(check("cut", totals["cut"], cut_limit))
    if alert_allowed is not None:
        # 1 when Exchange's event-1040 condition holds at the end of the run, 0 when not; no Ping at all
        # leaves nothing to judge (NaN, which never passes).
        alert = math.nan if eas_heartbeat is None else float(eas_heartbeat["alert"])
        checks.append(check("eas_heartbeat_alert", alert, 1 if alert_allowed else 0))
    return checks
