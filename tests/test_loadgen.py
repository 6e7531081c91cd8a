"""The load generator end to end: caslab's client kinds and populations against a real local farm,
directly and through HAProxy, read back from the client event log and the CAS ledgers.

Locust patches the whole process with gevent when imported, so Locust never runs in this process:
tests/loadgen_driver.py (walk every flow of each kind, or the lab's library mode) and Locust's own
command line run as subprocesses. Addresses (this part's block): CAS on 127.0.21.11-13, the HAProxy
VIP and the Locust master on 127.0.21.1; clients on 127.64+.x.y (loadgen.addresses).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import mockcas  # noqa: F401 - before aiohttp anywhere (the CAS processes need the pure-Python parser)
from caslab.records import EVENT_COLUMNS
from lab.balancers import get_driver
from lab.balancers.presets import resolve
from lab.balancers.process import listening_sockets
from lab.farm import LocalFarm
from lab.model import BalancerSpec, HealthCheck, Vip, local_farm
from lab.scenario import parse_scenario
from loadgen.addresses import AddressPlan, address
from loadgen.selfcheck import CPU_PEGGED, LAG_LIMIT_S, STALL_S, saturation

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "loadgen_driver.py"
TIME_SCALE = 240  # OWA idle expiry 3.75 s, a phone's Ping 2 s, a new mail per phone every 2.5 s
WALK_RUN = "walk-run-1"  # the run id of the direct walk's plan
SERVERS = local_farm(3, "127.0.21")
CAS01 = f"http://{SERVERS[0].host}:{SERVERS[0].http_port}"
VIP = Vip("127.0.21.1")
VIP_URL = f"http://{VIP.host}:{VIP.http_port}"
NOWHERE = "http://127.0.21.99:8080"  # nothing listens there
KINDS = ("browser", "outlook2010-rpchttp", "outlook2007-rpchttp", "outlook-mapi", "eas-device", "ews-app")
OUTLOOK_HTTP = {
    "autodiscover POST /Autodiscover/Autodiscover.xml",
    "ews GetUserAvailability",
    "oab manifest",
    "oab file range",
}
RPC_CHANNELS = {
    f"rpchttp {method} :{port}" for method in ("RPC_OUT_DATA", "RPC_IN_DATA") for port in (6001, 6004)
}
# Every step of each kind's flows, as Locust request names (DESIGN.md section 4).
FLOWS = {
    "browser": {
        "owa home (logged off)",
        "owa GET /owa/auth/logon.aspx",
        "owa POST /owa/auth.owa",
        "owa home",
        "owa folder page",
        "owa ev.owa",
        "ecp home",
        "ecp .svc call",
    },
    "outlook2010-rpchttp": OUTLOOK_HTTP | RPC_CHANNELS,
    "outlook2007-rpchttp": OUTLOOK_HTTP | RPC_CHANNELS,
    "outlook-mapi": OUTLOOK_HTTP
    | {"mapi logon", "mapi connect", "ab bind", "mapi rop", "ab resolve", "mapi bye", "ab bye"},
    "eas-device": {
        "autodiscover POST /Autodiscover/Autodiscover.xml",
        "eas OPTIONS",
        "eas Provision",
        "eas FolderSync",
        "eas Sync",
        "eas Ping",
    },
    "ews-app": {"ews Subscribe", "ews GetEvents", "ews FindItem"},
}
# Services whose state lives on one CAS, per kind: with persistence that works they stay on one CAS.
# (Outlook 2007 keeps no cookies, so its stateless EWS free/busy calls may go anywhere.)
STATEFUL = {
    "browser": {("owa", "ecp")},
    "outlook2010-rpchttp": {("rpchttp",), ("ews",)},
    "outlook2007-rpchttp": {("rpchttp",)},
    "outlook-mapi": {("mapi", "addressbook"), ("ews",)},
    "eas-device": {("eas",)},
    "ews-app": {("ews",)},
}


# -- helpers --------------------------------------------------------------------------------------------


def read_events(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == EVENT_COLUMNS
        return list(reader)


def drive(*args: str, timeout: float = 120) -> dict:
    """Run tests/loadgen_driver.py; its JSON answer."""
    done = subprocess.run(
        [sys.executable, str(DRIVER), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def walk(tmp_path: Path, host: str, kinds=KINDS, **options: object) -> tuple[dict, list[dict]]:
    """One user of each kind walks all its flows (see loadgen_driver.py); (answer, events)."""
    events = tmp_path / "walk.csv"
    args = ["walk", "--host", host, "--events", str(events), "--kinds", ",".join(kinds)]
    args += ["--time-scale", str(TIME_SCALE)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    answer = drive(*args)
    return answer, read_events(events)


def locust(tmp_path: Path, scenario: str, host: str, seconds: int, *extra: str) -> tuple[int, int]:
    """Locust's own command line on lab/locustfile.py, headless, with every user of `scenario`;
    (its exit code, the requests Locust counted). The event log goes to tmp_path/events*.csv."""
    (tmp_path / "scenario.toml").write_text(scenario)
    users = sum(sum(p.client_counts().values()) for p in parse_scenario(scenario).populations)
    env = {**os.environ, "CASLAB_SCENARIO": str(tmp_path / "scenario.toml")}
    env["CASLAB_EVENTS"] = str(tmp_path / "events.csv")
    command = [sys.executable, "-m", "locust", "-f", "lab/locustfile.py", "--headless", "--host", host]
    command += ["-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--only-summary"]
    # The final stats as JSON (Locust adds ".json"); its --csv files lag up to a second behind.
    command += ["--json-file", str(tmp_path / "locust"), *extra]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60)
    assert (tmp_path / "locust.json").exists(), done.stderr[-3000:]
    stats = json.loads((tmp_path / "locust.json").read_text())
    return done.returncode, sum(entry["num_requests"] for entry in stats)


def scenario_text(populations: str) -> str:
    return f"""
name = "loadgen-test"
duration = "10s"
time_scale = {TIME_SCALE}
[farm]
servers = 3
[balancer]
driver = "haproxy"
preset = "recommended"
{populations}
"""


def by_request_id(ledger: list[dict]) -> dict[str, dict]:
    rows = {}
    for row in ledger:
        if row["request_id"]:
            assert row["request_id"] not in rows, f"two ledger rows for request {row['request_id']}"
            rows[row["request_id"]] = row
    return rows


def not_ok(events: list[dict]) -> list[tuple]:
    return [(e["client_kind"], e["service"], e["status"], e["outcome"], e["detail"]) for e in events
            if e["outcome"] != "ok"]  # fmt: skip


def servers_per_session(events: list[dict]) -> dict[tuple, set[str]]:
    """The CAS that served each (session, stateful service group), for the groups of STATEFUL."""
    seen: dict[tuple, set[str]] = defaultdict(set)
    for e in events:
        for group in STATEFUL[e["client_kind"]]:
            if e["service"] in group and e["server"]:
                seen[(e["session"], group)].add(e["server"])
    return seen


# -- the farm and the balancer --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> Iterator[LocalFarm]:
    # Another process on these addresses (another run of this file) would answer the farm's health
    # checks and share its ledgers: say so plainly instead of failing somewhere later.
    ours = {(s.host, port) for s in SERVERS for port in (s.http_port, s.mapi_port, s.ab_port, s.admin_port)}
    taken = ours & listening_sockets()
    assert not taken, f"{sorted(taken)} in use by another process (another run of tests/test_loadgen.py?)"
    farm = LocalFarm(
        SERVERS,
        farm_key=secrets.token_bytes(32),
        run_dir=tmp_path_factory.mktemp("loadgen-farm"),
        time_scale=TIME_SCALE,
    )
    farm.start()
    try:
        yield farm
    finally:
        farm.stop()


@pytest.fixture
def ledger(farm: LocalFarm):
    """`ledger()`: the rows the farm's CAS recorded since the test began."""
    farm.collect_ledger()

    def rows() -> list[dict]:
        return farm.collect_ledger()

    return rows


@contextmanager
def haproxy(preset: str, run_dir: Path) -> Iterator[None]:
    """HAProxy on the VIP with `preset`, once a request through it has reached every CAS."""
    spec = BalancerSpec(
        "haproxy", resolve(preset), SERVERS, VIP, health=HealthCheck(interval_s=0.5), preset=preset
    )
    driver = get_driver(spec, run_dir)
    try:
        driver.start()
        driver.wait_ready(20)
        seen: set[str] = set()
        deadline = time.monotonic() + 10
        while seen != {s.name for s in SERVERS}:
            assert time.monotonic() < deadline, f"only {seen} answered through the VIP"
            request = urllib.request.Request(
                VIP_URL + "/owa/auth/logon.aspx", headers={"Connection": "close"}
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    seen.add(response.headers.get("X-CasLab-Server", ""))
            except OSError:
                time.sleep(0.05)
        yield
    finally:
        driver.stop()


# -- every kind, directly on one CAS ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def direct_walk(farm: LocalFarm, tmp_path_factory) -> tuple[dict, list[dict], list[dict]]:
    """Every kind walks its flows against CAS01 directly: (driver answer, events, CAS01's new ledger)."""
    farm.collect_ledger()
    answer, events = walk(tmp_path_factory.mktemp("direct-walk"), CAS01, run_id=WALK_RUN)
    return answer, events, [row for row in farm.collect_ledger() if row["server"] == "CAS01"]


def test_each_kind_completes_its_flows_with_zero_errors_on_one_cas(direct_walk):
    answer, events, _ledger = direct_walk
    for kind in KINDS:
        assert FLOWS[kind] <= set(answer["names"][kind]), (
            f"{kind} missed {FLOWS[kind] - set(answer['names'][kind])}"
        )
    assert not_ok(events) == []
    assert {e["server"] for e in events} == {"CAS01"}
    assert {e["client_kind"] for e in events} == set(KINDS)


def test_every_request_fires_the_request_event_and_lands_in_the_log_with_its_server(direct_walk):
    answer, events, ledger = direct_walk
    assert "" not in answer["names"]  # every request a kind makes carries its caslab context
    assert answer["events"] == len(events) == sum(len(names) for names in answer["names"].values())
    rows = by_request_id(ledger)
    logged = [e for e in events if e["request_id"]]
    assert len({e["request_id"] for e in logged}) == len(logged)
    for e in logged:
        row = rows.get(e["request_id"])
        assert row is not None, f"no ledger row for {e}"
        assert (row["server"], row["client_ip"]) == (e["server"], e["source_ip"])
    # ...and the other way round: the CAS saw no request from the walk that the log lacks.
    walk_address = address(0, 0)
    assert {r for r, row in rows.items() if row["client_ip"] == walk_address} == {
        e["request_id"] for e in logged
    }
    # Requests without an id are what happens inside an RPC/HTTP channel (no ledger row of their own).
    assert {e["service"] for e in events if not e["request_id"]} == {"rpchttp"}


def test_every_request_of_every_kind_carries_the_run_id_of_its_plan(direct_walk):
    _answer, events, ledger = direct_walk
    walk_address = address(0, 0)
    rows = [row for row in ledger if row["client_ip"] == walk_address]
    assert {row["service"] for row in rows} == {e["service"] for e in events}  # HTTP, RPC/HTTP, MAPI, AB
    assert {row["run_id"] for row in rows} == {WALK_RUN}


def test_requests_that_reach_no_cas_are_transport_failures(tmp_path):
    kinds = ("browser", "outlook2007-rpchttp", "outlook-mapi", "eas-device", "ews-app")
    _answer, events = walk(tmp_path, NOWHERE, kinds, rounds=1)
    assert {e["client_kind"] for e in events} == set(kinds)
    assert {(e["outcome"], e["server"]) for e in events} == {("transport", "")}
    # No HTTP status; the MAPI client's "no reply" is -1 (its protocol's 0 means ok).
    assert {(e["service"] in ("mapi", "addressbook"), e["status"]) for e in events} == {
        (False, "0"),
        (True, "-1"),
    }


def test_a_phone_that_gets_no_answer_waits_before_it_tries_again(tmp_path):
    # Direct Push sends the next Ping at once; a refused connection must not turn that into a hot loop.
    (tmp_path / "scenario.toml").write_text(
        scenario_text('[[population]]\nkind = "mobile-carrier"\nusers = 2')
    )
    answer = drive(
        "run", "--scenario", str(tmp_path / "scenario.toml"), "--host", NOWHERE,
        "--events", str(tmp_path / "events.csv"), "--seconds", "3",
    )  # fmt: skip
    events = read_events(tmp_path / "events.csv")
    assert answer["requests"] == len(events) > 0
    assert {e["outcome"] for e in events} == {"transport"}
    per_device = Counter(e["session"] for e in events)
    # A think time between tries (1.2 s on average here): a handful each, not thousands.
    assert len(per_device) == 2 and max(per_device.values()) < 40, per_device


def test_a_client_whose_own_code_raises_is_counted_with_its_kind_and_error(tmp_path):
    """Locust stops a user whose on_start raised, silently but for its user_error event: the load result
    counts each such error and names the first, which makes the run invalid (lab/run.py)."""
    (tmp_path / "scenario.toml").write_text(
        scenario_text('[[population]]\nkind = "mobile-carrier"\nusers = 2')
    )
    answer = drive(
        "run", "--scenario", str(tmp_path / "scenario.toml"), "--host", NOWHERE,
        "--events", str(tmp_path / "events.csv"), "--seconds", "1", "--raise-in", "eas-device",
    )  # fmt: skip
    assert answer["client_errors"] == 2 and answer["requests"] == 0
    assert answer["client_error"] == "eas-device: RuntimeError: a bug in on_start"


# -- populations through Locust's own command line, and the library mode ----------------------------------


def test_locustfile_headless_nat_population_is_one_address_and_intranet_many(farm, ledger, tmp_path):
    scenario = scenario_text("""
[[population]]
kind = "tenant-nat"
users = 4
source_ips = 1
clients = { browser = 0.5, outlook2010-rpchttp = 0.5, eas-device = 0.5 }
[[population]]
kind = "intranet"
users = 4
clients = { outlook-mapi = 1.0, browser = 0.5, ews-app = 0.5 }
""")
    code, locust_requests = locust(tmp_path, scenario, CAS01, 6)
    assert code == 0
    events = read_events(tmp_path / "events.csv")
    assert locust_requests == len(events) > 0
    assert not_ok(events) == []
    rows = by_request_id(ledger())
    ips: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e["request_id"]:
            assert rows[e["request_id"]]["client_ip"] == e["source_ip"]
            ips[e["population"]].add(rows[e["request_id"]]["client_ip"])
    assert ips["tenant-nat"] == {address(0, 0)}
    assert ips["intranet"] == {address(1, n) for n in range(4)}


def test_mobile_devices_change_address_on_schedule(farm, ledger, tmp_path):
    # 4 minutes of Exchange time between moves: one second here.
    mobile = '[[population]]\nkind = "mobile-carrier"\nusers = 4\nsource_ips = 4\nip_change_every = "4m"'
    (tmp_path / "scenario.toml").write_text(scenario_text(mobile))
    answer = drive(
        "run", "--scenario", str(tmp_path / "scenario.toml"), "--host", CAS01,
        "--events", str(tmp_path / "events.csv"), "--seconds", "6",
    )  # fmt: skip
    events = read_events(tmp_path / "events.csv")
    assert answer["requests"] == answer["events"] == len(events) > 0
    assert not_ok(events) == []
    plan = AddressPlan(0, "mobile-carrier", users=4, source_ips=4, change_every_s=1.0)
    rows = by_request_id(ledger())
    seen: dict[str, set[str]] = defaultdict(set)
    for e in events:
        user = int(e["user"].removeprefix("user").split("@")[0]) - 1
        t = float(e["ts"]) - answer["start_time"]
        # The address is chosen just before Locust stamps the request's start: allow those microseconds.
        assert e["source_ip"] in {plan.address_of(user, t), plan.address_of(user, t - 0.01)}, e
        assert rows[e["request_id"]]["client_ip"] == e["source_ip"]
        seen[e["user"]].add(e["source_ip"])
    assert len(seen) == 4
    assert all(len(addresses) >= 2 for addresses in seen.values()), seen


# -- the self-check: decisions on made-up samples ----------------------------------------------------------


def test_a_generator_pegged_in_most_samples_makes_the_run_invalid():
    assert "CPU above" in saturation([CPU_PEGGED + 5] * 6 + [40.0] * 4, max_lag_s=0.01)
    assert "CPU above" in saturation([100.0, 100.0, 20.0], max_lag_s=0.0)


def test_a_busy_but_unpegged_generator_keeps_the_run_valid():
    assert saturation([CPU_PEGGED - 1] * 10, max_lag_s=0.05) == ""
    assert saturation([100.0] * 5 + [30.0] * 5, max_lag_s=0.05) == ""  # half the samples: not most
    assert saturation([], max_lag_s=0.0) == ""  # a run too short to sample


def test_a_generator_that_falls_behind_its_schedule_makes_the_run_invalid():
    assert "behind its schedule" in saturation([30.0] * 10, max_lag_s=LAG_LIMIT_S + 0.2, late_share=0.2)
    assert "stalled" in saturation([30.0] * 10, max_lag_s=STALL_S + 0.5, late_share=0.001)
    assert saturation([30.0] * 10, max_lag_s=LAG_LIMIT_S - 0.1) == ""


def test_one_late_tick_on_a_busy_machine_keeps_the_run_valid():
    assert saturation([30.0] * 10, max_lag_s=LAG_LIMIT_S + 0.15, late_share=0.005) == ""


# -- through HAProxy ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_through_haproxy_recommended_every_kind_completes_on_one_cas(farm, ledger, tmp_path):
    with haproxy("recommended", tmp_path / "haproxy"):
        answer, events = walk(tmp_path, VIP_URL)
    for kind in KINDS:
        assert FLOWS[kind] <= set(answer["names"][kind])
    assert not_ok(events) == []
    split = {key: servers for key, servers in servers_per_session(events).items() if len(servers) > 1}
    assert split == {}
    rows = by_request_id(ledger())
    assert all(rows[e["request_id"]]["server"] == e["server"] for e in events if e["request_id"])


@pytest.mark.slow
def test_without_persistence_the_hard_breaks_of_the_design_appear_in_the_event_log(farm, ledger, tmp_path):
    kinds = ("browser", "ews-app", "outlook-mapi", "outlook2007-rpchttp")
    # The CAS closes a lone RPC/HTTP channel after its pairing wait of 10 s (not time-scaled).
    with haproxy("none-all", tmp_path / "haproxy"):
        answer, events = walk(tmp_path, VIP_URL, kinds, kind_seconds=13)
    foreign = {(e["service"], e["detail"]) for e in events if e["outcome"] == "foreign"}
    assert ("owa", "sent to the logon page") in foreign  # logged off
    assert ("ews", "ErrorSubscriptionNotFound") in foreign  # subscription lost
    assert ("mapi", "context-handle-unknown") in foreign  # another CAS's session
    assert any(service == "rpchttp" and "split" in detail for service, detail in foreign)  # pair split
    # A break in the log is a break the CAS that answered recorded, and the other way round, except
    # the first page of a new logon: it still carries the old logon cookie, so the CAS records it as
    # foreign, but the user logging on again expects the logon page (the break was counted already).
    rows = by_request_id(ledger())
    names = {kind: iter(answer["names"][kind]) for kind in kinds}
    disagree = []
    for e in events:
        name = next(names[e["client_kind"]])  # events and names are in the same order
        row = rows.get(e["request_id"])
        if row is None:
            continue  # a call inside an RPC/HTTP channel: no ledger row of its own
        assert row["server"] == e["server"]
        if (row["state"] == "foreign") != (e["outcome"] == "foreign") and name != "owa home (logged off)":
            disagree.append((name, e["status"], e["outcome"], row["state"], row["detail"]))
    assert disagree == []


@pytest.mark.slow
def test_locustfile_master_and_workers_on_one_machine(farm, ledger, tmp_path):
    scenario = scenario_text("""
[[population]]
kind = "direct"
users = 6
clients = { browser = 1.0, ews-app = 0.5, eas-device = 0.5 }
""")
    master = ["--master-bind-host", VIP.host, "--master-bind-port", "21557"]
    workers = ["--master-host", VIP.host, "--master-port", "21557"]
    code, locust_requests = locust(tmp_path, scenario, CAS01, 6, "--processes", "2", *master, *workers)
    assert code == 0
    files = sorted(tmp_path.glob("events*.csv"))
    assert len(files) == 2, files  # one event log per worker; the master sends no requests
    per_worker = [read_events(path) for path in files]
    assert locust_requests == sum(len(events) for events in per_worker)
    sessions = [{e["session"] for e in events} for events in per_worker]
    assert all(sessions) and not sessions[0] & sessions[1]  # each client runs on one worker only
    assert len(sessions[0] | sessions[1]) == 6 + 3 + 3
    assert not_ok(per_worker[0] + per_worker[1]) == []
