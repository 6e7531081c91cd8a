"""Traefik as a real process in front of three real CAS processes: the methods it claims put clients where
they say, the rest is refused by name, per-path cookies, TLS modes, failover, counters."""

from __future__ import annotations

import contextlib
import json
import re
import socket

import pytest

from lab.balancers import Unsupported
from lab.balancers.drivers.traefik import Traefik
from lab.model import Persistence

pytest.register_assert_rewrite("lbchecks")  # its asserts explain themselves like a test's

from lbchecks import (  # noqa: E402
    NAT,
    Client,
    balancer_running,
    check_cookie_lifetime,
    check_counters_agree_with_ledgers,
    check_failover,
    check_method,
    check_rpc_in_channel_streams,
    check_stopped_cas_costs_no_errors,
    check_tls_mode,
    check_vip_per_service,
    client_for,
    local_farm_running,
    persistence,
    poll,
    set_health,
    spec_for,
)

pytestmark = pytest.mark.slow
TCP_NONE = {"mapi": Persistence("none"), "addressbook": Persistence("none")}


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with local_farm_running(tmp_path_factory.mktemp("traefik-farm")) as running:
        yield running


def test_version_claims_and_no_phoning_home(tmp_path):
    driver = Traefik(spec_for("traefik"), tmp_path)
    assert driver.version().startswith("3.7")
    assert driver.methods == {"none", "source-ip", "lb-cookie"}
    static = json.loads(driver.render()["traefik.yml"])
    assert static["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    assert all(ep["address"].startswith("127.") for ep in static["entryPoints"].values())


def test_what_traefik_cannot_do_is_refused_by_name(tmp_path):
    with pytest.raises(Unsupported) as refused:
        Traefik(spec_for("traefik", preset="recommended"), tmp_path).write_config()
    message = str(refused.value)
    assert "'header' persistence for eas (Traefik has no header hashing)" in message
    assert "for eas it can do: none, source-ip, lb-cookie" in message
    assert "'cookie-hash' persistence for rpchttp" in message
    assert (
        "'source-ip' persistence for mapi (Traefik's TCP services only round-robin); for mapi it can do: none"
        in message
    )
    leastconn = Traefik(spec_for("traefik", http=Persistence("leastconn")), tmp_path).refusals()
    assert any("approximation of least connections" in str(r) for r in leastconn)


@pytest.mark.parametrize("method", ["none", "source-ip", "lb-cookie"])
def test_method_puts_clients_where_it_says(farm, tmp_path, method):
    with balancer_running(spec_for("traefik", http=persistence(method)), tmp_path):
        check_method(method)


@pytest.mark.parametrize(("method", "back_home"), [("lb-cookie", False), ("source-ip", True)])
def test_health_down_moves_only_that_cas_clients_and_return_follows_the_design(
    farm, tmp_path, method, back_home
):
    with balancer_running(spec_for("traefik", http=persistence(method)), tmp_path) as driver:
        check_failover(method, lambda name: driver.healthy()[name], back_home, client_for(method))


def test_drain_reads_as_down(farm, tmp_path):
    with balancer_running(spec_for("traefik", http=persistence("none")), tmp_path) as driver:
        set_health("CAS02", "drain")
        try:
            poll(lambda: not driver.healthy()["CAS02"], what="CAS02 out")
            assert "CAS02" not in Client(NAT).servers(6)
        finally:
            set_health("CAS02", "up")


def test_a_stopped_cas_costs_no_errors(farm, tmp_path):
    check_stopped_cas_costs_no_errors("traefik", farm[0], tmp_path)


def test_per_path_cookies_on_one_vip_and_the_rpc_in_channel(farm, tmp_path):
    with balancer_running(spec_for("traefik", preset="lb-cookie-all", overrides=TCP_NONE), tmp_path):
        browser = Client(NAT)
        first = browser.request("/OWA/")
        assert "lb_owa_ecp" in first.set_cookies()
        assert {browser.request(p).server for p in ("/owa/", "/ECP/")} == {first.server}
        assert "lb_ews" in browser.request("/EWS/Exchange.asmx").set_cookies()
        assert browser.request("/owa/").server == first.server
        check_rpc_in_channel_streams()


def test_counters_agree_with_the_ledgers(farm, tmp_path):
    spec = spec_for("traefik", preset="lb-cookie-all", overrides=TCP_NONE)
    check_counters_agree_with_ledgers(spec, tmp_path, Traefik.counters)


@pytest.mark.parametrize("mode", ["offload", "bridge", "passthrough"])
def test_tls_modes(farm, tmp_path, mode):
    check_tls_mode(
        "traefik", farm[1], tmp_path, mode, persistence("none" if mode == "passthrough" else "lb-cookie")
    )


def test_vip_per_service(farm, tmp_path):
    spec = spec_for("traefik", preset="lb-cookie-all", overrides=TCP_NONE, topology="vip-per-service")
    check_vip_per_service(spec, tmp_path, tcp=False)


def test_balancer_cookie_lifetime(farm, tmp_path):
    """A session cookie: Traefik never refreshes it, so a lifetime would log busy users off."""
    check_cookie_lifetime("traefik", tmp_path, "", refreshed=False)


class TraefikWithFewFiles(Traefik):
    """Traefik started with an open-file limit of 200, soft and hard."""

    def command(self) -> list[str]:
        return ["prlimit", "--nofile=200:200", *super().command()]


def test_running_out_of_open_files_is_a_limit_reached(farm, tmp_path):
    """Traefik has no connection limit of its own in the lab's config: clients held open take its files,
    then it logs each accept it cannot make; limits_reached says so, which the verifier turns into an
    invalid run when sessions broke (lab/verifier/limits.py)."""
    spec = spec_for("traefik")
    with contextlib.ExitStack() as stack:
        driver = stack.enter_context(balancer_running(spec, tmp_path, TraefikWithFewFiles))
        assert driver.limits_reached() == []
        address = (spec.vip.host, spec.vip.http_port)
        for _ in range(250):
            stack.enter_context(socket.create_connection(address))
        poll(lambda: driver.limits_reached() != [], what="traefik to log that it ran out of files")
        [reached] = driver.limits_reached()
        assert reached.startswith("traefik ran out of open files ")
        assert re.search(r"(once|\d[\d,]* times) \(its log: 'too many open files'\)", reached), reached
