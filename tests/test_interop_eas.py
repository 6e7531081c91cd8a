"""pyactivesync, a real Exchange ActiveSync client (WBXML over HTTPS, protocol 14.1: Exchange 2010 SP1's),
against the mock CAS farm behind the default balancer with TLS offload: Provision (both round trips),
FolderSync, a Sync bootstrap and a Sync that brings mail, and a Ping that waits out its heartbeat.
Under `none-all` every command reaches another CAS and the device still works, as on Exchange 2010
(policy and sync keys live in the mailbox); the CAS records its first sight of a device that was
served elsewhere as `cold`, the soft break.

pyactivesync 0.5.0 is pinned: from 0.6.0 on it speaks only EAS 16.1, which Exchange 2010 does not.
It uses requests and keeps verification on; REQUESTS_CA_BUNDLE, requests' own setting, makes it
trust the run's CA.
"""

from __future__ import annotations

import itertools

import pytest
from interop import PASSWORD, USER, VIP, interop_lab, marks, rows
from pyactivesync import Client, FolderType

pytestmark = pytest.mark.slow

SERVER = f"{VIP.host}:{VIP.https_port}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with interop_lab(tmp_path_factory.mktemp("interop-eas")) as running:
        yield running


@pytest.fixture
def trusting_the_run_ca(lab, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(lab.tls.ca_pem))


def sync_the_inbox(device_id: str) -> list[dict[str, str]]:
    """What a phone does when it is set up: provision, list folders, sync the Inbox. The mails it got."""
    with Client(SERVER, USER, PASSWORD, device_id=device_id) as phone:
        assert phone.provision().isdigit()
        inbox = next(f for f in phone.list_folders() if f.type == FolderType.INBOX)
        bootstrap = phone.sync_folder(inbox.id)
        assert not bootstrap.added  # a SyncKey 0 request only gets a key
        synced = phone.sync_folder(inbox.id, sync_key=bootstrap.sync_key)
        assert synced.sync_key != bootstrap.sync_key
        return [item.fields for item in synced.added]


def test_pyactivesync_provisions_syncs_and_pings_through_the_balancer(lab, trusting_the_run_ca):
    with lab.balancer("recommended"):
        start = marks()
        mails = sync_the_inbox("INTEROP1")
        assert mails and all(m["Email.To"].endswith(f"<{USER}>") for m in mails)
        with Client(SERVER, USER, PASSWORD, device_id="INTEROP1") as phone:
            phone.provision()  # a new client object knows no policy key yet
            inbox = next(f for f in phone.list_folders() if f.type == FolderType.INBOX)
            assert phone.ping(inbox.id, heartbeat=60).status in ("1", "2")  # heartbeat ended, or new mail
        eas = rows("eas", start)
    commands = [r["detail"] for r in eas]
    assert commands[:5] == ["Provision", "Provision", "FolderSync", "Sync", "Sync"], commands
    assert commands[-1].startswith("Ping"), commands
    assert {r["status"] for r in eas} == {200}
    # `header Authorization`: every command of the device on one CAS, which knew it from the first.
    assert len({r["server"] for r in eas}) == 1 and [r["state"] for r in eas][1:] == ["own"] * (len(eas) - 1)


def test_pyactivesync_works_across_cas_under_round_robin_with_cold_starts(lab, trusting_the_run_ca):
    with lab.balancer("none-all"):
        start = marks()
        mails = sync_the_inbox("INTEROP2")
        eas = rows("eas", start)
    assert mails
    assert {r["status"] for r in eas} == {200}
    servers = [r["server"] for r in eas]
    assert all(a != b for a, b in itertools.pairwise(servers)), servers  # each command moved
    assert "cold" in {r["state"] for r in eas}, eas
