"""The bundled scenarios give their known answers (DESIGN.md section 12) on real balancers.

Each test runs `caslab run` through the real command line in a subprocess (Locust never enters the
pytest process), then checks the verdict (the exit code) and the figures in summary.json that make it,
plus the client events where a figure alone cannot say which break it was. Every run must also
reconcile: each client event is matched to its CAS's ledger row, or counted as a transport failure, an
answer of the balancer itself, an exchange inside an open connection, or a request a stopped CAS held.

The runs use the lab's default layout (CAS on 127.0.1.11.., VIP 127.0.1.1, clients on 127.64+.x.y), so
only one may go on at a time on this machine. `--duration` keeps each run as short as its known answer
allows: the RPC/HTTP pairing wait (10 s, not time-scaled) sets the floor for scenarios whose answer is
a split channel pair.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest

from lab.balancers.process import listening_sockets
from lab.model import Vip, local_farm
from lab.scenario import SCENARIO_DIR

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 180
LAB_ADDRESSES = {Vip().host} | {cas.host for cas in local_farm(3)}
RETURN_MARGIN_S = 3.0  # for the balancer to see a returned CAS healthy (probes every 0.5 s, rise 2)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    folder: Path | None

    @property
    def summary(self) -> dict:
        assert self.folder is not None, f"no run folder; stderr:\n{self.stderr}"
        return json.loads((self.folder / "summary.json").read_text())

    def events(self) -> pd.DataFrame:
        assert self.folder is not None
        return pd.read_parquet(self.folder / "events.parquet")

    def started_ts(self) -> float:
        """When the load began (epoch seconds): the origin of the fault times in summary.json."""
        assert self.folder is not None
        return json.loads((self.folder / "facts.json").read_text())["facts"]["started_ts"]

    def failed_checks(self) -> set[str]:
        return {c["name"] for c in self.summary["checks"] if not c["pass"]}

    def service(self, name: str) -> dict:
        return self.summary["services"].get(name, {"requests": 0, "hard_breaks": 0, "soft_breaks": 0})


def command(scenario: str, out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "lab.cli", "run", scenario, "--out", str(out), *options]


def caslab_run(out: Path, scenario: str, *options: str) -> Run:
    done = subprocess.run(
        command(scenario, out, *options), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=REPO
    )
    folders = sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []
    return Run(done.returncode, done.stdout, done.stderr, folders[-1] if folders else None)


def expect_verdict(run: Run, code: int) -> dict:
    """The run ended with `code`, as a valid run (not marked invalid), and reconciles; its summary."""
    if run.code != code:
        figures = ""
        if run.folder and (run.folder / "summary.json").is_file():
            failed = [c for c in run.summary["checks"] if not c["pass"]]
            figures = f"failed checks {failed}\ntotals {run.summary['totals']}\nin {run.folder}\n"
        pytest.fail(f"exit {run.code}, expected {code}\n{figures}{run.stdout}\n{run.stderr[-3000:]}")
    summary = run.summary
    assert summary["verdict"] == ("pass" if code == 0 else "fail")
    # Nothing to note but what the driver says of itself (Envoy's and Traefik's balancer cookie) and
    # what the lab read in a user's own file (lab.candidate: its notes are the run's too).
    adoption = run.folder / "balancer" / "adoption.json"
    read = json.loads(adoption.read_text())["notes"] if adoption.is_file() else []
    notes = [
        n for n in summary["notes"] if " does not expire its balancer cookie " not in n and n not in read
    ]
    assert notes == [], summary["notes"]
    assert_reconciled(summary["reconciliation"], run.events())
    return summary


def assert_reconciled(r: dict, events: pd.DataFrame) -> None:
    """Every event is accounted for once, and none is left unexplained: an event with a request id is
    matched to its ledger row, or got no answer (transport, or a held request cut), or the balancer's
    own answer, or was open on a CAS a fault stopped; events without one are exchanges inside an open
    connection (and cuts of channels and connections)."""
    unexplained = {k: r[k] for k in ("unmatched", "unknown_outcome", "server_differs") if r[k]}
    assert not unexplained, f"unexplained events: {unexplained} in {r}"
    with_id = events["request_id"] != ""
    transport_unseen = int((with_id & (events["outcome"] == "transport")).sum()) - r["transport_seen_by_cas"]
    cuts_unseen = int((with_id & (events["outcome"] == "cut")).sum()) - r["cuts_seen_by_cas"]
    accounted = (
        r["matched"] + transport_unseen + cuts_unseen + r["answered_by_balancer"] + r["lost_with_stopped_cas"]
    )
    assert (accounted, r["without_request_id"]) == (int(with_id.sum()), int((~with_id).sum())), r
    assert r["matched"] > 0 and r["events"] == len(events)


def top_share(summary: dict, population: str) -> float:
    return max(summary["populations"][population]["shares"].values())


def details(events: pd.DataFrame, service: str) -> set[str]:
    """What the client saw of each hard break of a service."""
    return set(events.loc[(events["service"] == service) & (events["outcome"] == "foreign"), "detail"])


# ---- the known answers -----------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["haproxy", "envoy", "nginx"])
def test_source_ip_all_puts_the_whole_nat_tenant_on_one_cas(tmp_path, driver):
    run = caslab_run(tmp_path, "hosted-tenant-source-ip", "--driver", driver, "--duration", "6s")
    summary = expect_verdict(run, 1)
    assert run.failed_checks() == {"balance_max_over_mean"}
    assert top_share(summary, "tenant-nat") >= 0.99, summary["populations"]
    assert top_share(summary, "direct") < 0.7, summary["populations"]  # one address each: spread
    assert summary["balance"]["max_over_mean"] >= 1.8 and summary["balance"]["exceeds_random"]
    assert summary["totals"]["hard_breaks"] == 0


@pytest.mark.parametrize("driver", ["haproxy", "envoy", "nginx"])
def test_recommended_spreads_the_same_tenant_with_no_hard_break(tmp_path, driver):
    run = caslab_run(tmp_path, "hosted-tenant-recommended", "--driver", driver, "--duration", "6s")
    summary = expect_verdict(run, 0)
    assert summary["totals"]["hard_breaks"] == 0
    assert top_share(summary, "tenant-nat") < 0.6, summary["populations"]
    assert summary["services"]["eas"]["split_sessions"] == 0
    assert summary["services"]["rpchttp"]["split_sessions"] == 0


@pytest.mark.parametrize("driver", ["haproxy", "envoy", "nginx"])
def test_lb_cookie_all_splits_eas_devices_and_outlook_2007_channel_pairs(tmp_path, driver):
    run = caslab_run(tmp_path, "lb-cookie-everything", "--driver", driver, "--duration", "12s")
    summary = expect_verdict(run, 1)
    assert run.failed_checks() == {"hard_breaks", "split_sessions_pct.eas"}
    eas = run.service("eas")
    assert eas["split_pct"] >= 50 and eas["soft_breaks"] > 0 and eas["hard_breaks"] == 0
    assert summary["totals"]["hard_breaks"] == run.service("rpchttp")["hard_breaks"] > 0
    events = run.events()
    assert details(events, "rpchttp") == {"channel-split"}
    split_by = events.loc[(events["service"] == "rpchttp") & (events["outcome"] == "foreign"), "client_kind"]
    assert set(split_by) == {"outlook2007-rpchttp"}  # Outlook 2010 returns the cookie on its channels


@pytest.mark.parametrize(
    ("driver", "preset"),
    [("haproxy", "source-ip-all"), ("haproxy", "recommended"), ("envoy", "source-ip-all"),
     ("envoy", "recommended"), ("nginx", "source-ip-all")],
)  # fmt: skip
def test_phones_changing_address_move_under_source_ip_and_stay_on_authorization(tmp_path, driver, preset):
    run = caslab_run(
        tmp_path, "mobile-carrier-churn", "--driver", driver, "--preset", preset, "--duration", "6s"
    )
    eas = run.service("eas")
    if preset == "source-ip-all":
        expect_verdict(run, 1)
        assert run.failed_checks() == {"split_sessions_pct.eas"}
        assert eas["split_pct"] >= 25 and eas["soft_breaks"] > 0  # a move keeps the CAS 1 time in 3
    else:
        expect_verdict(run, 0)
        assert eas["split_sessions"] == 0 and eas["soft_breaks"] == 0
    assert eas["hard_breaks"] == 0 and eas["requests"] > 100


@pytest.mark.parametrize("driver", ["haproxy", "envoy", "nginx"])
def test_citrix_sessions_on_one_address_skew_while_intranet_users_spread(tmp_path, driver):
    run = caslab_run(tmp_path, "citrix-mapi", "--driver", driver, "--duration", "6s")
    summary = expect_verdict(run, 1)
    assert run.failed_checks() == {"balance_max_over_mean"}
    assert top_share(summary, "citrix") >= 0.75 and top_share(summary, "intranet") < 0.6
    events = run.events()
    citrix_mapi = events[(events["population"] == "citrix") & events["service"].isin(["mapi", "addressbook"])]
    assert citrix_mapi["server"].nunique() == 1  # the one address's CAS carries every Citrix session
    assert summary["totals"]["hard_breaks"] == 0


@pytest.mark.parametrize("driver", ["haproxy", "envoy", "nginx"])
def test_round_robin_logs_owa_off_loses_ews_subscriptions_and_splits_rpc_pairs(tmp_path, driver):
    run = caslab_run(tmp_path, "round-robin", "--driver", driver, "--duration", "12s")
    summary = expect_verdict(run, 1)
    assert run.failed_checks() == {"hard_breaks"}
    events = run.events()
    # Browsers rarely get past the logon itself (its last page lands elsewhere), so ECP is seldom reached.
    assert details(events, "owa") & {"sent to the logon page", "440 login timeout"}
    assert details(events, "ews") == {"ErrorSubscriptionNotFound"}
    assert details(events, "rpchttp") == {"channel-split"}
    assert summary["balance"]["max_over_mean"] <= 1.1  # even load is not enough


# Where each driver's users of the recommended preset go once the stopped CAS is back: hashed keys lead back
# to it (a second move), learned ones (stick tables) stay where the user moved. Balancer cookies stay on
# every driver. Outlook Anywhere is not among them: Outlook notices at once that its channels died with
# the CAS (it reads OUT all along), opens new ones on another CAS during the outage and holds them, so it
# stays there while connected, whatever the method; a hashed Outlook goes back only at its next reconnect.
MOVE_BACK = {"haproxy": (), "envoy": ("eas",), "nginx": ("eas",)}
STAY = {"haproxy": ("eas",), "envoy": (), "nginx": ()}


def placements_after_return(run: Run, outage: dict, service: str) -> pd.Series:
    """The CAS that took each new request (an RPC/HTTP channel, an EAS command) of `service` that a
    session of the stopped CAS made after it returned."""
    events = run.events()
    t0 = run.started_ts()
    answered = events[(events["service"] == service) & (events["server"] != "")].sort_values("ts")
    home = answered[answered["ts"] < t0 + outage["at_s"]].groupby("session")["server"].last()
    its_own = answered["session"].isin(home.index[home == outage["server"]])
    later = answered["ts"] >= t0 + outage["back_at_s"] + RETURN_MARGIN_S
    return answered.loc[its_own & later & (answered["request_id"] != ""), "server"]


@pytest.mark.parametrize("driver", ["haproxy", "envoy", "nginx"])
def test_a_stopped_cas_breaks_only_its_own_sessions_and_who_moves_back(tmp_path, driver):
    run = caslab_run(tmp_path, "cas-failure", "--driver", driver)
    summary = expect_verdict(run, 0)
    (outage,) = summary["faults"]
    assert (outage["server"], outage["action"], outage["back_action"]) == ("CAS02", "stop", "start")
    assert outage["sessions_on_server"] > 0 and outage["sessions_lost"] > 0
    assert outage["sessions_moved"] > 0 and outage["collateral_sessions"] == 0
    after = outage["after_return"]["by_service"]
    # OWA and ECP share one balancer cookie, rewritten to the CAS the user moved to: they stay there.
    assert after["owa"]["stayed"] > 0, after
    assert all(after.get(s, {}).get("moved_back", 0) == 0 for s in ("owa", "ecp")), after
    for service in MOVE_BACK[driver]:
        cas = placements_after_return(run, outage, service)
        assert len(cas) > 0 and set(cas) == {"CAS02"}, (service, cas.value_counts())
    for service in STAY[driver]:
        cas = placements_after_return(run, outage, service)
        assert len(cas) > 0 and "CAS02" not in set(cas), (service, cas.value_counts())
    # Connected Outlooks keep the channels they reopened during the outage: most stay (one that reconnects
    # after the return goes where its method sends it).
    assert after["rpchttp"]["stayed"] > after["rpchttp"]["moved_back"], after


def test_tls13_session_ids_never_hold_a_client_on_one_cas(tmp_path):
    run = caslab_run(tmp_path, "ssl-session-id-tls13", "--driver", "haproxy", "--duration", "12s")
    summary = expect_verdict(run, 1)
    assert "hard_breaks" in run.failed_checks()
    rpchttp = run.service("rpchttp")
    # Each channel of a pair is a new TLS connection with a fresh session ID: placed anew, apart.
    assert rpchttp["hard_breaks"] > 0 and rpchttp["split_pct"] >= 50
    assert details(run.events(), "rpchttp") == {"channel-split"}
    assert summary["balancer"]["methods"]["rpchttp"].startswith("ssl-session-id")


def test_tls12_clients_resuming_by_session_id_stay_on_one_cas(tmp_path):
    """The same scenario with clients that offer TLS 1.2 at most: each resumes its session by ID (the
    IN channel the OUT channel's), HAProxy sticks on the ID, and persistence holds."""
    text = (SCENARIO_DIR / "ssl-session-id-tls13.toml").read_text()
    text = text.replace('tls = "passthrough"', 'tls = "passthrough"\ntls_max_version = "1.2"')
    text = text.replace('expect = "fail"', 'expect = "pass"').replace(
        'name = "ssl-session-id-tls13"', 'name = "tls12"'
    )
    scenario = tmp_path / "ssl-session-id-tls12.toml"
    scenario.write_text(text)
    run = caslab_run(tmp_path / "out", str(scenario), "--duration", "12s")
    summary = expect_verdict(run, 0)
    assert summary["farm"]["tls_max_version"] == "1.2"
    rpchttp = run.service("rpchttp")
    assert rpchttp["sessions"] > 0 and rpchttp["hard_breaks"] == 0 and rpchttp["split_pct"] == 0


def test_quickstart_passes_on_the_default_driver(tmp_path):
    run = caslab_run(tmp_path, "quickstart", "--duration", "6s")
    summary = expect_verdict(run, 0)
    assert summary["balancer"]["driver"] == "envoy"
    assert summary["totals"]["hard_breaks"] == 0
    assert set(summary["populations"]) == {"tenant-nat", "mobile-carrier", "intranet", "citrix", "direct"}
    assert set(run.events()["client_kind"]) == {
        "browser", "outlook2010-rpchttp", "outlook2007-rpchttp", "outlook-mapi", "eas-device", "ews-app",
    }  # fmt: skip


# ---- runs that cannot go -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "options", "refusal"),
    [
        ("ssl-session-id-tls13", ["--driver", "nginx"], "cannot key on the TLS session ID"),
        ("hosted-tenant-recommended", ["--driver", "nginx", "--preset", "article"], "nginx OSS cannot learn"),
    ],
)
def test_nginx_refuses_what_it_cannot_express_before_starting_anything(tmp_path, scenario, options, refusal):
    run = caslab_run(tmp_path, scenario, *options)
    assert run.code == 2 and run.folder is None
    assert refusal in run.stderr and "driver nginx refuses" in run.stderr


def test_a_scenario_typo_exits_2_naming_the_file_and_the_key(tmp_path):
    text = (SCENARIO_DIR / "quickstart.toml").read_text().replace('preset = "recommended"', 'presett = "x"')
    path = tmp_path / "typo.toml"
    path.write_text(text)
    run = caslab_run(tmp_path / "out", str(path))
    assert run.code == 2 and run.folder is None
    assert f"{path}: balancer.presett: unknown key; did you mean 'preset'?" in run.stderr


@pytest.mark.parametrize("driver", ["haproxy", "envoy"])
def test_ctrl_c_leaves_no_process_behind_and_exits_2(tmp_path, driver):
    proc = subprocess.Popen(
        command("quickstart", tmp_path, "--driver", driver),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
        # Python turns SIGINT into KeyboardInterrupt only if it was not ignored when it started, and a
        # shell starts background jobs (a CI script's `cmd &`) with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    watchdog = threading.Timer(RUN_TIMEOUT_S, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        # Progress lines; the load is running once one names the ramp or the load phase.
        loading = any(line.startswith(("phase: ramp", "phase: load")) for line in proc.stderr)
        assert loading, "the run never reached its load phase"
        children = psutil.Process(proc.pid).children(recursive=True)
        names = {c.name() for c in children}
        assert driver in names and len([c for c in children if "cas" in c.cmdline()]) == 3, names
        proc.send_signal(signal.SIGINT)
        out, _err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 2
    assert "interrupted; tearing the lab down" in out
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [c.cmdline() for c in alive]
    assert not {host for host, _port in listening_sockets()} & LAB_ADDRESSES


def test_a_balancer_that_dies_during_the_load_makes_the_run_invalid(tmp_path):
    """Requests after the balancer died fail for the lab's reason: the run is INVALID and says why, not a
    FAIL on error rate that blames the persistence."""
    proc = subprocess.Popen(
        command("quickstart", tmp_path, "--driver", "haproxy", "--duration", "2s"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    watchdog = threading.Timer(RUN_TIMEOUT_S, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        loading = any(line.startswith("phase: load") for line in proc.stderr)
        assert loading, "the run never reached its load phase"
        [haproxy] = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.name() == "haproxy"]
        haproxy.kill()
        out, _err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 2, out
    [folder] = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] == "invalid"
    assert any(
        r.startswith("the balancer did not run throughout the load: haproxy exited") and "(its log: " in r
        for r in summary["invalid_reasons"]
    ), summary["invalid_reasons"]
