"""End to end through a real balancer: HAProxy with short timeouts (written by hand here; scenarios render
them through the drivers) cuts Outlook Anywhere channels and ActiveSync Pings, and the verifier counts
them as cuts: from the clients' events and the CAS's ledger, with the heartbeats the devices fell back
to (DESIGN.md section 13, research-timers.md's known answers).

Both HAProxy modes, `mode http` with `timeout client`/`timeout server` and `mode tcp` with `timeout
tunnel`, 5 minutes: idle channels and Pings are cut; with MinimumConnectionTimeout 120 on the CAS,
Outlook Anywhere's keep-alives (every 2 minutes) beat the timeout and no channel is cut.

Time scale 300: HAProxy's 1 s is a 5-minute idle timeout; the default keep-alives are 12 minutes (IN,
2.4 s) and 15 minutes (OUT, 3 s); a device starts with a 9-minute heartbeat (1.8 s). (At 600 the
keep-alives of MinimumConnectionTimeout 120 came every 0.2 s against 0.5 s: one pause of 0.3 s on a busy
machine would cut a channel that Exchange time keeps.) `mode http` has
`option http-no-delay`, as the driver renders it for Outlook Anywhere: without it HAProxy forwards each
piece of a channel with MSG_MORE, the kernel holds it up to 200 ms, and at time scale 600 25 to 33
channels carrying a keep-alive every 0.2 s were cut per run (none with the option, nor in `mode tcp`). The CAS
runs in this process (127.0.52.11), HAProxy on 127.0.52.1, the clients (Locust, in a process of their
own, tests/loadgen_driver.py run) from 127.64+.x.y.
"""

from __future__ import annotations

import dataclasses
import json
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
TIME_SCALE = 300
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
    {http_only}
    timeout connect 2s
    timeout client 1s
    timeout server 1s
    timeout tunnel 1s
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
    http_only = "option http-no-delay" if request.param == "http" else ""
    config.write_text(HAPROXY.format(mode=request.param, http_only=http_only, vip=VIP, cas=CAS01))
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
def test_minimum_connection_timeout_120_beats_a_5_minute_idle_timeout(make_farm, haproxy, tmp_path):
    farm = make_farm(BASE, servers=1, time_scale=TIME_SCALE, rpc_min_connection_timeout_s=120)
    a = judged(*load_through_haproxy(tmp_path, farm))
    assert a.services.loc["rpchttp", "requests"] > 0
    assert a.services.loc["eas", "cut"] > 0  # Pings are still longer than the timeout
    assert a.services.loc["rpchttp", "cut"] == 0  # keep-alives every 0.4 s: never silent for 1 s
