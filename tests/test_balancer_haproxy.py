"""HAProxy as a real process in front of three real CAS processes: every method it claims puts clients
where the method says, per-path rules on one VIP, each TLS mode, failover and drain, counters."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import socket
import ssl

import pytest

from lab.balancers.drivers.haproxy import HAProxy

pytest.register_assert_rewrite("lbchecks")  # its asserts explain themselves like a test's

from lbchecks import (  # noqa: E402
    NAT,
    Client,
    HealthCheck,
    balancer_running,
    check_counters_agree_with_ledgers,
    check_failover,
    check_least_connections,
    check_method,
    check_recommended_per_path,
    check_stopped_cas_costs_no_errors,
    check_tls_mode,
    check_vip_per_service,
    client_for,
    local_farm_running,
    persistence,
    poll,
    set_health,
    spec_for,
    tls_client_context,
    tls_get,
)

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
    check_stopped_cas_costs_no_errors("haproxy", farm[0], tmp_path)


def test_recommended_preset_per_path_rules_on_one_vip(farm, tmp_path):
    check_recommended_per_path(spec_for("haproxy", preset="recommended"), tmp_path)


def test_counters_agree_with_the_ledgers(farm, tmp_path):
    check_counters_agree_with_ledgers(spec_for("haproxy", preset="recommended"), tmp_path, HAProxy.counters)


@pytest.mark.parametrize("mode", ["offload", "bridge", "passthrough"])
def test_tls_modes(farm, tmp_path, mode):
    http = persistence("source-ip") if mode == "passthrough" else persistence("lb-cookie")
    check_tls_mode("haproxy", farm[1], tmp_path, mode, http)


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
    check_vip_per_service(spec_for("haproxy", preset="recommended", topology="vip-per-service"), tmp_path)


def test_refuses_nothing_of_the_design(tmp_path):
    for preset in ("article", "recommended", "source-ip-all", "lb-cookie-all", "none-all"):
        assert HAProxy(spec_for("haproxy", preset=preset), tmp_path).refusals() == []


def test_a_stick_entry_expires_after_the_persistence_timeout(farm, tmp_path):
    """source-ip with a 1 s timeout: the client's entry leaves the table once idle that long, and its next
    request is balanced afresh (round robin: the CAS after the one the last new client got)."""
    with balancer_running(spec_for("haproxy", http=persistence("source-ip", 1)), tmp_path) as driver:
        first = Client("127.16.14.1").request().server
        second = Client("127.16.14.2").request().server
        assert "127.16.14.1" in driver.admin("show table owa_ecp")
        poll(lambda: "127.16.14.1" not in driver.admin("show table owa_ecp"), what="the entry to expire")
        third = Client("127.16.14.1").request().server
        assert len({first, second, third}) == 3


def test_a_full_stick_table_drops_its_oldest_entries(farm, tmp_path):
    """persistence_table_size 4: six clients leave at most four entries, the first client's gone and a
    newer one took its place (HAProxy purges "a few of the oldest" when full, not strictly the oldest one,
    and under load the newest can miss its entry while the purge catches up: measured in CI)."""
    spec = dataclasses.replace(spec_for("haproxy", http=persistence("source-ip")), persistence_table_size=4)
    with balancer_running(spec, tmp_path) as driver:
        assert " size:4," in driver.admin("show table owa_ecp")
        clients = [Client(f"127.16.23.{i}") for i in range(1, 7)]
        for client in clients:
            client.request()
        table = driver.admin("show table owa_ecp")
        kept = [c.source_ip for c in clients if f"key={c.source_ip} " in table]
        newer = {c.source_ip for c in clients[-2:]}
        assert len(kept) <= 4 and clients[0].source_ip not in kept and newer & set(kept), table


class HAProxyWithFewFiles(HAProxy):
    """HAProxy started with an open-file limit of 500, soft and hard (it sizes maxconn from the hard one)."""

    def command(self) -> list[str]:
        return ["prlimit", "--nofile=500:500", *super().command()]


def test_a_frontend_that_reached_its_connection_limit_says_so(farm, tmp_path):
    """Without a maxconn in the lab's config, HAProxy sizes its connection limit from its open-file limit;
    holding more connections than that to the VIP makes limits_reached name the frontend, which the
    verifier turns into an invalid run when sessions broke (lab/verifier/limits.py)."""
    spec = spec_for("haproxy")
    with contextlib.ExitStack() as stack:
        driver = stack.enter_context(balancer_running(spec, tmp_path, HAProxyWithFewFiles))
        assert driver.limits_reached() == []
        limit = int(next(r["slim"] for r in driver.stats() if r["svname"] == "FRONTEND"))
        assert limit < 250
        address = (spec.vip.host, spec.vip.http_port)
        held = [stack.enter_context(socket.create_connection(address)) for _ in range(limit + 5)]
        poll(lambda: driver.limits_reached() != [], what="the frontend to reach its limit")
        [reached] = driver.limits_reached()
        assert f"reached its connection limit of {limit:,}" in reached and len(held) == limit + 5


def test_a_global_maxconn_filled_by_two_frontends_says_so_once_sampled(farm, tmp_path):
    """Two frontends can fill HAProxy's global maxconn between them while neither reaches its own limit
    (smax < slim), and `show info` keeps no peak: only sample() during the load sees it, and then
    limits_reached names the global maxconn."""
    spec = spec_for("haproxy")
    with contextlib.ExitStack() as stack:
        driver = stack.enter_context(balancer_running(spec, tmp_path, HAProxyWithFewFiles))
        maxconn = int(driver.info()["Maxconn"])
        assert maxconn < 250
        half = maxconn // 2 + 3
        for port in (spec.vip.http_port, spec.vip.mapi_port):
            for _ in range(half):
                stack.enter_context(socket.create_connection((spec.vip.host, port)))

        def full() -> bool:
            driver.sample()
            return driver.most_connections >= maxconn

        poll(full, what="HAProxy to hold its global maxconn")
        frontends = [r for r in driver.stats() if r["svname"] == "FRONTEND" and r["smax"]]
        assert all(int(r["smax"]) < int(r["slim"]) for r in frontends), frontends  # none reached its own
        [reached] = driver.limits_reached()
        assert f"held its global maxconn of {maxconn:,} connections" in reached


def test_a_server_that_reached_its_maxconn_says_so(farm, tmp_path):
    """A server's maxconn (a user's file may set one) queues the requests beyond it: five requests held
    open at once (headers sent, body not) against servers allowed one each make limits_reached name a
    server and its queue. The lab's config sets none, so the test sets it on the stats socket."""
    spec = spec_for("haproxy")
    with contextlib.ExitStack() as stack:
        driver = stack.enter_context(balancer_running(spec, tmp_path))
        owa = next(r["pxname"] for r in driver.stats() if r["svname"] == "CAS01" and "owa" in r["pxname"])
        for server in ("CAS01", "CAS02", "CAS03"):
            driver.admin(f"set maxconn server {owa}/{server} 1")
        assert driver.limits_reached() == []
        headers = f"POST /owa/auth.owa HTTP/1.1\r\nHost: {spec.vip.host}\r\nContent-Length: 100\r\n\r\n"
        for _ in range(5):
            held = stack.enter_context(socket.create_connection((spec.vip.host, spec.vip.http_port)))
            held.sendall(headers.encode())
        poll(lambda: driver.limits_reached() != [], what="a server to reach its maxconn")
        reached = driver.limits_reached()
        assert reached and all(
            f"of backend {owa} reached its maxconn of 1: requests beyond it queued" in r for r in reached
        )
        assert re.search(r", [1-9]\d* for any server of the backend\)$", reached[0]), reached
