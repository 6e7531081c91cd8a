"""report.html (DESIGN.md section 9): one self-contained page that says at a glance whether the run
passed, then shows why: tiles, checks, the plots, the tables, reconciliation and the balancer config.

This module decides what the page shows (figures formatted, tables as rows of text, the plots as SVG);
templates/report.html.j2 lays it out. The page fetches nothing: the styles and the plots are inline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from lab.report.plots import plots
from lab.report.summary import balancer_methods
from lab.report.timers import timers_section
from lab.scenario import Scenario, format_duration
from lab.verifier import AFFINITY_SERVICES, Analysis, RunFacts

TEMPLATES = Environment(
    loader=PackageLoader("lab.report", "templates"),
    autoescape=True,
    undefined=StrictUndefined,  # a name the template uses and the page does not give is an error
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def number(value: Any) -> str:
    """A figure as the page shows it: thousands separated, four significant digits, – when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float | np.floating):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    return str(value)


TEMPLATES.filters["number"] = number


@dataclass(frozen=True)
class Table:
    """A frame as text: its index is the first column, each row's first cell a header cell."""

    columns: list[str]  # the index's name first
    rows: list[tuple[str, list[str]]]  # (index, cells)


def table(frame: pd.DataFrame) -> Table:
    columns = [str(name).replace("_", " ") for name in [frame.index.name or "", *frame.columns]]
    rows = [
        (str(index), [number(value) for value in values])
        for index, values in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]
    return Table(columns, rows)


def what_broke(events: pd.DataFrame, rows: int = 20) -> pd.DataFrame:
    """Requests that did not go well, by service, client kind and what the client saw (most first): the
    checks say how many broke, this says which clients and how (logged off, channel-split, ...)."""
    bad = events[events["outcome"] != "ok"]
    counts = bad.groupby(["service", "client_kind", "outcome", "detail"]).size().rename("requests")
    return counts.sort_values(ascending=False, kind="stable").head(rows).reset_index().set_index("service")


def report_html(
    analysis: Analysis,
    scenario: Scenario,
    facts: RunFacts,
    configs: dict[str, str],
    broke: pd.DataFrame | None = None,
    own: dict[str, Any] | None = None,
) -> str:
    """The page; `configs` are the rendered balancer files by name, `broke` is `what_broke(events)`, `own`
    the account of the user's own config (lab.candidate.read_account), when the run had one."""
    servers = analysis.servers.copy()
    servers["share"] = servers["share"].map(lambda v: f"{v:.1%}")
    shares = (analysis.population_shares * 100).round(1).astype(str) + "%"
    shares.insert(0, "requests", analysis.population_requests.sum(axis=1))
    methods = pd.DataFrame({"persistence": balancer_methods(scenario, facts)}).rename_axis("service")
    timers = timers_section(analysis, facts.driver, scenario, own["explanation"] if own else None)
    page = TEMPLATES.get_template("report.html.j2")
    return page.render(
        verdict=analysis.verdict,
        verdict_reason=analysis.verdict_reason,
        scenario=scenario,
        balancer=f"{facts.driver} {facts.driver_version}".strip(),
        preset=f"none: your config {own['file']}" if own else facts.preset or scenario.balancer.preset,
        duration=format_duration(scenario.duration_s),
        tiles=_tiles(analysis),
        notes=facts.notes,
        checks=analysis.checks,
        plots=plots(analysis, scenario.ramp_s),
        servers=table(servers),
        balance=analysis.balance,
        shares=table(shares),
        faults=_fault_table(analysis.faults),
        services=table(analysis.services),
        broke=None if broke is None else table(broke),
        reconciliation=analysis.reconciliation,
        reconciliation_table=table(pd.DataFrame({"count": analysis.reconciliation}).rename_axis("")),
        methods=table(methods),
        configs=configs,
        timers=timers,
        cuts=None if timers.cuts is None else table(timers.cuts),
        moves=None if timers.moves is None else table(timers.moves),
        own=_own(own, analysis.services, {k for p in scenario.populations for k in p.clients}, facts.notes)
        if own
        else None,
    )


def _tiles(analysis: Analysis) -> list[tuple[str, str, bool]]:
    """The figures at the top of the page: (what, value, whether it is bad news)."""
    t, balance, services = analysis.totals, analysis.balance, analysis.services
    # OAB and Autodiscover need no affinity: their split sessions are harmless, so not flagged here.
    split = int(services.loc[services.index.isin(AFFINITY_SERVICES), "split_sessions"].sum())
    return [
        ("requests", number(t["requests"]), False),
        ("sessions", number(t["sessions"]), False),
        ("split sessions needing affinity", number(split), split > 0),
        ("hard breaks", number(t["hard_breaks"]), t["hard_breaks"] > 0),
        ("soft breaks", number(t["soft_breaks"]), t["soft_breaks"] > 0),
        ("cuts", number(t["cut"]), t["cut"] > 0),
        ("error rate", f"{t['error_rate_pct']:.2f}%", False),
        ("balance max/mean", number(balance["max_over_mean"]), bool(balance["exceeds_random"])),
        ("Jain's index", number(balance["jain"]), False),
    ]


def _fault_table(faults: list[dict[str, Any]]) -> Table | None:
    if not faults:
        return None
    rows = []
    for f in faults:
        after = f.get("after_return")
        moved = "–"
        if after:
            per_service = ", ".join(
                f"{s}: {v['stayed']} stayed / {v['moved_back']} back" for s, v in after["by_service"].items()
            )
            moved = f"{after['stayed']} stayed, {after['moved_back']} moved back"
            moved += f" ({after['second_breaks']} broke again)" + (f"; {per_service}" if per_service else "")
        back = f", {f['back_action']} at {f['back_at_s']:g}s" if f["back_at_s"] is not None else ""
        rows.append(
            {
                "fault": f"{f['server']} {f['action']} at {f['at_s']:g}s{back}",
                "sessions on it": f["sessions_on_server"],
                "lost": f["sessions_lost"],
                "moved": f["sessions_moved"],
                "failover median s": f["failover_s_median"],
                "failover max s": f["failover_s_max"],
                "collateral": f["collateral_sessions"],
                "after return": moved,
            }
        )
    return table(pd.DataFrame(rows).set_index("fault"))


def _own(own: dict[str, Any], measured: pd.DataFrame, kinds: set[str], shown: list[str]) -> dict[str, Any]:
    """What the page shows of the user's own config: the account of lab.candidate, the explanation beside
    what was measured (predictions for the client kinds the scenario has), and its notes but those the
    page `shown` already (a run keeps the candidate's notes among its own)."""
    from lab.balancers.userconfig import Rewrite
    from lab.candidate import explain_table

    explanation = own["explanation"]
    pairs = dict.fromkeys(f"{m['server']} -> {m['cas']}" for m in own["servers"])
    return {
        **own,
        "notes": [n for n in own["notes"] if n not in shown],  # the run's notes, at the top, hold them
        "rewrites": [str(Rewrite(**r)) for r in own["rewrites"]],
        "servers": ", ".join(pairs),
        "table": _own_table(explanation, measured, kinds),
        "unread": [f"{r.service}: {u}" for r in explanation.readings for u in r.unread],
        "explained": explain_table(explanation),
    }


def _own_table(explanation: Any, measured: pd.DataFrame, kinds: set[str]) -> Table:
    """Per service: what the lab read from the user's config and predicted, beside what the run measured."""
    rows = []
    for r in explanation.readings:
        m = measured.loc[r.service] if r.service in measured.index else None
        predicted = "; ".join(f"{p.client_kind}: {p.effect}" for p in r.predictions if p.client_kind in kinds)
        rows.append(
            {
                "service": r.service,
                "route": r.pool or "(none)",
                "persistence read": r.method,
                "timeouts": ", ".join(map(str, r.timeouts)),
                "predicted": predicted,
                "requests": m["requests"] if m is not None else 0,
                "split %": m["split_pct"] if m is not None else None,
                "hard": m["hard_breaks"] if m is not None else 0,
                "soft": m["soft_breaks"] if m is not None else 0,
                "errors": m["errors"] if m is not None else 0,
            }
        )
    return table(pd.DataFrame(rows).set_index("service"))
