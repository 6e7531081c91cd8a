"""Exchange ActiveSync on the mock CAS, driven with the device helpers of loadgen.wire.eas."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from mockcas_helpers import ledger

from caslab.vocab import STATE_HEADER
from caslab.wbxml import E, encode
from loadgen.wire import eas
from mockcas.sealing import Sealer
from mockcas.services.eas import INITIAL_ITEMS, SYNC_STATE_ITEMS

BASE = "127.0.13"
CAS01, CAS02 = f"{BASE}.11", f"{BASE}.12"
COLD_COST_MS = 500.0


def send(host: str, request: eas.EasRequest) -> tuple[int, dict[str, str], bytes]:
    http = urllib.request.Request(
        f"http://{host}:8080{request.path}",
        data=request.body or None,
        headers=request.headers,
        method=request.method,
    )
    try:
        with urllib.request.urlopen(http, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def device(number: int = 1, device_id: str = "Appl1234") -> eas.Device:
    return eas.Device(f"user{number}@caslab.test", "caslab", device_id)


def provisioned(host: str, dev: eas.Device) -> str:
    """Provision the device on `host`; its final policy key."""
    temporary = eas.parse_provision(send(host, eas.provision(dev))[2]).policy_key
    answer = eas.parse_provision(send(host, eas.provision_ack(dev, temporary or ""))[2])
    assert answer.ok
    return answer.policy_key or ""


def watermark(farm, sync_key: str) -> int:
    return farm["CAS01"].farm_sealer.unseal(sync_key)["w"]


@pytest.fixture
def farm(make_farm):
    return make_farm(BASE, servers=2, time_scale=60, eas_cold_cost_ms=COLD_COST_MS)


def test_options_needs_credentials_and_lists_versions_and_commands(farm):
    request = eas.options(device())
    status, headers, _ = send(CAS01, request)
    assert status == 200
    assert headers["MS-ASProtocolVersions"] == "2.0,2.1,2.5,12.0,12.1,14.0,14.1"
    assert set(headers["MS-ASProtocolCommands"].split(",")) == {"Provision", "FolderSync", "Sync", "Ping"}
    assert headers["MS-Server-ActiveSync"].startswith("14.1")
    anonymous = dataclasses.replace(request, headers={})
    status, headers, _ = send(CAS01, anonymous)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")


def test_provision_in_two_phases_gives_a_final_policy_key(farm):
    dev = device()
    status, _, body = send(CAS01, eas.provision(dev))
    first = eas.parse_provision(body)
    assert status == 200 and first.ok
    assert b"MS-EAS-Provisioning-WBXML" in body and first.policy_key.isdigit()  # type: ignore[union-attr]
    assert 0 < int(first.policy_key) < 2**32  # type: ignore[arg-type]
    final = eas.parse_provision(send(CAS01, eas.provision_ack(dev, first.policy_key))[2])  # type: ignore[arg-type]
    assert final.ok and final.policy_key != first.policy_key
    wrong = eas.parse_provision(send(CAS01, eas.provision_ack(dev, "12345"))[2])
    assert (wrong.status, wrong.policy_status) == (1, 5)
    states = [(r["detail"], r["state"]) for r in ledger(CAS01)]
    assert states == [
        ("Provision", "new"),
        ("Provision", "own"),
        ("Provision: unknown policy key", "invalid"),
    ]


def test_commands_without_the_final_policy_key_get_449(farm):
    dev, other = device(1, "Dev1"), device(2, "Dev2")
    other_key = provisioned(CAS01, other)
    temporary = eas.parse_provision(send(CAS01, eas.provision(dev))[2]).policy_key or ""
    for key in ("", "0", temporary, other_key):
        assert send(CAS01, eas.folder_sync(dev, key))[0] == 449
    assert send(CAS01, eas.sync(dev, temporary, [("5", "0")]))[0] == 449
    assert send(CAS01, eas.ping(dev, temporary, 60, [("5", "Email")]))[0] == 449
    assert eas.classify(449) == ("error", "449 provisioning needed")
    rows = [r for r in ledger(CAS01) if r["session_key"] == "Dev1" and r["status"] == 449]
    assert len(rows) == 6 and {r["state"] for r in rows} == {"invalid"}
    assert send(CAS01, eas.folder_sync(dev, "é"))[0] == 449  # not a key either (and no error on the way)


def test_folder_sync_gives_the_hierarchy_then_no_changes(farm):
    dev = device()
    key = provisioned(CAS01, dev)
    first = eas.parse_folder_sync(send(CAS01, eas.folder_sync(dev, key))[2])
    assert first.ok and first.inbox is not None and first.inbox.sync_class == "Email"
    assert {f.name for f in first.folders} >= {"Inbox", "Sent Items", "Calendar", "Contacts"}
    again = eas.parse_folder_sync(send(CAS01, eas.folder_sync(dev, key, first.sync_key or ""))[2])
    assert again.ok and again.folders == ()
    broken = eas.parse_folder_sync(send(CAS01, eas.folder_sync(dev, key, "not-a-key"))[2])
    assert broken.status == 9 and eas.classify(200, "own", broken) == ("error", "FolderSync status 9")
    assert ledger(CAS01)[-1]["state"] == "invalid"


def test_sync_starts_empty_then_brings_the_inbox_then_new_messages_in_windows(farm):
    dev = device()
    key = provisioned(CAS01, dev)
    start = eas.parse_sync(send(CAS01, eas.sync(dev, key, [("5", "0")]))[2]).collections[0]
    assert start.status == 1 and start.added == () and len(start.sync_key or "") <= 64
    initial = eas.parse_sync(send(CAS01, eas.sync(dev, key, [("5", start.sync_key)]))[2]).collections[0]
    low, high = watermark(farm, start.sync_key), watermark(farm, initial.sync_key)
    assert high - low >= INITIAL_ITEMS
    assert initial.added == tuple(f"5:{n}" for n in range(low + 1, high + 1))
    # A device that last synced 12 messages ago catches up 5 at a time.
    behind = farm["CAS01"].farm_sealer.seal({"w": high - 12})
    added: list[str] = []
    for _ in range(4):
        answer = eas.parse_sync(send(CAS01, eas.sync(dev, key, [("5", behind)], window_size=5))[2])
        collection = answer.collections[0]
        assert answer.ok and len(collection.added) <= 5
        added += collection.added
        behind = collection.sync_key or ""
        if not collection.more_available:
            break
    assert added[:12] == [f"5:{n}" for n in range(high - 11, high + 1)]
    assert not collection.more_available


def test_bad_sync_keys_get_the_protocols_status_not_an_error_page(farm):
    dev = device()
    key = provisioned(CAS01, dev)
    service = farm["CAS01"].http_services["eas"]
    newest = service.newest_message(dev.user)
    folder_key = eas.parse_folder_sync(send(CAS01, eas.folder_sync(dev, key))[2]).sync_key or ""
    bad_keys = {
        "garbage": "garbage",
        "other farm": Sealer(b"x" * 32).seal({"w": newest}),
        "FolderSync key": folder_key,
        "stale": farm["CAS01"].farm_sealer.seal({"w": newest - SYNC_STATE_ITEMS - 1}),
        "future": farm["CAS01"].farm_sealer.seal({"w": newest + 100}),
    }
    for name, sync_key in bad_keys.items():
        status, _, body = send(CAS01, eas.sync(dev, key, [("5", sync_key)]))
        answer = eas.parse_sync(body)
        assert status == 200 and answer.collections[0].status == 3, name
    unknown = eas.parse_sync(send(CAS01, eas.sync(dev, key, [("77", "0")]))[2])
    assert unknown.collections[0].status == 8
    rows = ledger(CAS01)[-6:]
    assert [r["state"] for r in rows] == ["invalid"] * 6 and {r["status"] for r in rows} == {200}


def test_bad_requests_get_protocol_errors_and_ledger_rows(farm):
    dev = device()
    key = provisioned(CAS01, dev)
    good = eas.sync(dev, key, [("5", "0")])
    cases = [
        (dataclasses.replace(good, path=good.path.replace("Cmd=Sync", "Cmd=Bogus")), 501),
        (dataclasses.replace(good, body=b"\x03\x01\x6a\x00\x45\x5c"), 400),
        (dataclasses.replace(good, path=good.path.replace("DeviceId=", "Device=")), 400),
        (dataclasses.replace(good, path=good.path.replace("DeviceId=Appl1234", "DeviceId=has-dash")), 400),
        (dataclasses.replace(good, headers={**good.headers, "MS-ASProtocolVersion": "99.0"}), 400),
        (dataclasses.replace(good, method="GET", body=b""), 501),
        (dataclasses.replace(good, headers={**good.headers, "Authorization": "Basic eDp5"}), 401),
        (dataclasses.replace(good, body=encode(E("Ping:Ping"))), 200),  # a Ping body sent as Sync
        (dataclasses.replace(good, body=b""), 200),  # an empty Sync, with nothing cached
    ]
    for request, expected in cases:
        assert send(CAS01, request)[0] == expected, request
    rows = ledger(CAS01)[-len(cases) :]
    assert [r["state"] for r in rows] == ["invalid"] * len(cases)
    assert all(r["status"] != 500 for r in ledger(CAS01))


def test_keys_work_on_any_cas_but_the_first_request_on_another_cas_is_cold(farm):
    dev = device()
    key = provisioned(CAS01, dev)
    start = eas.parse_sync(send(CAS01, eas.sync(dev, key, [("5", "0")]))[2]).collections[0]
    status, headers, body = send(CAS02, eas.sync(dev, key, [("5", start.sync_key)]))
    moved = eas.parse_sync(body)
    assert status == 200 and moved.ok and len(moved.collections[0].added) >= INITIAL_ITEMS
    assert eas.classify(status, headers[STATE_HEADER], moved) == ("cold", "")
    status, headers, body = send(CAS02, eas.sync(dev, key, [("5", moved.collections[0].sync_key)]))
    assert eas.classify(status, headers[STATE_HEADER], eas.parse_sync(body)) == ("ok", "")
    assert [r["state"] for r in ledger(CAS01)] == ["new", "own", "own"]
    cold, own = ledger(CAS02)
    assert (cold["state"], own["state"]) == ("cold", "own")
    assert cold["session_key"] == dev.device_id
    assert cold["latency_ms"] >= COLD_COST_MS  # the warm-up was paid


def test_staying_on_one_cas_is_own_after_the_first_request(farm):
    dev = device()
    key = provisioned(CAS01, dev)
    sync_key = "0"
    for _ in range(4):
        answer = eas.parse_sync(send(CAS01, eas.sync(dev, key, [("5", sync_key)]))[2])
        sync_key = answer.collections[0].sync_key or ""
    rows = ledger(CAS01)
    assert [r["state"] for r in rows] == ["new"] + ["own"] * 5
    assert rows[0]["latency_ms"] >= COLD_COST_MS
    assert all(r["latency_ms"] < COLD_COST_MS for r in rows[1:])  # warm requests skip the warm-up
    assert ledger(CAS02) == []


def test_ping_answers_at_the_scaled_heartbeat(make_farm):
    make_farm(BASE, servers=1, time_scale=600, eas_cold_cost_ms=0)
    dev = device()
    key = provisioned(CAS01, dev)
    started = time.monotonic()
    status, _, body = send(CAS01, eas.ping(dev, key, 60, [("2", "Contacts")]))  # 60 s / 600
    elapsed = time.monotonic() - started
    assert status == 200 and eas.parse_ping(body) == eas.PingAnswer(1, (), None)
    assert 0.1 <= elapsed < 5


def test_ping_answers_when_a_message_arrives(make_farm):
    make_farm(BASE, servers=1, time_scale=600, eas_cold_cost_ms=0)  # a new message every second
    dev = device()
    key = provisioned(CAS01, dev)
    start = eas.parse_sync(send(CAS01, eas.sync(dev, key, [("5", "0")]))[2]).collections[0]
    started = time.monotonic()
    status, _, body = send(CAS01, eas.ping(dev, key, 3540, [("5", "Email"), ("2", "Contacts")]))
    elapsed = time.monotonic() - started
    assert status == 200 and eas.parse_ping(body) == eas.PingAnswer(2, ("5",), None)
    assert elapsed < 3540 / 600
    after = eas.parse_sync(send(CAS01, eas.sync(dev, key, [("5", start.sync_key)]))[2])
    assert len(after.collections[0].added) > INITIAL_ITEMS  # the message the Ping announced


def test_ping_parameters_are_checked_and_remembered_per_cas(make_farm):
    make_farm(BASE, servers=2, time_scale=600, eas_cold_cost_ms=0)
    dev = device()
    key = provisioned(CAS01, dev)
    too_short = eas.parse_ping(send(CAS01, eas.ping(dev, key, 30, [("5", "Email")]))[2])
    too_long = eas.parse_ping(send(CAS01, eas.ping(dev, key, 4000, [("5", "Email")]))[2])
    assert (too_short.status, too_short.heartbeat_limit_s) == (5, 60)
    assert (too_long.status, too_long.heartbeat_limit_s) == (5, 3540)
    assert eas.parse_ping(send(CAS01, eas.ping(dev, key, 60, [("42", "Email")]))[2]).status == 7
    assert eas.parse_ping(send(CAS01, eas.ping(dev, key, 60, [("2", "Contacts")]))[2]).status == 1
    empty = dataclasses.replace(eas.ping(dev, key, 60, []), body=b"")
    assert eas.parse_ping(send(CAS01, empty)[2]).status == 1  # CAS01 remembers heartbeat and folders
    assert eas.parse_ping(send(CAS02, empty)[2]).status == 3  # CAS02 never saw them
    states = [r["state"] for r in ledger(CAS01)]
    assert states == ["new", "own", "invalid", "invalid", "invalid", "own", "own"]


@pytest.mark.parametrize(
    ("limits", "asked", "status", "limit"),
    [
        ({}, 59, 5, 60),
        ({}, 3541, 5, 3540),
        ({}, 60, 1, None),
        ({"eas_heartbeat_min_s": 300, "eas_heartbeat_max_s": 1200}, 299, 5, 300),
        ({"eas_heartbeat_min_s": 300, "eas_heartbeat_max_s": 1200}, 1201, 5, 1200),
        ({"eas_heartbeat_min_s": 300, "eas_heartbeat_max_s": 1200}, 300, 1, None),
    ],
)
def test_a_heartbeat_outside_the_cas_limits_gets_status_5_and_the_limit(
    make_farm, limits, asked, status, limit
):
    make_farm(BASE, servers=1, time_scale=3000, eas_cold_cost_ms=0, **limits)
    dev = device()
    key = provisioned(CAS01, dev)
    answer = eas.parse_ping(send(CAS01, eas.ping(dev, key, asked, [("2", "Contacts")]))[2])
    assert (answer.status, answer.heartbeat_limit_s) == (status, limit)
    if status == 1:  # the ledger row says what the device asked for
        assert ledger(CAS01, "eas")[-1]["detail"] == f"Ping heartbeat={asked}"


def test_a_ping_closed_by_the_other_side_before_its_answer_is_peer_closed(make_farm):
    make_farm(BASE, servers=1, time_scale=600, eas_cold_cost_ms=0)  # a 300 s heartbeat ends after 0.5 s
    dev = device()
    key = provisioned(CAS01, dev)
    ping = eas.ping(dev, key, 300, [("2", "Contacts")])
    head = f"POST {ping.path} HTTP/1.1\r\nHost: {CAS01}\r\nContent-Length: {len(ping.body)}\r\n"
    head += (
        "".join(f"{name}: {value}\r\n" for name, value in ping.headers.items())
        + "X-CasLab-Request: cut-1\r\n"
    )
    with socket.create_connection((CAS01, 8080), timeout=5) as sock:
        sock.sendall(head.encode() + b"\r\n" + ping.body)
        time.sleep(0.1)  # the CAS holds the Ping; a balancer's idle timeout closes the connection
    deadline = time.monotonic() + 5
    while not (rows := [r for r in ledger(CAS01, "eas") if r["request_id"] == "cut-1"]):
        assert time.monotonic() < deadline, "no ledger row for the cut Ping"
        time.sleep(0.05)
    assert (rows[0]["status"], rows[0]["detail"]) == (499, "peer-closed heartbeat=300")
    assert rows[0]["latency_ms"] >= 400  # found when its answer was due, at the end of the heartbeat


def test_stopping_the_cas_ends_a_hanging_ping_promptly(make_farm):
    farm = make_farm(BASE, servers=1, time_scale=1, eas_cold_cost_ms=0)
    dev = device()
    key = provisioned(CAS01, dev)
    result: list[int] = []
    pinging = threading.Thread(
        target=lambda: result.append(send(CAS01, eas.ping(dev, key, 3540, [("2", "Contacts")]))[0])
    )
    pinging.start()
    service = farm["CAS01"].http_services["eas"]
    deadline = time.monotonic() + 10
    while farm["CAS01"].inflight == 0 and time.monotonic() < deadline:  # until the Ping hangs
        time.sleep(0.01)
    started = time.monotonic()
    farm.call(service.close())
    pinging.join(timeout=10)
    assert result == [503] and time.monotonic() - started < 2
    assert ledger(CAS01)[-1]["detail"] == "Ping: CAS stopping"


def test_classify_reads_status_state_and_answer():
    ok_ping = eas.PingAnswer(1, (), None)
    assert eas.classify(200, "own", ok_ping) == ("ok", "")
    assert eas.classify(200, "cold", ok_ping) == ("cold", "")
    assert eas.classify(200, "cold", eas.PingAnswer(3, (), None)) == ("error", "Ping status 3")
    assert eas.classify(503, "own") == ("error", "http 503")
    assert eas.classify(0) == ("transport", "no answer")
    bad_sync = eas.SyncAnswer(None, (eas.CollectionAnswer("5", "k", 3, (), False),))
    assert eas.classify(200, "own", bad_sync) == ("error", "Sync collection status 5: 3")
    request = eas.sync(device(), "1", [("5", "0")])
    assert eas.read(request, 200, "own", b"junk")[:2] == (
        "error",
        "bad answer: unsupported WBXML version byte 0x6a",
    )
    assert eas.read(eas.options(device()), 200, "none", b"") == ("ok", "", None)


def test_device_ids_are_checked_like_the_server_does():
    with pytest.raises(ValueError, match="DeviceId"):
        eas.Device("user1@caslab.test", "caslab", "has-dash")
