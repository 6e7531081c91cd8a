"""The clients keep their real timers (DESIGN.md section 13): Outlook Anywhere pings IN at the interval
the proxy announced, intranet Outlook keeps its connections open and idle and says goodbye when it
leaves, and both find a connection cut under them, record the cut and open it again.

The clients run as Locust users in a process of their own (tests/loadgen_driver.py idle: the kind's
own idle loop, what it does while its user thinks), through tests/relay.py, which writes down what
crosses it and closes connections idle for longer than its timeout, as a balancer does. The CAS run in
this process (127.0.51.11), the relay listens on 127.0.51.1.
"""

from __future__ import annotations

import csv
import itertools
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from relay import Relay, Relayed

from caslab import rts
from caslab.vocab import AB_PORT, HTTP_PORT, MAPI_PORT

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "loadgen_driver.py"
BASE = "127.0.51"
CAS01, VIP = f"{BASE}.11", f"{BASE}.1"
TIME_SCALE = 600  # 720 s -> 1.2 s, 900 s -> 1.5 s, 120 s -> 0.2 s


def idle(tmp_path: Path, kind: str, seconds: float, stall: float = 0.0) -> list[dict]:
    """One user of `kind` through the relay: on_start, `seconds` idle (the process blocked for `stall`
    seconds halfway), on_stop; its events."""
    events = tmp_path / f"{kind}.csv"
    options = {
        "--host": f"http://{VIP}:{HTTP_PORT}",
        "--events": events,
        "--kind": kind,
        "--seconds": seconds,
        "--stall": stall,
    }
    options["--time-scale"] = TIME_SCALE
    done = subprocess.run(
        [sys.executable, str(DRIVER), "idle", *(str(w) for pair in options.items() for w in pair)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    json.loads(done.stdout.splitlines()[-1])
    with events.open() as f:
        return list(csv.DictReader(f))


def pings_up(connection: Relayed) -> list[float]:
    """When the client sent a Ping RTS PDU up this channel (after its opening request)."""
    return [t for t, chunk in connection.up[1:] if chunk == rts.ping()]


def channels(relay: Relay, method: bytes) -> list[Relayed]:
    return [c for c in relay.connections if c.first_bytes.startswith(method)]


@pytest.mark.parametrize(
    ("minimum", "announced_s"), [(None, 720), (120, 120)], ids=["default", "minimum-120"]
)
def test_outlook_anywhere_pings_in_at_the_announced_interval_while_idle(
    make_farm, tmp_path, minimum, announced_s
):
    make_farm(BASE, servers=1, time_scale=TIME_SCALE, rpc_min_connection_timeout_s=minimum)
    with Relay((VIP, HTTP_PORT), (CAS01, HTTP_PORT)) as relay:
        events = idle(tmp_path, "outlook2010-rpchttp", seconds=4)
    interval = announced_s / TIME_SCALE
    ins = channels(relay, b"RPC_IN_DATA")
    assert len(ins) == 2  # one virtual connection per endpoint (store, address book), never cut
    for channel in ins:
        pings = pings_up(channel)
        assert len(pings) >= int(3 / interval)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert statistics.median(gaps) == pytest.approx(interval, rel=0.25)
    assert not [e for e in events if e["outcome"] != "ok"]


@pytest.mark.parametrize(
    ("minimum", "cut"), [(None, True), (120, False)], ids=["default-cut", "minimum-120-kept"]
)
def test_outlook_anywhere_behind_a_short_idle_timeout_is_cut_and_reconnects(
    make_farm, tmp_path, minimum, cut
):
    farm = make_farm(BASE, servers=1, time_scale=TIME_SCALE, rpc_min_connection_timeout_s=minimum)
    # An idle timeout of 0.8 s: four times the 0.2 s keep-alives of MinimumConnectionTimeout 120 (a pause
    # of this process or the client's must not cut them), shorter than the default 1.2 s (IN) and 1.5 s
    # (OUT).
    with Relay((VIP, HTTP_PORT), (CAS01, HTTP_PORT), idle_timeout_s=0.8) as relay:
        events = idle(tmp_path, "outlook2010-rpchttp", seconds=3)
    cuts = [e for e in events if e["outcome"] == "cut"]
    opened = [e for e in events if e["service"] == "rpchttp" and e["request_id"]]
    if not cut:
        assert cuts == [] and not [c for c in channels(relay, b"RPC_") if c.cut]  # (Autodiscover's is)
        assert len(opened) == 4  # two virtual connections, two channels each, opened once
        return
    assert len(cuts) >= 4  # each virtual connection, cut again after each reopening
    assert {(e["detail"], e["server"], e["request_id"]) for e in cuts} <= {("eof", "", ""), ("reset", "", "")}
    assert len(opened) == 4 + 2 * len(cuts)  # every cut virtual connection opened again, both channels
    assert all(e["outcome"] == "ok" for e in opened)
    rows = [r for r in farm["CAS01"].ledger.rows() if r.service == "rpchttp"]
    assert sum(r.detail == "peer-closed" for r in rows) >= len(cuts) - 2  # the CAS's side of the cuts


def test_a_cut_found_after_the_keep_alive_was_due_says_how_late(make_farm, tmp_path):
    """Keep-alives every 0.2 s hold channels behind a 0.5 s idle timeout until the load generator stalls
    for 1.5 s: then the relay cuts them, and the client, finding the cut about 1.3 s after its ping was
    due, says so (the verifier then cannot vouch for the cut: lab/verifier/timers.py)."""
    make_farm(BASE, servers=1, time_scale=TIME_SCALE, rpc_min_connection_timeout_s=120)
    with Relay((VIP, HTTP_PORT), (CAS01, HTTP_PORT), idle_timeout_s=0.5):
        events = idle(tmp_path, "outlook2010-rpchttp", seconds=2, stall=1.5)
    cuts = [e for e in events if e["outcome"] == "cut"]
    assert len(cuts) == 2, cuts  # both virtual connections, once
    for e in cuts:
        seen, late = e["detail"].split(" keepalive-late=")
        assert seen in ("eof", "reset") and 0.8 < float(late) < 1.6, e


def test_a_cut_the_cas_found_after_its_out_keep_alive_was_due_says_how_late(make_farm, tmp_path):
    """The same for the CAS's pings down OUT: its event loop blocked for 1.5 s, the relay cuts the silent
    OUT channels, and the CAS, finding its virtual connections closed about 1.3 s after its OUT ping was
    due (the client closed IN on seeing OUT cut), says so in their ledger rows."""
    farm = make_farm(BASE, servers=1, time_scale=TIME_SCALE, rpc_min_connection_timeout_s=120)

    async def block() -> None:
        time.sleep(1.5)  # blocking the CAS's loop is the point

    def block_once_idle(relay: Relay) -> None:
        # From what the relay saw, not from the launch (the client's start-up takes its own time): both
        # IN channels have carried a keep-alive, so both virtual connections joined and went idle.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ins = channels(relay, b"RPC_IN_DATA")
            if len(ins) == 2 and all(pings_up(c) for c in ins):
                farm.call(block())
                return
            time.sleep(0.01)

    with Relay((VIP, HTTP_PORT), (CAS01, HTTP_PORT), idle_timeout_s=0.5) as relay:
        stall = threading.Thread(target=block_once_idle, args=(relay,))
        stall.start()
        idle(tmp_path, "outlook2010-rpchttp", seconds=3)
    stall.join()
    late = [r.detail for r in farm["CAS01"].ledger.rows() if " keepalive-late=" in r.detail]
    assert late and all(d.startswith("peer-closed keepalive-late=") for d in late), late
    assert all(1.0 < float(d.rpartition("=")[2]) < 2.0 for d in late), late
    # The CAS's own watch saw its loop fall behind by the block (its stats give the lab the lag).
    lags = farm["CAS01"].stats()["loop_lags"]
    assert lags and 1.3 < max(lag for _ts, lag in lags) < 2.0, lags


def test_intranet_outlook_connections_idle_are_cut_found_and_reopened(make_farm, tmp_path):
    farm = make_farm(BASE, servers=1, time_scale=TIME_SCALE)
    with (
        Relay((VIP, HTTP_PORT), (CAS01, HTTP_PORT)),
        Relay((VIP, MAPI_PORT), (CAS01, MAPI_PORT), idle_timeout_s=0.5),
        Relay((VIP, AB_PORT), (CAS01, AB_PORT), idle_timeout_s=0.5),
    ):
        events = idle(tmp_path, "outlook-mapi", seconds=2)
    cuts = [e for e in events if e["outcome"] == "cut"]
    assert {e["service"] for e in cuts} == {"mapi", "addressbook"}
    assert {e["detail"] for e in cuts} <= {"eof", "reset"} and {e["request_id"] for e in cuts} == {""}
    # Every connection is cut while idle (three MAPI, one Address Book) and opened again at once.
    assert (
        sum(e["service"] == "mapi" for e in cuts) >= 3
        and sum(e["service"] == "addressbook" for e in cuts) >= 1
    )
    reopened = [e for e in events if e["outcome"] == "ok" and e["detail"] == ""]
    assert sum(e["service"] == "mapi" for e in reopened) >= 1 + 2 + 3  # logon, 2 connects, a connect per cut
    rows = farm["CAS01"].ledger.rows()
    peer_closed = [r for r in rows if r.detail == "peer-closed"]
    assert len(peer_closed) >= len(cuts)  # the CAS saw each connection end without a goodbye
    assert {(r.state, r.status, r.request_id) for r in peer_closed} == {("none", 499, "")}


def test_intranet_outlook_says_goodbye_on_every_connection_when_it_ends(make_farm, tmp_path):
    farm = make_farm(BASE, servers=1, time_scale=TIME_SCALE)
    with (
        Relay((VIP, HTTP_PORT), (CAS01, HTTP_PORT)),
        Relay((VIP, MAPI_PORT), (CAS01, MAPI_PORT)),
        Relay((VIP, AB_PORT), (CAS01, AB_PORT)),
    ):
        events = idle(tmp_path, "outlook-mapi", seconds=0.5)
    assert not [e for e in events if e["outcome"] not in ("ok", "cold")]
    deadline = time.monotonic() + 5
    while len(goodbyes := [r for r in farm["CAS01"].ledger.rows() if r.detail == "goodbye"]) < 4:
        assert time.monotonic() < deadline, "not every connection said goodbye"
        time.sleep(0.05)
    assert {r.service for r in goodbyes} == {"mapi", "addressbook"}
    assert not [r for r in farm["CAS01"].ledger.rows() if r.detail == "peer-closed"]
