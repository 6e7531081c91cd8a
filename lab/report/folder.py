"""A run's folder: `write_run` stores a finished run's data (events.parquet, ledger.parquet and
facts.json: the scenario's TOML, the command-line overrides and the run facts) and renders the report
files from it; `render_report` does the rendering alone from those files, so `caslab report RUN_DIR`
re-renders any run, also after caslab itself changed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from caslab.records import LEDGER_COLUMNS
from lab.candidate import ADOPTION, read_account
from lab.report.junit import junit_xml
from lab.report.page import report_html, what_broke
from lab.report.summary import summary
from lab.scenario import Scenario, parse_scenario
from lab.verifier import Analysis, RunFacts, verify

RUN_FACTS = "facts.json"  # what re-rendering needs beside the events and the ledger
NOT_CONFIG = (".log", ".pid", ".sock", ".stat")
CONFIG_SHOWN_BYTES = 200_000  # a rendered balancer config longer than this is cut in the report


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
    own = read_account(run_dir / "balancer")  # the user's own config, when the run had one
    data = summary(analysis, scenario, facts, own["explanation"] if own else None)
    (run_dir / "summary.json").write_text(json.dumps(data, indent=2, allow_nan=False))
    (run_dir / "junit.xml").write_text(junit_xml(analysis, scenario))
    configs = _balancer_files(run_dir / "balancer")
    page = report_html(analysis, scenario, facts, configs, what_broke(events), own)
    (run_dir / "report.html").write_text(page, encoding="utf-8")
    return analysis


def _balancer_files(folder: Path) -> dict[str, str]:
    """The rendered config files in the run's balancer/ folder (its logs and pid files are not config)."""
    if not folder.is_dir():
        return {}
    out = {}
    shown = [p for p in folder.iterdir() if p.is_file() and p.suffix not in NOT_CONFIG and p.name != ADOPTION]
    for path in sorted(shown):
        text = path.read_bytes()[:CONFIG_SHOWN_BYTES].decode("utf-8", errors="replace")
        out[path.name] = text + ("\n... (cut)" if path.stat().st_size > CONFIG_SHOWN_BYTES else "")
    return out
