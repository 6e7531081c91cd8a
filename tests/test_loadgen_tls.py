"""The client kinds over HTTPS (loadgen/tls.py): they verify the run's CA, each kind has one TLS context
per process, and a client resumes its TLS session by ID on its next connection.

One CAS serves HTTPS with a certificate of the run's CA; the clients run in tests/loadgen_driver.py
(Locust patches its process with gevent, so the tests never import it).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator

import pytest
import trustme
from test_loadgen import KINDS, drive, walk

import mockcas  # noqa: F401 - before aiohttp anywhere (the CAS processes need the pure-Python parser)
from lab.certs import make_tls_files
from lab.farm import LocalFarm
from lab.model import TlsFiles, Vip, local_farm

SERVERS = local_farm(1, "127.0.25")
CAS01 = f"https://{SERVERS[0].host}:{SERVERS[0].https_port}"


@pytest.fixture(scope="module")
def tls_farm(tmp_path_factory) -> Iterator[TlsFiles]:
    run_dir = tmp_path_factory.mktemp("loadgen-tls")
    files = make_tls_files(run_dir / "tls", Vip("127.0.25.1"), SERVERS)
    farm = LocalFarm(
        SERVERS, farm_key=secrets.token_bytes(32), run_dir=run_dir / "farm", time_scale=240, tls_files=files
    )
    farm.start()
    try:
        yield files
    finally:
        farm.stop()


def test_every_kind_walks_its_flows_over_https_verifying_the_run_ca(tls_farm, tmp_path):
    _, events = walk(tmp_path, CAS01, rounds=1, ca=tls_farm.ca_pem)
    assert {e["client_kind"] for e in events} == set(KINDS)
    failed = [(e["client_kind"], e["service"], e["detail"]) for e in events if e["outcome"] != "ok"]
    assert failed == []


def test_a_certificate_of_another_ca_fails_every_kinds_handshake(tls_farm, tmp_path):
    stranger = tmp_path / "other-ca.pem"
    trustme.CA(organization_name="not the run's CA").cert_pem.write_to_path(str(stranger))
    # MAPI and Address Book are plain TCP (no TLS in any mode): only the HTTPS kinds' services count.
    _, events = walk(tmp_path, CAS01, rounds=1, kind_seconds=10, ca=stranger)
    https = [e for e in events if e["service"] not in ("mapi", "addressbook")]
    assert {e["client_kind"] for e in https} == set(KINDS)
    assert Counter(e["outcome"] for e in https) == {"transport": len(https)}
    assert all(e["detail"].startswith("SSLCertVerificationError") for e in https), {
        e["detail"] for e in https
    }


def tls_facts(files: TlsFiles, kinds: tuple[str, ...], version: str) -> dict[str, dict]:
    return drive("tls", "--host", CAS01, "--ca", str(files.ca_pem), "--kinds", ",".join(kinds),
                 "--tls-max-version", version)  # fmt: skip


def test_two_users_of_a_kind_share_the_kinds_one_context(tls_farm):
    facts = tls_facts(tls_farm, KINDS, "1.3")
    assert {kind: f["shared_context"] for kind, f in facts.items()} == dict.fromkeys(KINDS, True)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_a_clients_second_connection_resumes_its_session(tls_farm, version):
    """Under TLS 1.2 by session ID (no tickets: OP_NO_TICKET), under 1.3 by the server's PSK; and an
    Outlook's IN channel resumes the session of the OUT channel it opened just before."""
    facts = tls_facts(tls_farm, ("browser", "eas-device", "outlook2010-rpchttp"), version)
    name = f"TLSv{version}"
    for kind, f in facts.items():
        first, second = f["connections"]
        assert first["version"] == second["version"] == name, kind
        assert not first["session_reused"] and second["session_reused"], (kind, f["connections"])
    channels = facts["outlook2010-rpchttp"]["channels"]
    assert channels["in"] == {"version": name, "session_reused": True}, channels
