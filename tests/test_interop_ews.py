"""exchangelib, a real EWS client, against the mock CAS farm behind the default balancer with TLS offload:
it reads the ServerVersionInfo header, keeps exchangecookie and the balancer's cookie, makes a pull
subscription, polls it and ends it; under `none-all` its GetEvents reaches another CAS and gets
ErrorSubscriptionNotFound, as against an Exchange 2010 farm without affinity. It also guesses the server
version by itself (ConvertId of a dummy id) and reads the folder properties it asks for."""

from __future__ import annotations

import re

import pytest
import requests
from exchangelib import DELEGATE, Account, Build, Configuration, Credentials, Version
from exchangelib.errors import ErrorSubscriptionNotFound, TransportError
from exchangelib.protocol import BaseProtocol, close_connections
from interop import PASSWORD, USER, VIP, interop_lab, marks, rows

pytestmark = pytest.mark.slow

EWS_URL = f"https://{VIP.host}:{VIP.https_port}/EWS/Exchange.asmx"
EXCHANGE_2010_SP1 = Build(14, 1, 218, 15)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with interop_lab(tmp_path_factory.mktemp("interop-ews")) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_client():
    """exchangelib keeps one protocol (sessions, cookies, TLS trust) per endpoint and user for the
    whole process; each test starts with none."""
    close_connections()
    yield
    close_connections()


@pytest.fixture
def trusting_the_run_ca(lab, monkeypatch):
    """exchangelib's documented way to trust a private CA: its HTTP adapter verifies against that file.
    Verification stays on: only where the trust comes from changes."""

    class RunCaAdapter(requests.adapters.HTTPAdapter):
        def cert_verify(self, conn, url, verify, cert):
            super().cert_verify(conn=conn, url=url, verify=str(lab.tls.ca_pem), cert=cert)

    monkeypatch.setattr(BaseProtocol, "HTTP_ADAPTER_CLS", RunCaAdapter)


def account(url: str = EWS_URL, *, version_hint: bool = True) -> Account:
    """An exchangelib account on `url`, no Autodiscover. exchangelib finds the auth scheme itself, from
    the 401 challenge of a request without credentials (Basic: what the mock's IIS offers). With
    `version_hint` it starts from plain Exchange 2010 (exchangelib's own guess fails against the
    mock, see below), which the first answer's ServerVersionInfo then corrects; without, exchangelib
    asks the server before its first request."""
    config = Configuration(
        service_endpoint=url,
        credentials=Credentials(USER, PASSWORD),
        version=Version(build=Build(14, 0)) if version_hint else None,
    )
    return Account(USER, config=config, autodiscover=False, access_type=DELEGATE)


def test_exchangelib_subscribes_polls_and_unsubscribes_through_the_balancer(lab, trusting_the_run_ca):
    with lab.balancer("recommended"):
        start = marks()
        client = account()
        inbox = client.inbox  # GetFolder (root, then inbox)
        assert inbox.id.startswith("AAMk"), inbox.id
        # exchangelib took the server's version from the ServerVersionInfo SOAP header.
        assert client.version.build == EXCHANGE_2010_SP1
        assert client.version.api_version == "Exchange2010_SP1"

        subscription, watermark = inbox.subscribe_to_pull(timeout=10)
        notifications = list(inbox.get_events(subscription, watermark))
        assert [n.subscription_id for n in notifications] == [subscription]
        assert notifications[0].events, "a GetEvents answer holds at least a StatusEvent"
        assert inbox.unsubscribe(subscription) is True

        session = client.protocol.get_session()
        jar = {c.name: c.value for c in session.cookies}
        client.protocol.release_session(session)
        assert re.fullmatch("[0-9a-f]{32}", jar["exchangecookie"]), jar
        assert "lb_ews" in jar, jar  # the balancer's cookie, kept by requests' jar

        challenge, *ews = rows("ews", start)
        assert (challenge["status"], challenge["detail"]) == (401, "no valid credentials")  # auth probe
        assert [r["detail"].split()[0] for r in ews] == [
            "GetFolder", "GetFolder", "Subscribe", "GetEvents", "Unsubscribe"
        ]  # fmt: skip
        assert [r["state"] for r in ews[2:]] == ["new", "own", "own"]
        assert len({r["server"] for r in ews}) == 1, ews  # lb-cookie kept every request on one CAS
        # The second GetFolder came with the exchangecookie the first answer set.
        assert ews[1]["session_key"] == jar["exchangecookie"]


def test_exchangelib_verifies_the_balancers_certificate(lab):
    """Without the run's CA exchangelib refuses the VIP: the test above really verifies TLS."""
    with lab.balancer("recommended"), pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        account().inbox  # noqa: B018 - the property does the GetFolder


def test_exchangelib_get_events_on_another_cas_is_subscription_not_found(lab, trusting_the_run_ca):
    """Round robin sends GetEvents to the CAS after the one that holds the subscription."""
    with lab.balancer("none-all"):
        start = marks()
        inbox = account().inbox
        subscription, watermark = inbox.subscribe_to_pull(timeout=10)
        with pytest.raises(ErrorSubscriptionNotFound):
            list(inbox.get_events(subscription, watermark))
        subscribe, get_events = rows("ews", start)[-2:]
    assert subscribe["detail"].startswith("Subscribe") and subscribe["state"] == "new"
    assert get_events["detail"] == f"subscription made by {subscribe['server'].lower()}.caslab.test"
    assert get_events["state"] == "foreign" and get_events["server"] != subscribe["server"]


# -- where exchangelib and the mock disagree (direct to one CAS, no balancer) -------------------------

DIRECT_URL = "http://127.0.40.11:8080/EWS/Exchange.asmx"


def test_exchangelib_guesses_the_server_version(lab):
    client = account(DIRECT_URL, version_hint=False)
    assert client.protocol.version.build == EXCHANGE_2010_SP1


def test_exchangelib_reads_the_inbox_properties(lab):
    inbox = account(DIRECT_URL).inbox
    assert (inbox.name, inbox.total_count is not None) == ("Inbox", True)
