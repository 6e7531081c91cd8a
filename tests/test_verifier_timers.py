"""The verifier's figures for time (DESIGN.md section 13) on small hand-made runs: cuts from both sides,
the ActiveSync heartbeat and Exchange's event-1040 condition, why sessions moved, and the timer checks."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from test_verifier import T0, check, events, ledger_of, run, scenario

from lab.scenario import BalancerSection, Fault, Thresholds
from lab.verifier import RunFacts


def cut(**row: object) -> dict:
    return {"server": "", "status": 0, "outcome": "cut", "detail": "eof", "request_id": "", **row}


def pings(*heartbeats: int, outcome: str = "ok", t0: float = 0) -> list[dict]:
    """An EAS device's Pings, one a second from t0, each asking for its heartbeat."""
    return [
        {"service": "eas", "session": "d1", "t": t0 + i, "outcome": outcome, "detail": f"heartbeat={hb}"}
        for i, hb in enumerate(heartbeats)
    ]


# -- cuts --------------------------------------------------------------------------------------------------


def test_cuts_the_clients_saw_are_counted_per_service_and_are_errors():
    ev = events(
        {"service": "rpchttp"},
        cut(service="rpchttp", detail="eof"),
        cut(service="rpchttp", detail="reset"),
        cut(service="mapi"),
        {"service": "mapi"},
        {"service": "eas", "detail": "heartbeat=540"},
        cut(service="eas", detail="eof heartbeat=840", request_id="p2"),
    )
    a = run(ev)
    assert a.services["cut"].to_dict() == {"eas": 1, "rpchttp": 2, "mapi": 1}
    assert a.services["errors"].to_dict() == {"eas": 1, "rpchttp": 2, "mapi": 1}
    assert a.totals["cut"] == 4 and a.totals["error_rate_pct"] == pytest.approx(100 * 4 / 7, abs=1e-3)
    assert a.reconciliation["cuts"] == 4 and a.reconciliation["unmatched"] == 0  # a cut has no answer
    assert a.timers.cut_timeline.sum().to_dict() == {"eas": 1, "rpchttp": 2, "mapi": 1}


def test_cuts_after_a_keep_alive_the_load_generator_sent_late_make_the_run_invalid():
    """A cut found past its keep-alive's due time by more than the tolerance may be the lab's: the run
    says so instead of blaming the balancer's setting; a cut found in time stays the balancer's."""
    in_time = events({"service": "rpchttp"}, cut(service="rpchttp", detail="eof"))
    a = run(in_time, scenario(Thresholds(cut=0)))
    assert (a.verdict, a.verdict_reason) == ("fail", "failed: cut = 1, must be <= 0")
    late = events(
        {"service": "rpchttp"},
        cut(service="rpchttp", detail="eof keepalive-late=1.20"),
        cut(service="rpchttp", detail="reset keepalive-late=0.31"),
        cut(service="rpchttp", detail="eof"),
    )
    b = run(late, scenario(Thresholds(cut=0)))
    assert b.verdict == "invalid" and b.services["cut"].to_dict()["rpchttp"] == 3
    assert b.verdict_reason == (
        "cuts were found after a keep-alive went out late (2 by the load generator up to 1.20 s late; more "
        "than 0.25 s): the balancer's idle timeout may have run out because the lab fell behind, not because "
        "of its setting"
    )
    # The CAS's side: its OUT ping found the channel gone, past due (its ledger row says by how much).
    rows = ledger_of(in_time)
    out = rows.iloc[[0]].assign(request_id="out1", detail="peer-closed keepalive-late=0.90")
    c = run(in_time, scenario(Thresholds(cut=0)), ledger=pd.concat([rows, out], ignore_index=True))
    assert c.verdict == "invalid" and "(1 by the CAS up to 0.90 s late; more than 0.25 s)" in c.verdict_reason


def test_the_cas_side_of_cuts_counts_peer_closed_rows_that_ended_while_the_load_ran():
    ev = events({"service": "eas"}, {"service": "rpchttp"}, {"service": "mapi"})
    ledger = ledger_of(ev)
    extra = pd.DataFrame(
        [
            # (service, detail, ts after the start, latency ms)
            ("eas", "peer-closed heartbeat=840", 10, 5000.0),  # a Ping cut mid-load
            ("rpchttp", "peer-closed", 5, 1000.0),
            ("rpchttp", "client-gone", 6, 1000.0),  # the word of older ledgers
            ("rpchttp", "partner-closed", 6, 1000.0),  # the other half of a channel pair: not counted
            ("mapi", "peer-closed", 70, 1000.0),  # ended after the load (60 s): its client left
            ("mapi", "goodbye", 30, 1000.0),
        ],
        columns=["service", "detail", "t", "latency_ms"],
    ).assign(ts=lambda f: T0 + f["t"], server="CAS01", request_id="", state="none", status=499, seq=0)
    a = run(ev, ledger=pd.concat([ledger, extra.drop(columns="t")], ignore_index=True))
    assert a.services["cut_seen_by_cas"].to_dict() == {"eas": 1, "rpchttp": 2, "mapi": 0}
    assert a.services["cut"].sum() == 0  # the judged count is what the clients saw


# -- the EAS heartbeat -----------------------------------------------------------------------------------


def test_heartbeat_figures_come_from_what_the_devices_asked_for():
    ev = events(
        *pings(540, 840, 1140),
        *pings(1440, outcome="cut", t0=3),  # a cut Ping still counts: the device asked for it
        *pings(30, outcome="error", t0=4),  # Status 5: the server did not take this heartbeat
        {"service": "eas", "t": 5, "detail": ""},  # a Sync: no heartbeat
    )
    figures = run(ev).timers.eas_heartbeat
    assert figures == {
        "mean_s": 990.0,
        "min_s": 540,
        "max_s": 1440,
        "alert": False,
        "recent_mean_s": 990.0,
        "pings": 4,
    }


def test_the_alert_is_exchanges_event_1040_condition_on_the_last_200_heartbeats():
    early = pings(*[60] * 300)  # devices cut back to short heartbeats early in the run...
    late = pings(*[600] * 200, t0=300)  # ...then long ones: the last 200 say no alert
    assert run(events(*early, *late)).timers.eas_heartbeat["alert"] is False
    assert run(events(*late, *pings(*[60] * 200, t0=200))).timers.eas_heartbeat["alert"] is True
    at_the_threshold = run(events(*pings(540, 540))).timers.eas_heartbeat
    assert at_the_threshold["alert"] is True and at_the_threshold["recent_mean_s"] == 540


def test_a_run_without_pings_has_no_heartbeat_figures():
    assert run(events({"service": "owa"})).timers.eas_heartbeat is None


# -- why sessions moved ------------------------------------------------------------------------------------


def moves(a) -> dict:
    table = a.timers.moves
    return {(s, c): int(n) for s, row in table.iterrows() for c, n in row.items() if n}


def test_a_move_after_an_idle_gap_longer_than_the_persistence_timeout_is_an_expiry():
    # recommended: OWA on a balancer cookie that lives 30 minutes idle, 30 s at time scale 60.
    ev = events(
        {"session": "s1", "t": 0, "server": "CAS01"},
        {"session": "s1", "t": 40, "server": "CAS02", "outcome": "foreign"},  # 40 s idle: the cookie expired
        {"session": "s2", "user": "u2", "t": 1, "server": "CAS03"},
        {"session": "s2", "user": "u2", "t": 20, "server": "CAS01"},  # 19 s: the entry still lived
    )
    a = run(ev)
    assert moves(a) == {("owa", "expired"): 1, ("owa", "other"): 1}
    assert a.timers.move_breaks.loc["owa", "expired"] == 1  # the move logged the user off


def test_the_timeout_the_run_recorded_wins_over_the_scenarios():
    ev = events({"session": "s1", "t": 0, "server": "CAS01"}, {"session": "s1", "t": 20, "server": "CAS02"})
    facts = RunFacts("test", started_ts=T0, persistence_timeouts_s={"owa": 10.0})
    assert moves(run(ev, facts=facts)) == {("owa", "expired"): 1}


def test_a_move_while_the_table_was_full_is_an_eviction():
    # Four users' keys live at once in a table of two: u1's entry went, though it was idle only 5 s.
    others = [{"session": f"s{i}", "user": f"u{i}", "t": i, "server": "CAS03"} for i in (2, 3, 4)]
    ev = events(
        {"session": "s1", "t": 0, "server": "CAS01"}, *others, {"session": "s1", "t": 5, "server": "CAS02"}
    )
    facts = RunFacts("test", started_ts=T0, persistence_table_size=2)
    assert moves(run(ev, facts=facts)) == {("owa", "evicted"): 1}
    big_enough = RunFacts("test", started_ts=T0, persistence_table_size=4)
    assert moves(run(ev, facts=big_enough)) == {("owa", "other"): 1}


def test_source_ip_entries_are_kept_alive_by_any_session_from_the_address():
    # MAPI by source address (recommended): u1 idle 40 s, but u2 from the same address kept the entry.
    ev = events(
        {"service": "mapi", "session": "s1", "t": 0, "server": "CAS01"},
        {"service": "mapi", "session": "s2", "user": "u2", "t": 20, "server": "CAS01"},
        {"service": "mapi", "session": "s1", "t": 40, "server": "CAS02"},
    )
    assert moves(run(ev)) == {("mapi", "other"): 1}


def test_a_move_away_from_a_failed_cas_and_back_to_it_is_put_down_to_the_failure():
    faults = (Fault(10, "CAS01", "stop"), Fault(20, "CAS01", "start"))
    ev = events(
        {"session": "s1", "t": 5, "server": "CAS01"},
        {"session": "s1", "t": 12, "server": "CAS02"},  # CAS01 stopped at 10 s
        {"session": "s1", "t": 25, "server": "CAS01"},  # ...and came back at 20 s
    )
    assert moves(run(ev, scenario(faults=faults))) == {("owa", "cas-failed"): 2}


def test_a_move_without_persistence_is_put_down_to_the_method():
    sc = dataclasses.replace(scenario(), balancer=BalancerSection(preset="none-all"))
    ev = events({"session": "s1", "t": 0, "server": "CAS01"}, {"session": "s1", "t": 1, "server": "CAS02"})
    assert moves(run(ev, sc)) == {("owa", "no-persistence"): 1}


# -- the checks ---------------------------------------------------------------------------------------------


def test_cut_limits_are_checks_in_total_and_per_service():
    ev = events({"service": "eas"}, cut(service="rpchttp"), cut(service="rpchttp"), cut(service="mapi"))
    total = run(ev, scenario(Thresholds(cut=3)))
    assert (check(total, "cut").value, check(total, "cut").passed) == (3, True)
    each = run(ev, scenario(Thresholds(cut={"rpchttp": 1, "mapi": 1, "eas": 0})))
    assert [(c.name, c.value, c.passed) for c in each.checks[1:]] == [
        ("cut.rpchttp", 2, False),
        ("cut.mapi", 1, True),
        ("cut.eas", 0, True),
    ]


def test_eas_heartbeat_alert_false_fails_the_run_when_the_condition_holds():
    no_alert = Thresholds(eas_heartbeat_alert=False)
    short = run(events(*pings(60, 60, 360)), scenario(no_alert))
    assert (check(short, "eas_heartbeat_alert").value, short.verdict) == (1, "fail")
    long = run(events(*pings(840, 1140)), scenario(no_alert))
    assert (check(long, "eas_heartbeat_alert").value, long.verdict) == (0, "pass")
    nothing = run(events({"service": "owa"}), scenario(no_alert))
    assert not check(nothing, "eas_heartbeat_alert").passed  # no Ping: nothing to vouch for
    allowed = run(events(*pings(60)), scenario(Thresholds(eas_heartbeat_alert=True)))
    assert check(allowed, "eas_heartbeat_alert").passed
