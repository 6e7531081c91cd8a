"""End to end through a real balancer: HAProxy with short timeouts (written by hand here; scenarios render
them through the drivers) cuts Outlook Anywhere channels and ActiveSync Pings, and the verifier counts
them as cuts: from the clients' events and the CAS's ledger, with the heartbeats the devices fell back
to (DESIGN.md section 13, research-timers.md's known answers).

Two HAProxy modes, measured here:
- HTTP mode, `timeout client`/`timeout server` 5 minutes: idle channels and Pings are cut. But
  `timeout server` is HAProxy's wait for the CAS's answer, and the RPC proxy never answers an IN channel
  before it ends: most IN channels are cut when they are 5 minutes old, keep-alives going up them or
  not (HAProxy re-arms the timer on a write only now and then). On HAProxy in HTTP mode,
  MinimumConnectionTimeout does not save Outlook Anywhere from a short `timeout server`; only a long
  one does.
- TCP mode, `timeout tunnel` 5 minutes: a true idle timeout (both directions silent), as a firewall's.
  Idle channels and Pings are cut; with MinimumConnectionTimeout 120 on the CAS, Outlook Anywhere's
  keep-alives (both ways, every 2 minutes) beat it and no channel is cut.

Time scale 600: HAProxy's 0.5 s is a 5-minute idle timeout; the default keep-alives are 12 minutes (IN,
1.2 s) and 15 minutes (OUT, 1.5 s); a device starts with a 9-minute heartbeat (0.9 s). The CAS runs in
this process (127.0.52.11), HAProxy on 127.0.52.1, the clients (Locust, in a process of their own,
tests/loadgen_driver.py run) from 127.64+.x.y.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lab.balancers.process import listening_sockets
from lab.scenario import Thresholds, parse_scenario
from lab.verifier import RunFacts, read_events, verify

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "loadgen_driver.py"
BASE = "127.0.52"
CAS01, VIP = f"{BASE}.11", f"{BASE}.1"
TIME_SCALE = 600
SECONDS = 8
SCENARIO = f"""
name = "timers-haproxy"
duration = "{SECONDS}s"
time_scale = {TIME_SCALE}
[farm]
servers = 1
[balancer]
driver = "haproxy"
[[population]]
kind = "direct"
users = 4
clients = {{ outlook2010-rpchttp = 0.75, eas-device = 1.0 }}
"""
HAPROXY = """
defaults
    mode {mode}
    timeout connect 2s
    timeout client 500ms
    timeout server 500ms
    timeout tunnel 500ms
frontend vip
    bind {vip}:8080
    default_backend cas
backend cas
    server CAS01 {cas}:8080
"""


@pytest.fixture(params=["http", "tcp"])
def haproxy(request, tmp_path):
    """HAProxy in front of CAS01 in `mode http` or `mode tcp`; the fixture's value is the mode."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY.format(mode=request.param, vip=VIP, cas=CAS01))
    process = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 10
    while (VIP, 8080) not in listening_sockets():
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "HAProxy did not listen"
        time.sleep(0.02)
    yield request.param
    process.terminate()
    process.wait(10)


def load_through_haproxy(tmp_path: Path, farm) -> tuple[pd.DataFrame, pd.DataFrame, RunFacts]:
    scenario_file = tmp_path / "timers.toml"
    scenario_file.write_text(SCENARIO)
    events = tmp_path / "events.csv"
    command = [
        sys.executable,
        str(DRIVER),
        "run",
        "--scenario",
        str(scenario_file),
        "--host",
        f"http://{VIP}:8080",
    ]
    done = subprocess.run(
        [*command, "--events", str(events), "--seconds", str(SECONDS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    started = json.loads(done.stdout.splitlines()[-1])["start_time"]
    ledger = pd.DataFrame([row._asdict() for row in farm["CAS01"].ledger.rows()])
    return read_events([events]), ledger, RunFacts("haproxy", started_ts=started, ended_ts=time.time())


def judged(events: pd.DataFrame, ledger: pd.DataFrame, facts: RunFacts):
    scenario = parse_scenario(SCENARIO, "timers.toml", "timers-haproxy")
    scenario = dataclasses.replace(scenario, thresholds=Thresholds(cut=0, eas_heartbeat_alert=False))
    return verify(events, ledger, scenario, facts)


@pytest.mark.slow
def test_a_five_minute_idle_timeout_cuts_idle_channels_and_pings(make_farm, haproxy, tmp_path):
    farm = make_farm(BASE, servers=1, time_scale=TIME_SCALE)
    a = judged(*load_through_haproxy(tmp_path, farm))
    cuts = a.services["cut"]
    assert cuts["rpchttp"] > 0 and cuts["eas"] > 0  # what the clients saw
    assert a.services.loc["rpchttp", "cut_seen_by_cas"] > 0 and a.services.loc["eas", "cut_seen_by_cas"] > 0
    heartbeat = a.timers.eas_heartbeat
    assert heartbeat["alert"] and heartbeat["min_s"] < 300  # the devices fell back below the 5 minutes
    assert {c.name: c.passed for c in a.checks}.items() >= {
        "cut": False,
        "eas_heartbeat_alert": False,
    }.items()
    assert a.verdict == "fail"


@pytest.mark.slow
def test_minimum_connection_timeout_120_beats_an_idle_timeout_but_not_haproxys_answer_timeout(
    make_farm, haproxy, tmp_path
):
    farm = make_farm(BASE, servers=1, time_scale=TIME_SCALE, rpc_min_connection_timeout_s=120)
    a = judged(*load_through_haproxy(tmp_path, farm))
    assert a.services.loc["rpchttp", "requests"] > 0
    assert a.services.loc["eas", "cut"] > 0  # Pings are still longer than the timeout
    cut = a.services.loc["rpchttp", "cut"]
    if haproxy == "tcp":
        assert cut == 0  # keep-alives both ways every 0.2 s: never idle for 0.5 s
        return
    # HTTP mode: most IN channels end when 0.5 s old, though each carried pings every 0.2 s (HAProxy
    # re-arms `timeout server` on a write now and then, measured: a few live a little longer).
    assert cut > 0
    lives = [r.latency_ms for r in farm["CAS01"].ledger.rows() if r.service == "rpchttp" and r.state == "own"]
    assert statistics.median(lives) == pytest.approx(500, abs=50), lives
