"""impacket's RPC over HTTP v2 client ([MS-RPCH], the transport Outlook Anywhere uses) against the mock
CAS farm behind the default balancer with TLS offload: it opens the IN and OUT channels through
/rpc/rpcproxy.dll (offering NTLM first, then Basic, the only scheme the mock's IIS offers), sends
CONN/A1 and CONN/B1 and reads CONN/A3 and CONN/C2: a virtual connection joined on one CAS. Under
`none-all` the two channels reach two CAS and neither is joined, as on an Exchange 2010 farm without
affinity.

impacket opens its HTTPS channels with an SSLContext that checks nothing; the one factory it has for
them is replaced here by one that verifies the run's CA, with a socket timeout so that a silent server
fails a test instead of hanging it (everything else is impacket's own).
"""

from __future__ import annotations

import ssl
import threading
from http.client import HTTPSConnection

import pytest
from impacket.dcerpc.v5.transport import HTTPTransport
from impacket.http import AUTH_BASIC, HTTPClientSecurityProvider
from interop import PAIRING_WAIT_S, PASSWORD, USER, VIP, interop_lab, marks, poll, rows

pytestmark = pytest.mark.slow

RPC_PROXY = f"https://{VIP.host}:{VIP.https_port}/rpc/rpcproxy.dll"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with interop_lab(tmp_path_factory.mktemp("interop-rpchttp")) as running:
        yield running


@pytest.fixture
def trusting_the_run_ca(lab, monkeypatch):
    context = ssl.create_default_context(cafile=str(lab.tls.ca_pem))

    def connect(self: HTTPClientSecurityProvider, protocol: str, host_port: str) -> HTTPSConnection:
        assert protocol == "https"
        return HTTPSConnection(host_port, context=context, timeout=10)

    monkeypatch.setattr(HTTPClientSecurityProvider, "connect", connect)


def outlook_anywhere() -> HTTPTransport:
    """impacket's ncacn_http transport through the RPC proxy, to the mailbox store endpoint (6001)."""
    transport = HTTPTransport("outlook.caslab.test", 6001)
    transport.set_rpc_proxy_url(RPC_PROXY)
    transport.set_credentials(USER, PASSWORD)
    return transport


def test_impacket_joins_a_virtual_connection_through_the_balancer(lab, trusting_the_run_ca):
    with lab.balancer("recommended"):
        start = marks()
        transport = outlook_anywhere()
        transport.connect()  # IN and OUT channels, CONN/A1, CONN/B1; returns once CONN/C2 is read
        assert transport.get_auth_type() == AUTH_BASIC
        transport.disconnect()
        channels = rows("rpchttp", start)
    refused, *joined = channels
    assert (refused["status"], refused["detail"]) == (401, "unauthenticated")  # the NTLM offer
    assert len(joined) == 2 and {r["state"] for r in joined} == {"new", "own"}, channels
    assert len({r["server"] for r in joined}) == 1 and len({r["session_key"] for r in joined}) == 1


def test_impacket_channels_split_by_round_robin_are_never_joined(lab, trusting_the_run_ca):
    """Round robin sends the OUT channel to the CAS after the IN channel's: each CAS holds a lone half
    until the pairing wait ends and records the split. impacket never returns from connect() then: it
    waits for CONN/C2, and when the CAS ends the OUT stream it reads the ended stream as empty reads
    forever. So connect() runs in a thread, which the test ends by closing its channels."""
    with lab.balancer("none-all"):
        start = marks()
        transport = outlook_anywhere()
        outcome: list[BaseException | str] = []

        def connect() -> None:
            try:
                transport.connect()
                outcome.append("joined")
            except BaseException as err:  # whatever ends it once its channels are closed under it
                outcome.append(err)

        connecting = threading.Thread(target=connect, daemon=True)
        connecting.start()

        def split() -> list[dict]:
            return [r for r in rows("rpchttp", start) if r["detail"] == "channel-split"]

        poll(lambda: len(split()) == 2, timeout=PAIRING_WAIT_S + 10, what="both CAS to record the split")
        transport.close_rpc_out_channel()
        transport.close_rpc_in_channel()
        connecting.join(10)
    assert not connecting.is_alive() and outcome and outcome[0] != "joined", outcome
    halves = split()
    assert {r["state"] for r in halves} == {"foreign"} and len({r["server"] for r in halves}) == 2, halves
    assert len({r["session_key"] for r in halves}) == 1  # one virtual connection, its halves on two CAS
