"""HAProxy as a real process in front of three real CAS processes: every method it claims puts clients
where the method says, per-path rules on one VIP, each TLS mode, failover and drain, counters."""

from __future__ import annotations

import ssl

import pytest
from lbchecks import (
    NAMES,
    NAT,
    VIP,
    Client,
    HealthCheck,
    balancer_running,
    basic,
    check_failover,
    check_least_connections,
    check_mapi_and_addressbook_together,
    check_method,
    check_rpc_in_channel_streams,
    client_for,
    dead_port,
    ledger_count,
    local_farm_running,
    persistence,
    poll,
    set_health,
    spec_for,
    tls_client_context,
    tls_get,
)

from lab.balancers.haproxy import HAProxy
from lab.model import SERVICES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with local_farm_running(tmp_path_factory.mktemp("haproxy-farm")) as running:
        yield running


def status(driver: HAProxy, name: str) -> str:
    return next(r["status"] for r in driver.stats() if r["pxname"] == "health" and r["svname"] == name)


def test_version_and_claims(tmp_path):
    driver = HAProxy(spec_for("haproxy"), tmp_path)
    assert driver.version().startswith("2.6")
    assert driver.methods == {"none", "leastconn", "source-ip", "lb-cookie", "app-cookie", "cookie-hash",
                              "header", "ssl-session-id"}  # fmt: skip


@pytest.mark.parametrize("method", ["none", "source-ip", "lb-cookie", "app-cookie", "cookie-hash", "header"])
def test_method_puts_clients_where_it_says(farm, tmp_path, method):
    with balancer_running(spec_for("haproxy", http=persistence(method)), tmp_path):
        check_method(method)


def test_leastconn_spares_a_busy_cas(farm, tmp_path):
    # Slow probes: the stopped CAS must stay "up", so only least-connections keeps requests off it.
    spec = spec_for("haproxy", http=persistence("leastconn"), health=HealthCheck(interval_s=10))
    with balancer_running(spec, tmp_path):
        check_least_connections(farm[0])


@pytest.mark.parametrize(
    ("method", "back_home"),
    [
        ("lb-cookie", False),
        ("app-cookie", False),
        ("source-ip", False),
        ("header", False),
        ("cookie-hash", True),
    ],
)
def test_health_down_moves_only_that_cas_clients_and_return_follows_the_design(
    farm, tmp_path, method, back_home
):
    with balancer_running(spec_for("haproxy", http=persistence(method)), tmp_path) as driver:
        check_failover(
            method, lambda name: status(driver, name).startswith("UP"), back_home, client_for(method)
        )


def test_drain_keeps_persistent_clients_and_sends_new_ones_elsewhere(farm, tmp_path):
    with balancer_running(spec_for("haproxy", http=persistence("lb-cookie")), tmp_path) as driver:
        browsers = [Client(NAT) for _ in range(6)]
        homes = [b.request().server for b in browsers]
        set_health("CAS02", "drain")
        try:
            poll(lambda: status(driver, "CAS02") == "NOLB", what="CAS02 to drain")
            assert [b.request().server for b in browsers] == homes
            fresh = [Client(NAT).request().server for _ in range(6)]
            assert "CAS02" not in fresh and set(fresh) == {"CAS01", "CAS03"}
        finally:
            set_health("CAS02", "up")


def test_a_stopped_cas_costs_no_errors(farm, tmp_path):
    """CAS03's process ends while its probe still says up: `redispatch` sends its requests elsewhere."""
    local, _ = farm
    spec = spec_for("haproxy", http=persistence("lb-cookie"), health=HealthCheck(interval_s=10))
    with balancer_running(spec, tmp_path):
        browsers = [Client(NAT) for _ in range(6)]
        homes = [b.request().server for b in browsers]
        assert "CAS03" in homes
        local.stop(["CAS03"])
        try:
            for browser, home in zip(browsers, homes, strict=True):
                replies = [browser.request() for _ in range(2)]
                assert all(r.server for r in replies), [r.status for r in replies]
                assert "CAS03" not in {r.server for r in replies}
                if home != "CAS03":
                    assert {r.server for r in replies} == {home}
        finally:
            local.start(["CAS03"])


def test_recommended_preset_per_path_rules_on_one_vip(farm, tmp_path):
    with balancer_running(spec_for("haproxy", preset="recommended"), tmp_path):
        # OWA and ECP: one balancer cookie for both, whatever the case of the path.
        browser = Client(NAT)
        first = browser.request("/OWA/")
        assert "lb_owa_ecp" in first.set_cookies()
        assert {browser.request(p).server for p in ("/owa/", "/ecp/", "/ECP/", "/Owa/auth/logon.aspx")} == {
            first.server
        }
        # EWS: its own cookie, so a browser's EWS choice never moves its OWA session.
        assert "lb_ews" in browser.request("/EWS/Exchange.asmx").set_cookies()
        assert browser.request("/owa/").server == first.server
        # EAS: the Authorization header, for devices that keep no cookies.
        for i in range(4):
            device = Client(NAT, keep_cookies=False, headers={"Authorization": basic(f"user{i}")})
            assert len(set(device.servers(4, "/Microsoft-Server-ActiveSync?Cmd=Ping"))) == 1
        # RPC/HTTP: the client-made OutlookSession cookie, else the source address (Outlook 2007).
        outlook = Client(
            NAT, keep_cookies=False, cookies={"OutlookSession": "{6F9619FF-8B86-D011-B42D-00C04FC964FF}"}
        )
        assert len(set(outlook.servers(4, "/rpc/rpcproxy.dll"))) == 1
        homes = {
            len(set(Client(f"127.16.8.{i}", keep_cookies=False).servers(3, "/rpc/rpcproxy.dll")))
            for i in range(1, 7)
        }
        assert homes == {1}
        check_rpc_in_channel_streams()
        check_mapi_and_addressbook_together()


def test_counters_agree_with_the_ledgers(farm, tmp_path):
    before = {name: ledger_count(name) for name in NAMES}
    with balancer_running(spec_for("haproxy", preset="recommended"), tmp_path) as driver:
        for i in range(30):
            Client(f"127.16.9.{i + 1}").request(["/owa/", "/EWS/Exchange.asmx", "/oab/x", "/nothing"][i % 4])
        counted = driver.counters()
    after = {name: ledger_count(name) for name in NAMES}
    assert sum(counted.values()) == 30 + 1  # and balancer_running's one readiness request
    assert counted == {name: after[name] - before[name] for name in NAMES}


@pytest.mark.parametrize("mode", ["offload", "bridge", "passthrough"])
def test_tls_modes(farm, tmp_path, mode):
    """Each mode uses the CAS port it should (the other one points nowhere), clients verify the run's CA
    with TLS 1.2 and 1.3, and the CAS sees the client's address only when the balancer ends TLS
    (X-Forwarded-For); through passthrough it sees the balancer."""
    _, files = farm
    servers = dead_port(spec_for("haproxy").servers, "https_port" if mode == "offload" else "http_port")
    http = persistence("source-ip") if mode == "passthrough" else persistence("lb-cookie")
    spec = spec_for("haproxy", http=http, tls=mode, tls_files=files, servers=servers)
    before = sum(ledger_count(name, "127.16.10.1") for name in NAMES)
    with balancer_running(spec, tmp_path):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            client = Client("127.16.10.1", tls=tls_client_context(files, maximum=version))
            seen = client.servers(3, "/owa/")
            assert seen[0] and len(set(seen)) == 1
    rows_with_client_address = sum(ledger_count(name, "127.16.10.1") for name in NAMES) - before
    assert rows_with_client_address == (0 if mode == "passthrough" else 6)


def test_ssl_session_id_holds_for_tls12_resumption_only(farm, tmp_path):
    """Clients behind one NAT resuming TLS 1.2 sessions by ID stay on their CAS; TLS 1.3 clients cannot
    be kept (a fresh legacy session ID in every hello), so they are balanced connection by connection."""
    _, files = farm
    spec = spec_for("haproxy", http=persistence("ssl-session-id"), tls="passthrough", tls_files=files)
    with balancer_running(spec, tmp_path):
        homes = []
        for _ in range(6):
            ctx = tls_client_context(files, maximum=ssl.TLSVersion.TLSv1_2)
            ctx.options |= ssl.OP_NO_TICKET  # resume by session ID, as SChannel clients do
            server, session, _ = tls_get(ctx, NAT)
            for _ in range(3):
                again, session, resumed = tls_get(ctx, NAT, session)
                assert resumed and again == server
            homes.append(server)
        assert len(set(homes)) > 1
        ctx13 = tls_client_context(files)
        seen, session = [], None
        for _ in range(6):
            server, session, _ = tls_get(ctx13, NAT, session)
            seen.append(server)
        assert len(set(seen)) > 1, f"TLS 1.3 connections all stayed on {seen[0]}"


def test_vip_per_service(farm, tmp_path):
    spec = spec_for("haproxy", preset="recommended", topology="vip-per-service")
    with balancer_running(spec, tmp_path):
        browser = Client(NAT)
        owa_host = VIP.service_host("owa", "vip-per-service")
        first = browser.request("/owa/", host=owa_host)
        assert first.server and "lb_owa_ecp" in first.set_cookies()
        assert browser.request("/ecp/", host=owa_host).server == first.server
        for service in SERVICES[2:7]:
            assert Client(NAT).request("/", host=VIP.service_host(service, "vip-per-service")).server
        check_mapi_and_addressbook_together(VIP.service_host("mapi", "vip-per-service"))


def test_refuses_nothing_of_the_design(tmp_path):
    for preset in ("article", "recommended", "source-ip-all", "lb-cookie-all", "none-all"):
        assert HAProxy(spec_for("haproxy", preset=preset), tmp_path).refusals() == []
