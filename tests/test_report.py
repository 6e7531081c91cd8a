"""The report files of a run exist and parse: summary.json (its schema), junit.xml, a self-contained
report.html; `caslab report` re-renders them from the stored data (DESIGN.md section 9)."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest

from caslab.vocab import METHODS
from lab import balancers
from lab.cli import main
from lab.report import SCHEMA, render_report, report_html, what_broke, write_run
from lab.scenario import parse_scenario
from lab.verifier import FaultFact, RunFacts, verify
from tests.test_verifier import FAILOVER, T0, events, ledger_of

SCENARIO = """
name = "report-test"
description = "a hand-made run for the report tests"
expect = "fail"
duration = "40s"
[farm]
servers = 3
[balancer]
driver = "external"
[[population]]
kind = "direct"
users = 5
[[fault]]
at = "10s"
server = "CAS02"
action = "stop"
[[fault]]
at = "20s"
server = "CAS02"
action = "start"
[thresholds]
hard_breaks = 0
fault_collateral_breaks = 0
balance_max_over_mean = 3
"""


class StandInDriver(balancers.Balancer):
    name = "external"
    methods: ClassVar[frozenset[str]] = frozenset(METHODS)

    def refusals(self) -> list[balancers.Refusal]:
        return []


@pytest.fixture(autouse=True)
def stand_in_driver():
    with balancers.DRIVERS.replaced(StandInDriver):
        yield


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A finished run's folder, written once by write_run from the failover events of the verifier tests."""
    folder = tmp_path_factory.mktemp("run")
    with balancers.DRIVERS.replaced(StandInDriver):
        scenario = parse_scenario(SCENARIO, "report-test.toml", "report-test").with_overrides(duration="30s")
    ev = events(*FAILOVER)
    facts = RunFacts(
        driver="external",
        driver_version="9.9",
        preset="recommended",
        started_ts=T0,
        faults=[FaultFact("CAS02", "stop", T0 + 10), FaultFact("CAS02", "start", T0 + 20)],
        notes=["a note for the reader"],
    )
    (folder / "balancer").mkdir()
    (folder / "balancer" / "external.cfg").write_text("backend owa <cookie insert>\n")
    (folder / "balancer" / "external.log").write_text("a log line, not config\n")
    analysis = write_run(folder, ev, ledger_of(ev), scenario, facts)
    assert analysis.verdict == "fail"
    return folder


SATURATED = "load generator CPU above 90 % in 17 of 20 samples"


@pytest.fixture(scope="module")
def invalid_run(tmp_path_factory):
    """A run whose checks all hold but whose load generator saturated: the lab cannot vouch for it."""
    folder = tmp_path_factory.mktemp("invalid-run")
    with balancers.DRIVERS.replaced(StandInDriver):
        scenario = parse_scenario(SCENARIO, "report-test.toml", "report-test")
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)))
    facts = RunFacts(driver="external", started_ts=T0, invalid_reasons=[SATURATED])
    analysis = write_run(folder, ev, ledger_of(ev), scenario, facts)
    assert all(c.passed for c in analysis.checks), "every check holds: only the reason makes it invalid"
    return folder


def banner(page: str) -> str:
    return page[page.index("<div class='banner") : page.index("<main>")]


def test_an_invalid_run_has_an_invalid_banner_with_its_reason_and_no_pass(invalid_run):
    page = (invalid_run / "report.html").read_text()
    top = banner(page)
    assert top.startswith("<div class='banner invalid'><div class='verdict'>INVALID</div>")
    assert f"<div class='reason'>{SATURATED}</div>" in top
    assert "pass" not in top.lower(), top
    assert "<title>caslab report-test: invalid</title>" in page
    assert "these checks are not its verdict" in page


def test_an_invalid_run_is_an_error_in_junit_and_no_test_passes(invalid_run):
    suite = ET.parse(invalid_run / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    validity = cases[0]
    assert validity.get("name") == "run valid"
    error = validity.find("error")
    assert error is not None and error.get("message") == SATURATED == error.text
    passed = [c.get("name") for c in cases if not list(c)]  # a case with no failure, error or skipped
    assert passed == []
    assert all(c.find("skipped") is not None for c in cases[1:])
    assert (suite.get("errors"), suite.get("failures"), suite.get("skipped")) == (
        "1",
        "0",
        str(len(cases) - 1),
    )


def test_an_invalid_run_says_invalid_and_why_in_its_summary(invalid_run):
    summary = strict_json((invalid_run / "summary.json").read_text())
    assert summary["schema"] == "caslab.summary/1"
    assert (summary["verdict"], summary["verdict_reason"]) == ("invalid", SATURATED)
    assert summary["invalid_reasons"] == [SATURATED]


def test_caslab_report_exits_2_for_an_invalid_run(invalid_run, tmp_path, capsys):
    folder = Path(shutil.copytree(invalid_run, tmp_path / "run"))
    assert main(["report", str(folder)]) == 2
    assert capsys.readouterr().out.strip() == f"invalid: {folder / 'report.html'}"


def test_ledger_rows_of_another_run_make_the_written_run_invalid(tmp_path):
    scenario = parse_scenario(SCENARIO, "report-test.toml", "report-test")
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)))
    others = ledger_of(ev).iloc[:5].assign(run_id="another-run", request_id=[f"x{i}" for i in range(5)])
    ledger = pd.concat([ledger_of(ev).assign(run_id="this-run"), others], ignore_index=True)
    write_run(tmp_path, ev, ledger, scenario, RunFacts(driver="external", started_ts=T0, run_id="this-run"))
    summary = strict_json((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == "invalid" and summary["reconciliation"]["foreign_run_rows"] == 5
    assert "5 ledger rows belong to another run" in summary["verdict_reason"]
    page = (tmp_path / "report.html").read_text()
    assert "5 ledger rows belong to another run" in banner(page)
    assert "5 ledger rows carry another run's id" in page


def test_a_valid_run_says_why_in_its_banner_and_passes_the_validity_case(written):
    page = (written / "report.html").read_text()
    assert "<div class='reason'>failed: hard_breaks = 3, must be &lt;= 0; fault_collateral_breaks" in page
    validity = ET.parse(written / "junit.xml").getroot().find("testsuite").find("testcase")
    assert validity.get("name") == "run valid" and not list(validity)


@pytest.fixture
def run_dir(written, tmp_path):
    """A copy of the written run that a test may change."""
    return Path(shutil.copytree(written, tmp_path / "run"))


def strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_summary_has_the_schema_keys(written):
    summary = strict_json((written / "summary.json").read_text())
    assert summary["schema"] == SCHEMA == "caslab.summary/1"
    assert summary["verdict"] == "fail" and summary["expected"] == "fail"
    assert summary["verdict_reason"].startswith("failed: hard_breaks = 3, must be <= 0")
    assert summary["scenario"]["name"] == "report-test" and summary["scenario"]["duration_s"] == 30
    assert summary["balancer"]["driver"] == "external" and summary["balancer"]["version"] == "9.9"
    assert summary["balancer"]["methods"]["eas"] == "header Authorization"
    assert summary["farm"]["servers"] == ["CAS01", "CAS02", "CAS03"]
    assert {c["name"]: c["pass"] for c in summary["checks"]} == {
        "answered_requests": True,
        "hard_breaks": False,
        "balance_max_over_mean": True,
        "fault_collateral_breaks": False,
    }
    assert set(summary["checks"][0]) >= {"name", "value", "limit", "pass"}
    mapi = summary["services"]["mapi"]
    assert (mapi["requests"], mapi["sessions"], mapi["split_sessions"], mapi["hard_breaks"]) == (7, 1, 1, 2)
    assert set(mapi) >= {"soft_breaks", "errors"} and set(mapi["latency_ms"]) == {"p50", "p95", "p99"}
    assert set(summary["servers"]["CAS02"]) >= {"requests", "share", "sessions", "peak_connections"}
    assert set(summary["balance"]) >= {"max_over_mean", "cv", "jain", "random_placement_pct"}
    assert summary["populations"]["direct"]["requests"] == 14
    assert summary["reconciliation"]["matched"] == 14
    assert summary["faults"][0]["after_return"]["moved_back"] == 1
    assert summary["notes"] == ["a note for the reader"]
    # Time (DESIGN.md section 13): nothing was cut, no device pinged, and every move was the failover's.
    assert (mapi["cut"], mapi["cut_seen_by_cas"], summary["totals"]["cut"], summary["eas_heartbeat"]) == (
        0,
        0,
        0,
        None,
    )
    nothing = dict.fromkeys(("expired", "evicted", "cas-failed", "no-persistence", "other"), 0)
    assert mapi["moves"] == {**nothing, "cas-failed": 2} and mapi["breaks_by_cause"] == {
        **nothing,
        "cas-failed": 2,
    }
    assert summary["services"]["owa"]["moves"] == {**nothing, "cas-failed": 1}
    assert summary["services"]["owa"]["breaks_by_cause"] == nothing


def test_junit_has_a_test_case_per_check_and_failures_for_failed_ones(written):
    root = ET.parse(written / "junit.xml").getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "run valid", "answered_requests", "hard_breaks", "balance_max_over_mean", "fault_collateral_breaks",
    ]  # fmt: skip
    failed = {c.get("name"): c.find("failure").get("message") for c in cases if c.find("failure") is not None}
    assert failed == {
        "hard_breaks": "hard_breaks = 3, must be <= 0",
        "fault_collateral_breaks": "fault_collateral_breaks = 1, must be <= 0",
    }
    assert suite.get("tests") == "5" and suite.get("failures") == "2" == root.get("failures")
    assert suite.get("errors") == "0"


def plot_labels(page: str) -> list[str]:
    return re.findall(r"<svg role=\"img\" aria-label=\"([^\"]+)\"", page)


def test_the_html_report_is_self_contained_with_its_plots_inline_as_svg(written):
    page = (written / "report.html").read_text()
    assert plot_labels(page) == [
        "load per CAS", "population x CAS", "requests per CAS over time", "affinity per service",
        "why sessions moved",  # the sessions of the stopped CAS moved: it failed
    ]  # fmt: skip
    assert page.count("<svg") == page.count("</svg>") == 5
    for raster in ("image/png", "base64", "<img", "<image"):
        assert raster not in page, f"no raster image: {raster}"
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "the plots' element ids do not collide"
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", page), "nothing is fetched from elsewhere"
    assert "class='banner fail'" in page and "This scenario is meant to fail: as expected." in page
    for text in ("fault_collateral_breaks", "CAS02 stop at 10s, start at 20s", "a note for the reader"):
        assert text in page
    assert "external.cfg" in page and "backend owa &lt;cookie insert&gt;" in page, "the config, escaped"
    assert "external.log" not in page, "the balancer's log is not its config"


def test_a_plot_with_nothing_to_show_is_said_in_words_not_drawn():
    scenario = parse_scenario(SCENARIO, "report-test.toml", "report-test")
    facts = RunFacts(driver="external", started_ts=T0)
    clean = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)))
    page = report_html(verify(clean, ledger_of(clean), scenario, facts), scenario, facts, {})
    assert plot_labels(page) == ["load per CAS", "population x CAS", "requests per CAS over time"]
    assert "No session was split and no request broke, in any service: nothing to plot." in page

    unanswered = events({"outcome": "transport"}, {"outcome": "transport"})
    page = report_html(verify(unanswered, ledger_of(unanswered), scenario, facts), scenario, facts, {})
    assert plot_labels(page) == [] and "<svg" not in page
    for words in ("there is no load to show", "there are no shares to show", "no traffic over time to show"):
        assert words in page


TIMERS = (
    # Outlook Anywhere cut twice, an intranet connection once, an ActiveSync device cut back to 60 s.
    {"service": "rpchttp", "user": "o", "session": "O", "server": "CAS01", "t": 1},
    {
        "service": "rpchttp",
        "user": "o",
        "session": "O",
        "server": "",
        "outcome": "cut",
        "detail": "eof",
        "t": 6,
    },
    {
        "service": "rpchttp",
        "user": "o",
        "session": "O",
        "server": "",
        "outcome": "cut",
        "detail": "reset",
        "t": 9,
    },
    {"service": "mapi", "user": "m", "session": "M", "server": "", "outcome": "cut", "detail": "eof", "t": 7},
    {
        "service": "eas",
        "user": "e",
        "session": "E",
        "server": "",
        "outcome": "cut",
        "detail": "eof heartbeat=540",
    },
    {"service": "eas", "user": "e", "session": "E", "server": "CAS02", "detail": "heartbeat=60", "t": 2},
    {"service": "eas", "user": "e", "session": "E", "server": "CAS02", "detail": "heartbeat=360", "t": 3},
    # An OWA user idle longer than its balancer cookie lived (30 s, as the run recorded it) moved.
    {"service": "owa", "user": "w", "session": "W", "server": "CAS01", "t": 1},
    {"service": "owa", "user": "w", "session": "W", "server": "CAS03", "outcome": "foreign", "t": 35},
)


def test_the_timers_section_shows_cuts_heartbeats_and_moves_and_says_what_fixes_them():
    scenario = parse_scenario(SCENARIO, "report-test.toml", "report-test")
    facts = RunFacts(driver="haproxy", started_ts=T0, persistence_timeouts_s={"owa": 30.0})
    ev = events(*TIMERS)
    page = report_html(verify(ev, ledger_of(ev), scenario, facts), scenario, facts, {})
    labels = plot_labels(page)
    assert {"cuts per service over time", "EAS heartbeats asked for", "why sessions moved"} <= set(labels)
    section = page[page.index("<h2>Timers</h2>") : page.index("<h2>Reconciliation</h2>")]
    assert "Exchange 2010 logs event 1040" in section  # the mean heartbeat, 320 s, is at or below 540 s
    for advice in (
        "MinimumConnectionTimeout to 120 s",  # Outlook Anywhere cut
        "KB 905013",  # Pings cut
        "HAProxy is a full proxy",  # intranet Outlook cut behind a proxy: KeepAliveTime does not help
        "raise the persistence timeout",  # the OWA user's entry expired
    ):
        assert advice in section, advice
    assert "<td>1 (1 broke)</td>" in section  # the expired move logged the OWA user off


def test_a_timers_section_with_nothing_to_show_says_so_in_words():
    scenario = parse_scenario(SCENARIO, "report-test.toml", "report-test")
    facts = RunFacts(driver="external", started_ts=T0)
    clean = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)))
    page = report_html(verify(clean, ledger_of(clean), scenario, facts), scenario, facts, {})
    section = page[page.index("<h2>Timers</h2>") : page.index("<h2>Reconciliation</h2>")]
    assert "<svg" not in section and "class='advice'" not in section
    for words in ("nothing to plot", "there are no heartbeats to show", "there is nothing to explain"):
        assert words in section


def test_render_report_rebuilds_the_files_from_the_stored_data(run_dir):
    before = strict_json((run_dir / "summary.json").read_text())
    for name in ("summary.json", "junit.xml", "report.html"):
        (run_dir / name).unlink()
    analysis = render_report(run_dir)
    after = strict_json((run_dir / "summary.json").read_text())
    before.pop("generated"), after.pop("generated")
    assert after == before and analysis.verdict == "fail"
    assert (run_dir / "junit.xml").exists() and (run_dir / "report.html").exists()
    stored = pd.read_parquet(run_dir / "events.parquet")
    assert len(stored) == len(FAILOVER) and stored["server"].tolist()[2] == ""


def test_caslab_report_exits_with_the_verdict(run_dir, tmp_path_factory, capsys):
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 1
    assert (run_dir / "report.html").exists()
    assert capsys.readouterr().out.strip() == f"fail: {run_dir / 'report.html'}"
    empty = tmp_path_factory.mktemp("not-a-run")
    assert main(["report", str(empty)]) == 2
    assert "is not a finished run" in capsys.readouterr().err


def test_caslab_scenarios_lists_the_bundled_ones(capsys):
    assert main(["scenarios"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("quickstart ") and "healthy run" in line for line in lines)
    assert len(lines) >= 9


def test_what_broke_counts_the_bad_requests_by_service_client_kind_and_what_the_client_saw():
    ev = events(
        {"outcome": "foreign", "detail": "sent to the logon page"},
        {"outcome": "foreign", "detail": "sent to the logon page"},
        {
            "service": "rpchttp",
            "client_kind": "outlook2007-rpchttp",
            "outcome": "foreign",
            "detail": "channel-split",
        },
        {"outcome": "ok"},
    )
    assert what_broke(ev).reset_index().to_numpy().tolist() == [
        ["owa", "browser", "foreign", "sent to the logon page", 2],
        ["rpchttp", "outlook2007-rpchttp", "foreign", "channel-split", 1],
    ]
    assert what_broke(events({"outcome": "ok"})).empty
