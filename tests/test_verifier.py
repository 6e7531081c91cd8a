"""The verifier's figures on small hand-made runs whose answers are known (DESIGN.md sections 7 and 9)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from caslab.records import EVENT_COLUMNS, LEDGER_COLUMNS
from lab.scenario import BalancerSection, Farm, Fault, Population, Scenario, Thresholds
from lab.verdict import EXIT_CODES, verdict_line
from lab.verifier import FaultFact, RunFacts, read_events, verify
from lab.verifier.limits import cas_lags
from lab.verifier.planned import silent_clients_reason

T0 = 1_000_000.0  # epoch seconds at which the hand-made runs start


def scenario(
    thresholds: Thresholds | None = None, faults: tuple[Fault, ...] = (), ramp_s: float = 0
) -> Scenario:
    return Scenario(
        name="hand-made",
        duration_s=60,
        ramp_s=ramp_s,
        time_scale=60,
        seed=7,
        farm=Farm(servers=3),
        balancer=BalancerSection(),
        populations=(Population("direct", "direct", 10, 10, {"browser": 1.0}),),
        faults=faults,
        thresholds=thresholds or Thresholds(),
    )


def events(*rows: dict) -> pd.DataFrame:
    """Client events; each row gives what matters to the test, the rest has plain defaults."""
    defaults = {
        "population": "direct", "user": "u1", "client_kind": "browser", "service": "owa", "session": "s1",
        "source_ip": "127.0.18.50", "server": "CAS01", "status": 200, "outcome": "ok", "latency_ms": 10.0,
        "detail": "",
    }  # fmt: skip
    out = []
    for i, row in enumerate(rows):
        event = {**defaults, "request_id": f"r{i}", **row}
        event["ts"] = T0 + row.get("t", i)
        if event["outcome"] == "transport":
            event.update(server="", status=0)
        out.append({c: event[c] for c in EVENT_COLUMNS})
    return pd.DataFrame(out, columns=list(EVENT_COLUMNS))


def ledger_of(ev: pd.DataFrame) -> pd.DataFrame:
    """The ledger rows the CAS would have written: one per answered event."""
    answered = ev[ev["outcome"] != "transport"]
    return pd.DataFrame(
        {
            "seq": range(len(answered)),
            "ts": answered["ts"].to_numpy(),
            "server": answered["server"].to_numpy(),
            "service": answered["service"].to_numpy(),
            "session_key": answered["session"].to_numpy(),
            "client_ip": answered["source_ip"].to_numpy(),
            "state": "own",
            "status": answered["status"].to_numpy(),
            "request_id": answered["request_id"].to_numpy(),
            "detail": "",
            "latency_ms": 1.0,
        },
        columns=list(LEDGER_COLUMNS),
    )


def run(ev: pd.DataFrame, sc: Scenario | None = None, facts: RunFacts | None = None, ledger=None):
    return verify(
        ev,
        ledger_of(ev) if ledger is None else ledger,
        sc or scenario(),
        facts or RunFacts("test", started_ts=T0),
    )


def check(analysis, name: str):
    return next(c for c in analysis.checks if c.name == name)


def test_a_session_that_reached_two_cas_is_split():
    ev = events(
        {"session": "s1", "server": "CAS01"},
        {"session": "s1", "server": "CAS01"},
        {"session": "s1", "server": "CAS02"},
        {"session": "s2", "user": "u2", "server": "CAS03"},
        {"session": "s2", "user": "u2", "server": "CAS03"},
        {"session": "s1", "user": "u3", "server": "CAS03"},  # same session id, another user: another session
        {"session": "s1", "service": "ecp", "server": "CAS02"},  # same session, another service: its own unit
        {"session": "s1", "service": "owa", "outcome": "transport"},  # no answer: does not split anything
    )
    a = run(ev, scenario(Thresholds(split_sessions_pct={"owa": 10, "ecp": 0})))
    owa, ecp = a.services.loc["owa"], a.services.loc["ecp"]
    assert (owa.requests, owa.sessions, owa.split_sessions, owa.split_pct) == (7, 3, 1, 33.333)
    assert (ecp.sessions, ecp.split_sessions) == (1, 0)
    assert a.servers["sessions"].to_dict() == {"CAS01": 1, "CAS02": 2, "CAS03": 2}
    assert a.totals["split_sessions"] == 1 and a.totals["hard_breaks"] == 0
    assert not check(a, "split_sessions_pct.owa").passed and check(a, "split_sessions_pct.ecp").passed
    assert a.verdict == "fail"


def test_hard_and_soft_breaks_and_errors():
    ev = events(
        {"service": "owa", "outcome": "foreign", "server": "CAS02"},
        # An EAS device: cold on its first CAS (a warm-up), then moves twice (two soft breaks).
        {"service": "eas", "session": "d1", "outcome": "cold", "server": "CAS01"},
        {"service": "eas", "session": "d1", "server": "CAS01"},
        {"service": "eas", "session": "d1", "outcome": "cold", "server": "CAS02"},
        {"service": "eas", "session": "d1", "server": "CAS02"},
        {"service": "eas", "session": "d1", "server": "CAS01"},
        # An Address Book bind on a CAS without the user's MAPI session: a soft break, first or not.
        {"service": "addressbook", "outcome": "cold", "server": "CAS03"},
        {"service": "ews", "outcome": "error", "status": 500},
        {"service": "ews", "outcome": "transport"},
    )
    a = run(ev, scenario(Thresholds(hard_breaks={"owa": 0, "ews": 0}, error_rate_pct=10)))
    s = a.services
    assert s["hard_breaks"].to_dict() == {"owa": 1, "ews": 0, "eas": 0, "addressbook": 0}
    assert s["soft_breaks"].to_dict() == {"owa": 0, "ews": 0, "eas": 2, "addressbook": 1}
    assert (s.loc["ews", "errors"], s.loc["ews", "transport"], s.loc["eas", "split_sessions"]) == (2, 1, 1)
    assert a.totals["error_rate_pct"] == pytest.approx(100 * 2 / 9, abs=1e-3)
    assert [(c.name, c.passed) for c in a.checks] == [
        ("answered_requests", True),
        ("hard_breaks.owa", False),
        ("hard_breaks.ews", True),
        ("error_rate_pct", False),
    ]


def test_a_nat_ed_tenant_on_one_cas_is_a_skew_beyond_random_placement():
    tenant = [
        {"population": "tenant-nat", "user": f"t{i}", "session": f"t{i}", "server": "CAS01"}
        for i in range(30)
    ]
    direct = [{"user": f"d{i}", "session": f"d{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)]
    a = run(events(*tenant, *direct), scenario(Thresholds(balance_max_over_mean=1.25)))
    assert a.servers["requests"].to_dict() == {"CAS01": 40, "CAS02": 10, "CAS03": 10}
    b = a.balance
    assert (b["max_over_mean"], b["cv"], b["jain"]) == (2.0, pytest.approx(0.7071, abs=1e-4), 0.6667)
    assert b["random_placement_pct"] > 99 and b["exceeds_random"]
    assert a.population_shares.loc["tenant-nat"].to_dict() == {"CAS01": 1.0, "CAS02": 0.0, "CAS03": 0.0}
    assert a.population_shares.loc["direct"].to_dict() == pytest.approx(
        {"CAS01": 1 / 3, "CAS02": 1 / 3, "CAS03": 1 / 3}, abs=1e-4
    )
    assert a.population_requests.loc["tenant-nat", "CAS01"] == 30
    assert not check(a, "balance_max_over_mean").passed


def test_a_skew_from_few_heavy_sessions_is_not_blamed_on_the_balancer():
    # Two sessions of 50 requests each, both on CAS01: random placement does that a third of the time.
    ev = events(*({"user": f"u{i % 2}", "session": f"s{i % 2}", "server": "CAS01"} for i in range(100)))
    b = run(ev).balance
    assert b["max_over_mean"] == 3.0
    assert 70 < b["random_placement_pct"] < 95 and not b["exceeds_random"]


FAILOVER = (
    # A (mapi) lives on CAS02, breaks when it stops, moves to CAS01, and is moved back after CAS02 returns.
    {"service": "mapi", "user": "a", "session": "A", "server": "CAS02", "t": 1},
    {"service": "mapi", "user": "a", "session": "A", "server": "CAS02", "t": 9},
    {"service": "mapi", "user": "a", "session": "A", "outcome": "transport", "t": 10.5},
    {"service": "mapi", "user": "a", "session": "A", "server": "CAS01", "outcome": "foreign", "t": 11},
    {"service": "mapi", "user": "a", "session": "A", "server": "CAS01", "t": 19},
    {"service": "mapi", "user": "a", "session": "A", "server": "CAS02", "outcome": "foreign", "t": 21},
    {"service": "mapi", "user": "a", "session": "A", "server": "CAS02", "t": 22},
    # B (owa) lives on CAS02, moves to CAS03 without breaking and stays there.
    {"service": "owa", "user": "b", "session": "B", "server": "CAS02", "t": 5},
    {"service": "owa", "user": "b", "session": "B", "server": "CAS03", "t": 12},
    {"service": "owa", "user": "b", "session": "B", "server": "CAS03", "t": 22},
    # C (owa) lives on CAS01 and is never touched.
    {"service": "owa", "user": "c", "session": "C", "server": "CAS01", "t": 5},
    {"service": "owa", "user": "c", "session": "C", "server": "CAS01", "t": 15},
    # D (ews) lives on CAS03 and breaks while CAS02 is out: collateral damage.
    {"service": "ews", "user": "d", "session": "D", "server": "CAS03", "t": 5},
    {"service": "ews", "user": "d", "session": "D", "server": "CAS03", "outcome": "foreign", "t": 14},
    # E (eas) starts while CAS02 is out.
    {"service": "eas", "user": "e", "session": "E", "server": "CAS01", "t": 12},
)
FAILOVER_ENTRY = {
    "server": "CAS02",
    "action": "stop",
    "at_s": 10.0,
    "back_action": "start",
    "back_at_s": 20.0,
    "sessions_on_server": 2,
    "sessions_lost": 1,
    "sessions_moved": 2,
    "failover_s_median": 1.5,
    "failover_s_max": 2.0,
    "collateral_sessions": 1,
    "errors_in_window": 1,
    "after_return": {
        "stayed": 1,
        "moved_back": 1,
        "second_breaks": 1,
        "by_service": {"owa": {"stayed": 1, "moved_back": 0}, "mapi": {"stayed": 0, "moved_back": 1}},
    },
}


def test_a_failover_only_its_own_sessions_break_and_who_moves_back():
    facts = RunFacts(
        "test",
        started_ts=T0,
        faults=[FaultFact("CAS02", "stop", T0 + 10), FaultFact("CAS02", "start", T0 + 20)],
    )
    a = run(events(*FAILOVER), scenario(Thresholds(fault_collateral_breaks=0)), facts)
    assert a.faults == [FAILOVER_ENTRY]
    assert check(a, "fault_collateral_breaks").value == 1 and a.verdict == "fail"
    assert int(a.timeline.to_numpy().sum()) == a.totals["answered"] == 14


def test_fault_times_come_from_the_schedule_when_the_run_did_not_record_them():
    faults = (Fault(8, "CAS02", "stop"), Fault(18, "CAS02", "start"))  # `at` counts after the ramp
    a = run(events(*FAILOVER), scenario(faults=faults, ramp_s=2), RunFacts("test", started_ts=T0))
    assert a.faults == [FAILOVER_ENTRY]


def test_ecp_first_opened_after_the_fault_belongs_to_the_owa_logon_made_on_the_stopped_cas():
    ev = events(
        {"service": "owa", "user": "b", "session": "B", "server": "CAS02", "t": 5},
        {"service": "ecp", "user": "b", "session": "B", "server": "CAS01", "outcome": "foreign", "t": 12},
        {"service": "owa", "user": "c", "session": "C", "server": "CAS01", "t": 5},
        {"service": "ecp", "user": "c", "session": "C", "server": "CAS01", "outcome": "foreign", "t": 13},
    )
    facts = RunFacts("test", started_ts=T0, faults=[FaultFact("CAS02", "stop", T0 + 10)])
    (outage,) = run(ev, scenario(Thresholds(fault_collateral_breaks=0)), facts).faults
    assert outage["sessions_on_server"] == 2  # b's OWA and the ECP that used its logon
    assert outage["sessions_lost"] == 1 and outage["collateral_sessions"] == 1  # c's ECP broke elsewhere


def test_answers_still_open_when_their_cas_was_stopped_are_lost_with_it_not_unmatched():
    ev = events(
        {"request_id": "r1", "service": "rpchttp", "server": "CAS02", "t": 1},  # open until the kill
        {"request_id": "r2", "server": "CAS02", "t": 12},  # after the restart: a row the lab lost
        {"request_id": "r3", "server": "CAS01", "t": 2},  # another CAS: a row the lab lost
    )
    facts = RunFacts(
        "test",
        started_ts=T0,
        faults=[FaultFact("CAS02", "stop", T0 + 10), FaultFact("CAS02", "start", T0 + 11)],
    )
    r = run(ev, facts=facts, ledger=ledger_of(ev).iloc[:0]).reconciliation
    assert (r["lost_with_stopped_cas"], r["unmatched"], r["matched"]) == (1, 2, 0)


def test_reconciliation_counts_every_event_and_every_ledger_row():
    ev = events(
        {"request_id": "r1"},
        {"request_id": "r2"},  # the ledger says CAS02 answered it
        {"request_id": "r3"},  # two ledger rows: the balancer retried it
        {"request_id": "r4", "outcome": "transport"},  # never reached a CAS
        {"request_id": "r5"},  # answered, but its ledger row is missing
        {"request_id": ""},  # no request id at all
        {"request_id": "r6", "outcome": "transport"},  # reached a CAS, the answer was lost
        {"request_id": "r7", "server": "", "status": 503, "outcome": "error"},  # the balancer's own answer
        {"request_id": "r1", "server": "CAS01"},  # another client used the same id
        {"request_id": "r8", "server": "", "status": 0, "outcome": "cut"},  # a Ping cut under the client
        {"request_id": "r10", "server": "", "status": 0, "outcome": "cut"},  # the CAS found it cut too
    )
    ledger = pd.DataFrame(
        [(rid, server) for rid, server in
         [("r1", "CAS01"), ("r2", "CAS02"), ("r3", "CAS01"), ("r3", "CAS01"), ("r9", "CAS03"), ("", "CAS01"),
          ("r6", "CAS02"), ("r10", "CAS03")]],
        columns=["request_id", "server"],
    ).assign(ts=T0, latency_ms=1.0)  # fmt: skip
    r = run(ev, ledger=ledger).reconciliation
    assert r == {
        "events": 11,
        "matched": 6,
        "transport_failures": 2,
        "transport_seen_by_cas": 1,
        "cuts": 2,
        "cuts_seen_by_cas": 1,
        "unmatched": 1,
        "lost_with_stopped_cas": 0,
        "answered_by_balancer": 1,
        "without_request_id": 1,
        "event_duplicate_ids": 1,
        "unknown_outcome": 0,
        "server_differs": 1,
        "ledger_rows": 8,
        "ledger_without_request_id": 1,
        "ledger_not_in_events": 1,
        "not_logged_in_load": 1,  # r9, answered at the start of the load
        "ledger_duplicate_ids": 1,
        "foreign_run_rows": 0,
        "channel_splits_at_stop": 0,
    }
    not_matched_transport = r["transport_failures"] - r["transport_seen_by_cas"]
    not_matched_cuts = r["cuts"] - r["cuts_seen_by_cas"]
    accounted = (
        r["matched"] + r["unmatched"] + r["lost_with_stopped_cas"] + r["answered_by_balancer"]
        + r["without_request_id"]
    )  # fmt: skip
    assert accounted + not_matched_transport + not_matched_cuts == r["events"]


def test_a_client_request_without_its_ledger_row_makes_the_run_invalid_with_the_count():
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)))
    a = run(ev, scenario(Thresholds(hard_breaks=0)), ledger=ledger_of(ev).iloc[3:])
    assert a.reconciliation["unmatched"] == 3 and all(c.passed for c in a.checks)
    reason = (
        "3 client requests answered by a CAS have no ledger row of this run (reconciliation: unmatched 3)"
    )
    assert (a.verdict, a.verdict_reason) == ("invalid", reason)


def test_a_request_answered_during_the_load_that_no_client_logged_makes_the_run_invalid():
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)))
    load_end = T0 + 60  # started_ts T0, no ramp, 60 s of load
    # Requests the clients sent and never logged, answered (ts + latency) at these times.
    answered = {"early": T0 + 10, "before": load_end - 6, "in the grace": load_end - 4, "after": load_end + 1}
    extra = pd.DataFrame(
        [{**ledger_of(ev).iloc[0].to_dict(), "request_id": name, "ts": at - 0.5, "latency_ms": 500.0}
         for name, at in answered.items()]
    )  # fmt: skip
    checked = scenario(Thresholds(hard_breaks=0))
    a = run(ev, checked, ledger=pd.concat([ledger_of(ev), extra], ignore_index=True))
    r = a.reconciliation
    assert (r["ledger_not_in_events"], r["not_logged_in_load"], r["matched"]) == (4, 2, 30)
    assert all(c.passed for c in a.checks)
    assert a.verdict == "invalid"
    assert a.verdict_reason == (
        "2 requests a CAS answered during the load are in no client's events, more than 5 s before the "
        "load ended: the lab lost client events, and a break among them would not be counted "
        "(reconciliation: not_logged_in_load 2)"
    )
    # A request the CAS holds open by design, answered early, whose answer never reached its client (a
    # device dropped the idle flow, a balancer retried the Ping elsewhere): the phone was still waiting.
    held = extra.iloc[:2].assign(detail="Ping heartbeat=540", request_id=["held-ping", "held-ping-2"])
    channel = extra.iloc[:1].assign(service="rpchttp", detail="peer-closed", request_id="held-channel")
    c = run(ev, checked, ledger=pd.concat([ledger_of(ev), held, channel], ignore_index=True))
    assert (c.reconciliation["ledger_not_in_events"], c.reconciliation["not_logged_in_load"]) == (3, 0)
    assert c.verdict == "pass"
    # Only rows answered in the grace or after the end: requests cut by the stop, a valid run.
    late = extra.iloc[2:]
    b = run(ev, checked, ledger=pd.concat([ledger_of(ev), late], ignore_index=True))
    assert (b.reconciliation["ledger_not_in_events"], b.reconciliation["not_logged_in_load"]) == (2, 0)
    assert b.verdict == "pass"
    # A run that did not record when its load started cannot tell when it ended: not judged.
    d = run(ev, facts=RunFacts("test"), ledger=pd.concat([ledger_of(ev), extra], ignore_index=True))
    assert d.reconciliation["not_logged_in_load"] == 0


def test_virtual_connections_split_when_the_run_stopped_are_counted_and_a_passing_run_is_invalid():
    """Halves of one virtual connection (one cookie) each waiting alone on a different CAS when the CAS
    stopped, inside its pairing wait: a split no client had logged yet."""
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(6)))
    half = {**ledger_of(ev).iloc[0].to_dict(), "service": "rpchttp", "state": "new", "detail": "cas-closing"}
    halves = pd.DataFrame(
        [{**half, "session_key": key, "server": server, "request_id": f"{key}-{server}"}
         for key, server in [("vc1", "CAS01"), ("vc1", "CAS02"),  # split over two CAS
                             ("vc2", "CAS03"),  # its partner was never sent: undecided
                             ("vc3", "CAS01"), ("vc3", "CAS01")]]  # both on one CAS (no join yet): no split
    )  # fmt: skip
    ledger = pd.concat([ledger_of(ev), halves], ignore_index=True)
    a = run(ev, scenario(Thresholds(hard_breaks=0)), ledger=ledger)
    assert a.reconciliation["channel_splits_at_stop"] == 1
    assert all(c.passed for c in a.checks) and a.verdict == "invalid"
    assert a.verdict_reason.startswith(
        "1 Outlook Anywhere virtual connections had their IN and OUT halves waiting on different CAS when "
        "the run ended, inside the CAS's 10 s pairing wait"
    )
    # A run that failed a hard-break check already says its sessions broke: the count is a figure.
    split = {"user": "u9", "session": "s9", "outcome": "foreign", "detail": "channel-split"}
    broke = events(
        *({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(6)), split
    )
    b = run(broke, scenario(Thresholds(hard_breaks=0)), ledger=pd.concat([ledger_of(broke), halves]))
    assert (b.reconciliation["channel_splits_at_stop"], b.verdict) == (1, "fail")


def test_ledger_rows_of_another_run_are_counted_left_out_and_make_the_run_invalid():
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(6)))
    own = ledger_of(ev).assign(run_id="run-a")
    own.loc[0, "run_id"] = ""  # a row without a run id (a balancer's health probe) is no other run's
    other = ledger_of(ev).assign(run_id="run-b", request_id=[f"b{i}" for i in range(6)])
    ledger = pd.concat([own, other.iloc[:4]], ignore_index=True)
    a = run(ev, facts=RunFacts("test", started_ts=T0, run_id="run-a"), ledger=ledger)
    r = a.reconciliation
    assert (r["foreign_run_rows"], r["ledger_rows"], r["matched"], r["ledger_not_in_events"]) == (4, 6, 6, 0)
    assert a.servers["ledger_rows"].sum() == 6, "another run's rows are in no figure of this one"
    assert a.verdict == "invalid" and "4 ledger rows belong to another run" in a.verdict_reason
    assert "foreign_run_rows 4" in a.verdict_reason

    # Without the run's own id, or with a ledger from before run ids (no column), no row is another run's.
    assert run(ev, ledger=ledger).reconciliation["foreign_run_rows"] == 0
    old_ledger = ledger_of(ev).drop(columns="run_id", errors="ignore")
    b = run(ev, facts=RunFacts("test", started_ts=T0, run_id="run-a"), ledger=old_ledger)
    assert b.reconciliation["foreign_run_rows"] == 0 and b.verdict == "pass"


def test_a_wait_in_the_lab_under_a_second_is_said_as_it_was_not_rounded_to_zero():
    from lab.verifier.held import _span

    waits = np.array([0.062, 0.27])  # seconds; at time_scale 2000, 2-9 Exchange minutes
    assert (_span(waits, 1), _span(waits, 2000 / 60)) == ("0.062-0.27", "2.1-9")
    assert _span(np.array([46.2, 72.4]), 1) == "46-72" and _span(np.array([50.1, 49.8]), 1) == "50"


def test_a_logon_that_expired_while_its_request_waited_in_the_lab_makes_the_run_invalid_not_failed():
    # u1 logs on at t=0 and asks again at t=1; the request waits 50 s in the lab (client latency 50 s,
    # the CAS's 1 ms), 50 Exchange minutes at time_scale 60, and the CAS finds the logon idled out.
    # u2 really idles 40 s before its request, which arrives at once: a plain expiry, the run's own.
    ev = events(
        {"t": 0, "outcome": "ok"},
        {"t": 1, "outcome": "foreign", "status": 302, "latency_ms": 50_000.0},
        {"t": 0, "user": "u2", "session": "s2", "outcome": "ok"},
        {"t": 40, "user": "u2", "session": "s2", "outcome": "foreign", "status": 302},
        *({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(3, 30)),
    )
    ledger = ledger_of(ev)
    ledger.loc[ledger["request_id"].isin(["r1", "r3"]), "state"] = "expired"
    a = run(ev, scenario(Thresholds(hard_breaks=0)), ledger=ledger)
    assert a.totals["hard_breaks"] == 2
    assert a.verdict == "invalid"
    assert a.verdict_reason == (
        "1 hard break (owa) is a session that expired on the CAS while its request waited 50 s in the lab "
        "before reaching it (50 Exchange minutes at time_scale 60): the lab could not carry this load at "
        "this time scale; lower time_scale or the number of users"
    )
    # Without the wait, the same expiry is the balancer's or the client's: counted, and the check fails.
    ev.loc[1, "latency_ms"] = 10.0
    b = run(ev, scenario(Thresholds(hard_breaks=0)), ledger=ledger)
    assert (b.verdict, b.verdict_reason) == ("fail", "failed: hard_breaks = 2, must be <= 0")


def test_a_balancer_that_reached_its_own_connection_limit_makes_a_run_with_breaks_invalid():
    limit = "haproxy frontend owa reached its connection limit of 9,986 (...)"
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)))
    sc = scenario(Thresholds(hard_breaks=0))
    clean = run(ev, sc, facts=RunFacts("test", started_ts=T0, balancer_limits=[limit]))
    assert clean.verdict == "pass", "nothing broke: the limit is only a note"
    ev.loc[3, "outcome"] = "foreign"
    ev.loc[4, "outcome"] = "transport"
    ev.loc[4, ["server", "status"]] = ["", 0]
    broken = run(ev, sc, facts=RunFacts("test", started_ts=T0, balancer_limits=[limit]))
    assert broken.verdict == "invalid"
    assert broken.verdict_reason == (
        f"{limit}; the run's 1 hard break, 1 transport failure may come from that limit, not from persistence"
    )
    assert run(ev, sc).verdict == "fail", "without the limit the same breaks fail the run"


def test_a_balancer_limit_makes_a_run_that_failed_a_check_invalid_even_without_breaks():
    """Clients that queued behind the limit sent fewer requests than planned: a failed check may be the
    limit's (who got through first), so the lab cannot vouch for it."""
    limit = "haproxy held its global maxconn of 20 connections during the load (...)"
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": "CAS01"} for i in range(30)))
    sc = scenario(Thresholds(hard_breaks=0, balance_max_over_mean=1.5))
    assert run(ev, sc).verdict == "fail", "without the limit the check fails the run"
    limited = run(ev, sc, facts=RunFacts("test", started_ts=T0, balancer_limits=[limit]))
    assert limited.totals["hard_breaks"] == 0 and limited.verdict == "invalid"
    assert limited.verdict_reason == (
        f"{limit}; the run's failed balance_max_over_mean may come from that limit (clients that waited sent "
        "fewer requests than planned), not from persistence"
    )


def test_a_cas_that_fell_behind_during_the_load_makes_a_run_with_breaks_invalid():
    """A CAS whose event loop lagged answered late, which a balancer's timer may take for silence: beside
    breaks the run cannot say whose they are; beside none the lag is only a note. Lags outside the load
    (its start-up, the collection of the ledgers) are not the load's."""
    stats = {
        "CAS02": {"loop_lags": [[T0 - 5, 2.0], [T0 + 3, 0.4], [T0 + 7, 1.31], [T0 + 70, 3.0]]},
        "CAS01": {"loop_lags": []},
        "CAS03": {},
    }
    lags = cas_lags(stats, T0, T0 + 60)
    assert lags == ["CAS02's event loop fell behind 2 times during the load, by up to 1.31 s"]
    assert cas_lags(stats, T0 + 10, T0 + 60) == []
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)))
    sc = scenario(Thresholds(hard_breaks=0))
    assert run(ev, sc, facts=RunFacts("test", started_ts=T0, cas_lags=lags)).verdict == "pass"
    ev.loc[3, "outcome"] = "foreign"
    lagged = run(ev, sc, facts=RunFacts("test", started_ts=T0, cas_lags=lags))
    assert lagged.verdict == "invalid"
    assert lagged.verdict_reason == (
        f"{lags[0]}; the run's 1 hard break may come from the lab falling behind (a late answer looks like "
        "silence to a balancer's timers), not from the balancer"
    )


def test_a_planned_client_kind_that_made_no_request_is_a_reason_the_run_is_invalid():
    """`hard_breaks.rpchttp = 0` would hold on no Outlook at all: a kind that never ran is named."""
    sc = dataclasses.replace(
        scenario(),
        populations=(
            Population("direct", "direct", 10, 10, {"browser": 1.0, "outlook2010-rpchttp": 0.5}),
            Population("tenant", "tenant-nat", 4, 1, {"eas-device": 0.1}),
        ),
    )
    ran = events(
        {}, {"client_kind": "outlook2010-rpchttp"}, {"population": "tenant", "client_kind": "eas-device"}
    )
    assert silent_clients_reason(sc, ran) == []
    assert silent_clients_reason(sc, ran[ran["client_kind"] == "browser"]) == [
        "clients the scenario plans made no request at all (5 outlook2010-rpchttp of direct, 1 eas-device of "
        "tenant): the checks of their services would hold on sessions that never ran"
    ]
    assert silent_clients_reason(sc, ran.iloc[0:0]) != []


def test_a_reason_the_run_gives_makes_it_invalid_whatever_its_checks_say():
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)))
    reason = "load generator CPU above 90 % in 17 of 20 samples"
    a = run(ev, facts=RunFacts("test", started_ts=T0, invalid_reasons=[reason]))
    assert all(c.passed for c in a.checks)
    assert (a.verdict, a.verdict_reason, a.invalid_reasons) == ("invalid", reason, [reason])
    assert verdict_line(a) == f"verdict INVALID: {reason}" and EXIT_CODES[a.verdict] == 2


def test_each_verdict_says_why():
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)))
    passed = run(ev, scenario(Thresholds(hard_breaks=0, error_rate_pct=0)))
    assert (passed.verdict, passed.verdict_reason) == ("pass", "all 3 checks held")
    failed = run(ev, scenario(Thresholds(balance_max_over_mean=0.5, error_rate_pct=0)))
    assert failed.verdict == "fail"
    assert failed.verdict_reason == "failed: balance_max_over_mean = 1, must be <= 0.5"
    assert [EXIT_CODES[passed.verdict], EXIT_CODES[failed.verdict]] == [0, 1]
    assert verdict_line(passed) == "verdict PASS: all 3 checks held"


def test_facts_of_runs_from_before_invalid_reasons_keep_their_invalid_note_as_a_reason():
    old = {"driver": "haproxy", "notes": ["invalid run: load generator saturated", "a note"]}
    facts = RunFacts.from_dict(old)
    assert (facts.invalid_reasons, facts.notes) == (["load generator saturated"], ["a note"])
    assert RunFacts.from_dict(facts.to_dict()) == facts
    assert RunFacts.from_dict({"driver": "haproxy"}).run_id == ""


def test_peak_connections_from_the_ledger_unless_the_cas_counted_them():
    ledger = pd.DataFrame(
        {
            "server": ["CAS01", "CAS01", "CAS01", "CAS02", "CAS02"],
            "ts": [T0, T0 + 0.5, T0 + 2, T0, T0 + 0.1],
            "latency_ms": [1000.0, 1000.0, 100.0, 100.0, 100.0],  # CAS02's second starts as its first ends
            "request_id": ["a", "b", "c", "d", "e"],
        }
    )
    ev = events({"request_id": "a"})
    assert run(ev, ledger=ledger).servers["peak_connections"].to_dict() == {
        "CAS01": 2,
        "CAS02": 1,
        "CAS03": 0,
    }
    facts = RunFacts("test", started_ts=T0, server_stats={"CAS01": {"peak_inflight": 7}})
    assert run(ev, facts=facts, ledger=ledger).servers.loc["CAS01", "peak_connections"] == 7


def test_latency_percentiles_leave_transport_failures_out():
    ev = events(
        *({"latency_ms": float(ms)} for ms in range(1, 101)), {"outcome": "transport", "latency_ms": 6e4}
    )
    owa = run(ev).services.loc["owa"]
    assert (owa.p50_ms, owa.p95_ms, owa.p99_ms) == (50.5, 95.05, 99.01)


def test_a_run_where_nothing_was_answered_never_passes():
    a = run(events({"outcome": "transport"}, {"outcome": "transport"}), scenario(Thresholds()))
    assert [(c.name, c.value, c.passed) for c in a.checks] == [("answered_requests", 0, False)]
    assert a.verdict == "fail" and math.isnan(a.balance["max_over_mean"])


def test_a_clean_run_passes_its_thresholds():
    ev = events(*({"user": f"u{i}", "session": f"s{i}", "server": f"CAS0{i % 3 + 1}"} for i in range(30)))
    thresholds = Thresholds(hard_breaks=0, split_sessions_pct=5, balance_max_over_mean=1.1, error_rate_pct=0)
    a = run(ev, scenario(thresholds))
    assert a.verdict == "pass", a.checks
    assert [c.name for c in a.checks] == [
        "answered_requests", "hard_breaks", "split_sessions_pct", "balance_max_over_mean", "error_rate_pct",
    ]  # fmt: skip


def test_event_csv_files_keep_text_as_text(tmp_path):
    ev = events({"request_id": "007", "user": "1"}, {"outcome": "transport", "request_id": "008"})
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    ev.iloc[:1].to_csv(paths[0], index=False)
    ev.iloc[1:].to_csv(paths[1], index=False)
    back = read_events(paths)
    assert back["request_id"].tolist() == ["007", "008"] and back["user"].tolist() == ["1", "u1"]
    assert back["server"].tolist() == ["CAS01", ""]
    assert run(back, ledger=ledger_of(ev)).reconciliation["matched"] == 1


def test_an_empty_event_file_of_a_killed_worker_adds_nothing(tmp_path):
    ev = events({"request_id": "007"})
    paths = [tmp_path / "events-a-7.csv", tmp_path / "events-b-7.csv"]
    ev.to_csv(paths[0], index=False)
    paths[1].touch()  # killed before its first batch
    assert read_events(paths)["request_id"].tolist() == ["007"]


def test_events_without_a_needed_column_are_refused_by_name():
    with pytest.raises(ValueError, match="lack the columns: outcome"):
        run(events({}).drop(columns=["outcome"]), ledger=pd.DataFrame())
