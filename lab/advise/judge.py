"""What one run of a candidate says about its group: the figures of the group's own services, whether
a figure shows it cannot pass, and a score to rank the ones that can.

A run's figures come from its summary.json (lab.runset). Figures of the group's services (hard breaks,
split sessions, cuts, errors) are the candidate's own doing. The run-wide checks (balance, answered
requests) depend on every group; they count against a candidate only when the group's baseline, run in
the same round, passed them: every other group is at its baseline in both runs. The group's own
balance (its services' requests per CAS, from the run's events.parquet) ranks the candidates, and drops
one that piles the group on one CAS where the baseline spread it: source IP behind a NAT-ed tenant
fails the balance check as soon as the group carries more of the load, even when this run held.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.scenario import Thresholds
from lab.verifier.checks import AFFINITY_SERVICES

CLEARLY_WORSE = 1.25  # a group's own max/mean this many times the baseline's is not chance


@dataclass(frozen=True)
class Outcome:
    """One run of one candidate: its status (a verdict, or why there is none) and summary.json."""

    status: str  # pass, fail, invalid, could not run, not run
    reason: str = ""
    run_dir: Path | None = None
    summary: dict[str, Any] | None = None
    seconds: float = 0.0  # the load phase it ran

    @property
    def judged(self) -> bool:
        return self.summary is not None and self.status in ("pass", "fail")


def _limit(value: Any, service: str) -> float | None:
    if isinstance(value, dict):
        return value.get(service)
    return value


def blocking(
    outcome: Outcome, group: tuple[str, ...], thresholds: Thresholds, baseline: Outcome | None
) -> str | None:
    """The figure of this run that shows the candidate cannot pass, as a user reads it; None if none."""
    services = (outcome.summary or {}).get("services", {})
    mine = {s: services.get(s, {}) for s in group}
    t = thresholds
    hard = _group_limit(t.hard_breaks, group)
    count = sum(f.get("hard_breaks", 0) for f in mine.values())
    if hard is not None and count > hard:
        detail = ", ".join(f"{s} {f.get('hard_breaks', 0)}" for s, f in mine.items() if f.get("hard_breaks"))
        return f"hard breaks {count} ({detail}; limit {hard:g})"
    for service, figures in mine.items():
        limit = _limit(t.split_sessions_pct, service)
        if limit is not None and service in AFFINITY_SERVICES and figures.get("split_pct", 0) > limit:
            return f"{service} split sessions {figures['split_pct']:.0f} % (limit {limit:g} %)"
        cut = _limit(t.cut, service)
        if cut is not None and figures.get("cut", 0) > cut:
            return f"{service} cuts {figures['cut']} (limit {cut:g})"
    requests = sum(f.get("requests", 0) for f in mine.values())
    errors = sum(f.get("errors", 0) for f in mine.values())  # transport failures and cuts included
    if t.error_rate_pct is not None and requests and 100 * errors / requests > t.error_rate_pct:
        return (
            f"error rate of {'+'.join(group)} {100 * errors / requests:.1f} % (limit {t.error_rate_pct:g} %)"
        )
    passed_by_baseline = {c["name"] for c in (baseline.summary or {}).get("checks", []) if c["pass"]} if (
        baseline is not None and baseline.judged
    ) else set()  # fmt: skip
    for check in (outcome.summary or {}).get("checks", []):
        if not check["pass"] and check["name"] in passed_by_baseline and "." not in check["name"]:
            return _run_wide(check, outcome.summary or {})
    # The group's own load: a method that piles its services on one CAS where the baseline spread them
    # fails the balance check as soon as those services carry more of the load than they do here. Only
    # clearly worse than the baseline counts: a group of a few dozen sessions varies by chance.
    limit = t.balance_max_over_mean
    mine_balance = group_balance(outcome, group)
    base_balance = group_balance(baseline, group) if baseline is not None and baseline.judged else None
    clearly_worse = mine_balance and base_balance and mine_balance >= CLEARLY_WORSE * base_balance
    if limit is not None and clearly_worse and mine_balance > limit >= base_balance:
        return (
            f"balance of {'+'.join(group)} alone {mine_balance:.2f}x mean (limit {limit:g}; "
            f"{base_balance:.2f}x with the baseline){group_skew(outcome, group)}"
        )
    return None


def _group_limit(value: Any, group: tuple[str, ...]) -> float | None:
    if isinstance(value, dict):
        limits = [value[s] for s in group if s in value]
        return sum(limits) if limits else None
    return value


def _run_wide(check: dict[str, Any], summary: dict[str, Any]) -> str:
    if check["name"] == "balance_max_over_mean":
        return f"balance {check['value']:.2f}x mean (limit {check['limit']:g}){skew(summary)}"
    return f"{check['name']} {check['value']:g} (must be {check.get('op', '<=')} {check['limit']:g})"


def skew(summary: dict[str, Any]) -> str:
    """The population that leaned most on one CAS, e.g. " (citrix, 1 source address: 91 % on CAS03)"."""
    worst = None
    sizes = {p["name"]: p for p in summary.get("scenario", {}).get("populations", [])}
    for name, figures in summary.get("populations", {}).items():
        shares = figures.get("shares", {})
        if not shares:
            continue
        cas, share = max(shares.items(), key=lambda kv: kv[1])
        if worst is None or share > worst[2]:
            worst = (name, cas, share)
    if worst is None:
        return ""
    name, cas, share = worst
    addresses = sizes.get(name, {}).get("source_ips")
    where = f", {addresses} source address{'es' if addresses != 1 else ''}" if addresses else ""
    return f" ({name}{where}: {share:.0%} of its requests on {cas})"


def group_balance(outcome: Outcome, group: tuple[str, ...]) -> float | None:
    """Max/mean over the farm of the requests of the group's services alone (from the run's
    events.parquet): what the group's method did to the balance, apart from the other groups'. None when
    the run kept no events."""
    return _group_load(outcome, group)[0]


def group_skew(outcome: Outcome, group: tuple[str, ...]) -> str:
    """The population whose requests to the group leaned most on one CAS, as skew() says it."""
    return _group_load(outcome, group)[1]


def _group_load(outcome: Outcome, group: tuple[str, ...]) -> tuple[float | None, str]:
    if outcome.run_dir is None or not (outcome.run_dir / "events.parquet").is_file():
        return None, ""
    return _load_of(outcome.run_dir, group)


@functools.lru_cache(maxsize=256)
def _load_of(run_dir: Path, group: tuple[str, ...]) -> tuple[float | None, str]:
    import pandas as pd

    events = pd.read_parquet(run_dir / "events.parquet", columns=["population", "service", "server"])
    summary = json.loads((run_dir / "summary.json").read_text())
    servers = summary.get("farm", {}).get("servers", [])
    mine = events[events["service"].isin(group) & events["server"].isin(servers)]
    load = [int((mine["server"] == name).sum()) for name in servers]
    if not load or not sum(load):
        return None, ""
    shares = {
        population: rows["server"].value_counts(normalize=True).to_dict()
        for population, rows in mine.groupby("population")
    }
    skewed = {**summary, "populations": {p: {"shares": s} for p, s in shares.items()}}
    return round(max(load) / (sum(load) / len(load)), 4), skew(skewed)


def score(outcome: Outcome, group: tuple[str, ...]) -> tuple[float, ...]:
    """Lower is better: failed checks, the group's hard breaks, the group's own balance (to 0.05; the
    run's when the run kept no events), the group's split sessions and soft breaks per request."""
    summary = outcome.summary or {}
    services = summary.get("services", {})
    mine = [services.get(s, {}) for s in group]
    failed = sum(1 for c in summary.get("checks", []) if not c["pass"])
    requests = max(1, sum(f.get("requests", 0) for f in mine))
    sessions = max(1, sum(f.get("sessions", 0) for f in mine))
    balance = group_balance(outcome, group) or summary.get("balance", {}).get("max_over_mean") or 99.0
    return (
        failed,
        sum(f.get("hard_breaks", 0) for f in mine),
        round(balance * 20) / 20,
        round(sum(f.get("split_sessions", 0) for f in mine) / sessions, 2),
        round(sum(f.get("soft_breaks", 0) for f in mine) / requests, 2),
    )


def figures_line(outcome: Outcome, group: tuple[str, ...]) -> str:
    """The figures a page shows for a run of a candidate of `group`."""
    if not outcome.judged:
        return f"{outcome.status}: {outcome.reason}"
    summary = outcome.summary or {}
    services = summary.get("services", {})
    mine = [services.get(s, {}) for s in group]
    balance = summary.get("balance", {}).get("max_over_mean")
    mine_balance = group_balance(outcome, group)
    own = "" if mine_balance is None else f" ({'+'.join(group)} alone {mine_balance:.2f}x)"
    return (
        f"{outcome.status}; {'+'.join(group)}: hard {sum(f.get('hard_breaks', 0) for f in mine)}, "
        f"soft {sum(f.get('soft_breaks', 0) for f in mine)}, "
        f"split {sum(f.get('split_sessions', 0) for f in mine)}/{sum(f.get('sessions', 0) for f in mine)}; "
        f"balance {'–' if balance is None else f'{balance:.2f}'}x mean{own}"
    )
