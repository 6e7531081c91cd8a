"""What a run writes (DESIGN.md section 9): summary.json, junit.xml, report.html and the raw data.

`write_run` stores a finished run's data (events.parquet, ledger.parquet and facts.json: the scenario's
TOML, the command-line overrides and the run facts) and renders the report from it; `render_report`
does the rendering alone from those files, so `caslab report RUN_DIR` re-renders any run, also after
caslab itself changed. report.html is one self-contained file: the plots are PNGs inlined as base64,
the styles are inline, nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from caslab.records import LEDGER_COLUMNS
from lab.scenario import Scenario, format_duration, parse_scenario
from lab.verifier import AFFINITY_SERVICES, Analysis, RunFacts, verify

if TYPE_CHECKING:  # matplotlib is imported only when plotting: it is slow to import
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SCHEMA = "caslab.summary/1"
RUN_FACTS = "facts.json"  # run.json belongs to `caslab run`; this file is what re-rendering needs
NOT_CONFIG = (".log", ".pid", ".sock", ".stat")
CONFIG_SHOWN_BYTES = 200_000  # a rendered balancer config longer than this is cut in the report


# ---- writing and re-rendering ----------------------------------------------------------------------


def write_run(
    run_dir: Path, events: pd.DataFrame, ledger: pd.DataFrame, scenario: Scenario, facts: RunFacts
) -> Analysis:
    """Store the run's data in run_dir and render summary.json, junit.xml and report.html."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if ledger.empty and not len(ledger.columns):
        ledger = pd.DataFrame({c: pd.Series(dtype=object) for c in LEDGER_COLUMNS})
    events.to_parquet(run_dir / "events.parquet", index=False)
    ledger.to_parquet(run_dir / "ledger.parquet", index=False)
    run = {
        "scenario_name": scenario.name,
        "scenario_origin": scenario.origin,
        "scenario_toml": scenario.source_text,
        "overrides": dict(scenario.overrides),
        "facts": facts.to_dict(),
    }
    (run_dir / RUN_FACTS).write_text(json.dumps(run, indent=2))
    return _render(run_dir, events, ledger, scenario, facts)


def render_report(run_dir: Path) -> Analysis:
    """Re-render summary.json, junit.xml and report.html of a run from its stored data."""
    run = json.loads((run_dir / RUN_FACTS).read_text())
    scenario = parse_scenario(run["scenario_toml"], run["scenario_origin"], run["scenario_name"])
    scenario = scenario.with_overrides(**run.get("overrides", {}))
    events = pd.read_parquet(run_dir / "events.parquet")
    ledger = pd.read_parquet(run_dir / "ledger.parquet")
    return _render(run_dir, events, ledger, scenario, RunFacts.from_dict(run["facts"]))


def _render(
    run_dir: Path, events: pd.DataFrame, ledger: pd.DataFrame, scenario: Scenario, facts: RunFacts
) -> Analysis:
    analysis = verify(events, ledger, scenario, facts)
    data = summary(analysis, scenario, facts)
    (run_dir / "summary.json").write_text(json.dumps(data, indent=2, allow_nan=False))
    (run_dir / "junit.xml").write_text(junit_xml(analysis, scenario))
    configs = _balancer_files(run_dir / "balancer")
    report = report_html(analysis, scenario, facts, configs, what_broke(events))
    (run_dir / "report.html").write_text(report, encoding="utf-8")
    return analysis


def what_broke(events: pd.DataFrame, rows: int = 20) -> pd.DataFrame:
    """Requests that did not go well, by service, client kind and what the client saw (most first): the
    checks say how many broke, this says which clients and how (logged off, channel-split, ...)."""
    bad = events[events["outcome"] != "ok"]
    counts = bad.groupby(["service", "client_kind", "outcome", "detail"]).size().rename("requests")
    return counts.sort_values(ascending=False, kind="stable").head(rows).reset_index().set_index("service")


def _balancer_files(folder: Path) -> dict[str, str]:
    """The rendered config files in the run's balancer/ folder (its logs and pid files are not config)."""
    if not folder.is_dir():
        return {}
    out = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix not in NOT_CONFIG):
        text = path.read_bytes()[:CONFIG_SHOWN_BYTES].decode("utf-8", errors="replace")
        out[path.name] = text + ("\n... (cut)" if path.stat().st_size > CONFIG_SHOWN_BYTES else "")
    return out


# ---- summary.json ----------------------------------------------------------------------------------


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


def _methods(scenario: Scenario, facts: RunFacts) -> dict[str, str]:
    return facts.methods or {s: str(p) for s, p in scenario.balancer.methods().items()}


def summary(analysis: Analysis, scenario: Scenario, facts: RunFacts) -> dict[str, Any]:
    services = {
        name: {
            **{k: v for k, v in row.items() if not k.endswith("_ms")},
            "latency_ms": {"p50": row["p50_ms"], "p95": row["p95_ms"], "p99": row["p99_ms"]},
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
                "preset": facts.preset or scenario.balancer.preset,
                "methods": _methods(scenario, facts),
                "topology": scenario.balancer.topology,
                "tls": scenario.farm.tls,
            },
            "farm": {
                "servers": list(scenario.farm.server_names),
                "tls": scenario.farm.tls,
                "oab_skew": scenario.farm.oab_skew,
            },
            "verdict": analysis.verdict,
            "expected": scenario.expect,
            "checks": [c.to_dict() for c in analysis.checks],
            "totals": analysis.totals,
            "services": services,
            "servers": servers,
            "balance": analysis.balance,
            "populations": populations,
            "reconciliation": analysis.reconciliation,
            "faults": analysis.faults,
            "notes": list(facts.notes),
        }
    )


# ---- junit.xml -------------------------------------------------------------------------------------


def junit_xml(analysis: Analysis, scenario: Scenario) -> str:
    """One test case per check; a failed check is a <failure> saying value, limit and the rule."""
    failures = sum(not c.passed for c in analysis.checks)
    suites = ET.Element("testsuites", name="caslab", tests=str(len(analysis.checks)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"caslab.{scenario.name}",
        tests=str(len(analysis.checks)),
        failures=str(failures),
        errors="0",
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    for check in analysis.checks:
        case = ET.SubElement(
            suite, "testcase", classname=f"caslab.{scenario.name}", name=check.name, time="0"
        )
        if not check.passed:
            message = f"{check.name} = {check.value:g}, must be {check.op} {check.limit:g}"
            ET.SubElement(case, "failure", message=message, type="threshold").text = message
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


# ---- report.html -----------------------------------------------------------------------------------

PALETTE = ["#1f6feb", "#e36209", "#2da44e", "#8250df", "#cf222e", "#6e7781", "#bf8700", "#0a7ea4", "#d63384"]
POPULATION_PALETTE = ["#4c78a8", "#72b7b2", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#bab0ac", "#eeca3b"]


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(analysis: Analysis, ramp_s: float) -> dict[str, str]:
    """The four plots of DESIGN.md section 9, as data: URLs."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    def axes(width: float, height: float) -> Axes:
        return Figure(figsize=(width, height), layout="constrained").subplots()

    servers = list(analysis.servers.index)
    colors = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(servers)}
    out = {}

    # Load per CAS, stacked by population: a NAT-ed tenant on one CAS shows as one tall block.
    ax = axes(5.6, 3.4)
    bottom = np.zeros(len(servers))
    pops = analysis.population_requests
    for i, population in enumerate(pops.index):
        values = pops.loc[population].reindex(servers, fill_value=0).to_numpy()
        ax.bar(
            servers,
            values,
            bottom=bottom,
            label=population,
            color=POPULATION_PALETTE[i % len(POPULATION_PALETTE)],
        )
        bottom += values
    if bottom.sum():
        ax.axhline(bottom.mean(), color="#444", linestyle="--", linewidth=1, label="mean")
        ax.legend(fontsize=7, frameon=False)
    ax.set_ylabel("answered requests")
    ax.set_title("Load per CAS (by population)")
    out["load"] = _png(ax.figure)

    # Population x CAS heat map of shares.
    shares = analysis.population_shares.reindex(columns=servers, fill_value=0)
    ax = axes(5.6, 0.8 + 0.45 * max(len(shares), 1))
    ax.imshow(shares.to_numpy() if len(shares) else np.zeros((1, len(servers))), cmap="Blues", vmin=0, vmax=1,
              aspect="auto")  # fmt: skip
    ax.set_xticks(range(len(servers)), servers)
    ax.set_yticks(range(len(shares)), shares.index)
    for (r, c), value in np.ndenumerate(shares.to_numpy()):
        ax.text(
            c,
            r,
            f"{value:.0%}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value > 0.6 else "black",
        )
    ax.set_title("Share of each population's requests per CAS")
    out["heatmap"] = _png(ax.figure)

    # Requests per CAS over time, faults marked.
    ax = axes(11, 3.2)
    timeline = analysis.timeline
    width = float(timeline.index[1] - timeline.index[0]) if len(timeline) > 1 else 1.0
    for server in timeline.columns:
        ax.plot(
            timeline.index, timeline[server] / width, label=server, color=colors.get(server), linewidth=1.4
        )
    if ramp_s:
        ax.axvspan(0, ramp_s, color="#d0d7de", alpha=0.5, linewidth=0, label="ramp")
    for fault in analysis.faults:
        marks = [
            (fault["at_s"], fault["action"], "#cf222e"),
            (fault["back_at_s"], fault["back_action"], "#2da44e"),
        ]
        for at, action, color in marks:
            if at is None:
                continue
            ax.axvline(at, color=color, linestyle="--", linewidth=1)
            ax.annotate(
                f"{fault['server']} {action}", (at, 1), xycoords=("data", "axes fraction"), fontsize=8,
                color=color, rotation=90, va="top", ha="right",
            )  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("requests/s")
    ax.set_title("Requests per CAS over time")
    ax.legend(fontsize=7, frameon=False, ncol=min(len(timeline.columns), 6) or 1)
    out["timeline"] = _png(ax.figure)

    # Affinity per service: split sessions and breaks per 100 requests.
    table = analysis.services
    ax = axes(5.6, 3.4)
    x = np.arange(len(table))
    per_100 = 100 / np.maximum(table["requests"].to_numpy(), 1)
    series = [
        ("split sessions %", table["split_pct"].to_numpy(), "#8250df"),
        ("hard breaks /100 req", table["hard_breaks"].to_numpy() * per_100, "#cf222e"),
        ("soft breaks /100 req", table["soft_breaks"].to_numpy() * per_100, "#bf8700"),
    ]
    for i, (label, values, color) in enumerate(series):
        ax.bar(x + (i - 1) * 0.27, values, width=0.27, label=label, color=color)
    ax.set_xticks(x, table.index, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_title("Affinity per service")
    ax.legend(fontsize=7, frameon=False)
    out["affinity"] = _png(ax.figure)
    return out


def _table(frame: pd.DataFrame) -> str:
    names = [frame.index.name or "", *frame.columns]
    head = "".join(f"<th>{html.escape(str(name).replace('_', ' '))}</th>" for name in names)
    rows = []
    for index, values in zip(frame.index, frame.itertuples(index=False), strict=True):  # a row per server...
        cells = "".join(f"<td>{html.escape(_fmt(value))}</td>" for value in values)
        rows.append(f"<tr><th>{html.escape(str(index))}</th>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float | np.floating):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    return str(value)


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f8fa;color:#1f2328}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
.banner{padding:18px 24px;color:#fff;display:flex;gap:24px;align-items:center;flex-wrap:wrap}
.banner.pass{background:#1a7f37}.banner.fail{background:#cf222e}
.banner .verdict{font-size:34px;font-weight:700;letter-spacing:1px}
.banner .what{font-size:15px}.banner .what b{font-size:18px}
.expect{margin-top:4px;font-size:13px;opacity:.9}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:10px;margin:16px 0}
.tile{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 12px}
.tile .v{font-size:22px;font-weight:600}.tile .k{color:#59636e;font-size:12px}
.tile.bad .v{color:#cf222e}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;margin:14px 0}
h2{font-size:16px;margin:2px 0 10px}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:14px}
img{max-width:100%}
h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #eaeef2;text-align:right}
th:first-child{text-align:left}thead th{background:#f6f8fa;font-weight:600}
tr.failed td,tr.failed th{background:#ffebe9}tr.passed td:last-child{color:#1a7f37}
tr.failed td:last-child{color:#cf222e;font-weight:600}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px;max-height:480px}
.note{color:#59636e;font-size:12px}
"""


def report_html(
    analysis: Analysis,
    scenario: Scenario,
    facts: RunFacts,
    configs: dict[str, str],
    broke: pd.DataFrame | None = None,
) -> str:
    plots = _plots(analysis, scenario.ramp_s)
    verdict = analysis.verdict
    e = html.escape
    expected = ""
    if scenario.expect:
        as_expected = "as expected" if scenario.expect == verdict else "NOT as expected"
        expected = f"<div class='expect'>This scenario is meant to {scenario.expect}: {as_expected}.</div>"
    driver = e(f"{facts.driver} {facts.driver_version}".strip())
    about = f" — {e(scenario.description)}" if scenario.description else ""
    banner = (
        f"<div class='banner {verdict}'><div class='verdict'>{verdict.upper()}</div>"
        f"<div class='what'><b>{e(scenario.name)}</b>{about}<br>"
        f"{driver}, preset {e(facts.preset or scenario.balancer.preset)}, {scenario.farm.servers} CAS, "
        f"tls {e(scenario.farm.tls)}, load {e(format_duration(scenario.duration_s))} at time scale "
        f"{scenario.time_scale:g}{expected}</div></div>"
    )
    t = analysis.totals
    bal = analysis.balance
    # OAB and Autodiscover need no affinity: their split sessions are harmless, so not flagged here.
    services = analysis.services
    split = int(services.loc[services.index.isin(AFFINITY_SERVICES), "split_sessions"].sum())
    tiles = [
        ("requests", _fmt(t["requests"]), False),
        ("sessions", _fmt(t["sessions"]), False),
        ("split sessions needing affinity", _fmt(split), split > 0),
        ("hard breaks", _fmt(t["hard_breaks"]), t["hard_breaks"] > 0),
        ("soft breaks", _fmt(t["soft_breaks"]), t["soft_breaks"] > 0),
        ("error rate", f"{t['error_rate_pct']:.2f}%", False),
        ("balance max/mean", _fmt(bal["max_over_mean"]), bool(bal["exceeds_random"])),
        ("Jain's index", _fmt(bal["jain"]), False),
    ]
    tiles_html = "".join(
        f"<div class='tile{' bad' if bad else ''}'><div class='v'>{v}</div><div class='k'>{k}</div></div>"
        for k, v, bad in tiles
    )
    check_rows = "".join(
        f"<tr class='{'passed' if c.passed else 'failed'}'><th>{e(c.name)}</th><td>{_fmt(c.value)}</td>"
        f"<td>{e(c.op)} {_fmt(c.limit)}</td><td>{'pass' if c.passed else 'FAIL'}</td></tr>"
        for c in analysis.checks
    )
    checks = (
        "<table><thead><tr><th>check</th><th>value</th><th>limit</th><th>result</th></tr></thead>"
        f"<tbody>{check_rows}</tbody></table>"
    )
    skew = (
        f"Observed max/mean {_fmt(bal['max_over_mean'])} is at the {_fmt(bal['random_placement_pct'])}th "
        "percentile of random placements of the same sessions (median "
        f"{_fmt(bal['random_max_over_mean_p50'])}, 95th percentile {_fmt(bal['random_max_over_mean_p95'])}): "
        + ("the skew is the balancer's doing." if bal["exceeds_random"] else "within what chance gives.")
    )
    servers = analysis.servers.copy()
    servers["share"] = servers["share"].map(lambda v: f"{v:.1%}")
    shares = (analysis.population_shares * 100).round(1).astype(str) + "%"
    shares.insert(0, "requests", analysis.population_requests.sum(axis=1))
    sections = [
        f"<section><h2>Checks</h2>{checks}</section>",
        "<div class='grid'>"
        f"<section><h2>Load per CAS</h2><img alt='load per CAS' src='{plots['load']}'>{_table(servers)}"
        f"<p class='note'>{e(skew)}</p></section>"
        f"<section><h2>Populations</h2><img alt='population x CAS' src='{plots['heatmap']}'>{_table(shares)}"
        "</section></div>",
        f"<section><h2>Over time</h2><img alt='requests per CAS over time' src='{plots['timeline']}'>"
        f"{_fault_table(analysis.faults)}</section>",
        f"<section><h2>Affinity per service</h2><img alt='affinity per service' "
        f"src='{plots['affinity']}'>{_table(analysis.services)}"
        "<p class='note'>hard break: answered <i>foreign</i> (state made on another CAS); soft break: "
        "answered <i>cold</i>, or an EAS request on another CAS than the one before. Latencies include "
        "requests that are held open on purpose: EAS Ping waits for mail, an RPC/HTTP channel lasts the "
        "whole session (a split one until the pairing wait ends).</p>" + _what_broke(broke) + "</section>",
        f"<section><h2>Reconciliation</h2>{_reconciliation(analysis.reconciliation)}</section>",
        f"<section><h2>Balancer</h2>{_balancer(scenario, facts, configs)}</section>",
    ]
    notes = "".join(f"<p class='note'>{e(n)}</p>" for n in facts.notes)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>caslab {e(scenario.name)}: {verdict}</title><style>{STYLE}</style></head><body>"
        f"{banner}<main><div class='tiles'>{tiles_html}</div>{notes}{''.join(sections)}</main>"
        "</body></html>\n"
    )


def _what_broke(broke: pd.DataFrame | None) -> str:
    if broke is None:
        return ""
    if broke.empty:
        return "<h3>What the clients saw</h3><p class='note'>Every request went well.</p>"
    return (
        "<h3>What the clients saw</h3><p class='note'>Requests that did not go well, by service, client "
        "kind and what the client saw, most first.</p>" + _table(broke)
    )


def _fault_table(faults: list[dict[str, Any]]) -> str:
    if not faults:
        return "<p class='note'>No faults in this run.</p>"
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
        rows.append(
            {
                "fault": f"{f['server']} {f['action']} at {f['at_s']:g}s"
                + (f", {f['back_action']} at {f['back_at_s']:g}s" if f["back_at_s"] is not None else ""),
                "sessions on it": f["sessions_on_server"],
                "lost": f["sessions_lost"],
                "moved": f["sessions_moved"],
                "failover median s": f["failover_s_median"],
                "failover max s": f["failover_s_max"],
                "collateral": f["collateral_sessions"],
                "after return": moved,
            }
        )
    return _table(pd.DataFrame(rows).set_index("fault"))


def _reconciliation(r: dict[str, int]) -> str:
    frame = pd.DataFrame({"count": r}).rename_axis("")
    notes = [
        f"{r['unmatched']} requests answered by a CAS have no ledger row: the lab lost ledger rows "
        "(for example a CAS stopped before its last rows were read)."
        if r["unmatched"]
        else "Every request a CAS answered has its ledger row."
    ]
    if r["lost_with_stopped_cas"]:
        notes.append(
            f"{r['lost_with_stopped_cas']} requests were still open on a CAS when a fault stopped it (such "
            "as RPC/HTTP channels): a killed CAS never writes their ledger rows; counted, not matched."
        )
    if r["without_request_id"]:
        notes.append(
            f"{r['without_request_id']} events carry no request id (exchanges inside an open connection, "
            "such as RPC calls on an RPC/HTTP channel); they are counted, not matched."
        )
    if r["event_duplicate_ids"]:
        notes.append(
            f"{r['event_duplicate_ids']} request ids were sent by more than one client request: the load "
            "generator's ids are not unique, so those events may be matched to the wrong ledger row."
        )
    if r["ledger_duplicate_ids"]:
        notes.append(
            f"{r['ledger_duplicate_ids']} request ids are on more than one ledger row: a balancer retried "
            "them" + (", or clients reused them (above)." if r["event_duplicate_ids"] else ".")
        )
    if r["ledger_not_in_events"]:
        notes.append(
            f"{r['ledger_not_in_events']} ledger rows have a request id no client event has: requests still "
            "open when the load stopped (EAS Pings, RPC/HTTP channels), which the CAS closed as it shut down."
        )
    if r["unknown_outcome"]:
        notes.append(f"{r['unknown_outcome']} events have an outcome the verifier does not know.")
    return _table(frame) + "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)


def _balancer(scenario: Scenario, facts: RunFacts, configs: dict[str, str]) -> str:
    methods = pd.DataFrame({"persistence": _methods(scenario, facts)}).rename_axis("service")
    files = "".join(
        f"<details><summary>{html.escape(name)}</summary><pre>{html.escape(text)}</pre></details>"
        for name, text in configs.items()
    )
    return _table(methods) + (files or "<p class='note'>No rendered balancer config in this run.</p>")
