"""nginx OSS as a real process in front of three real CAS processes: every method it claims puts clients
where the method says, what it cannot do is refused, per-path rules, TLS modes, failover on a stopped
CAS (it has no active probe, so a failed probe URL goes unnoticed, as the design states), counters."""

from __future__ import annotations

import contextlib
import re
import socket

import psutil
import pytest

from lab.balancers import Unsupported
from lab.balancers.drivers.nginx import Nginx, answered_by, worker_connections

pytest.register_assert_rewrite("lbchecks")  # its asserts explain themselves like a test's

from lbchecks import (  # noqa: E402
    NAT,
    Client,
    HealthCheck,
    balancer_running,
    check_cookie_lifetime,
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
    reached_by_new_clients,
    set_health,
    spec_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with local_farm_running(tmp_path_factory.mktemp("nginx-farm")) as running:
        yield running


def test_version_claims_and_no_active_checks(tmp_path):
    driver = Nginx(spec_for("nginx"), tmp_path)
    assert driver.version().startswith("1.22")
    assert driver.methods == {"none", "leastconn", "source-ip", "lb-cookie", "cookie-hash", "header"}
    assert driver.active_health_checks is False


@pytest.mark.parametrize("method", ["none", "source-ip", "lb-cookie", "cookie-hash", "header"])
def test_method_puts_clients_where_it_says(farm, tmp_path, method):
    with balancer_running(spec_for("nginx", http=persistence(method)), tmp_path):
        check_method(method)


def test_leastconn_spares_a_busy_cas(farm, tmp_path):
    spec = spec_for("nginx", http=persistence("leastconn"), health=HealthCheck(interval_s=10))
    with balancer_running(spec, tmp_path):
        check_least_connections(farm[0])


def test_app_cookie_is_refused_with_the_alternatives(tmp_path):
    with pytest.raises(Unsupported) as refused:
        Nginx(spec_for("nginx", preset="article"), tmp_path).write_config()
    message = str(refused.value)
    assert "'app-cookie' persistence for owa (nginx OSS cannot learn a cookie" in message
    assert "for ecp it can do: none, leastconn, source-ip, lb-cookie, cookie-hash, header" in message


@pytest.mark.parametrize(
    ("method", "back_home"), [("lb-cookie", False), ("source-ip", True), ("header", True)]
)
def test_stopped_cas_moves_only_its_clients_and_return_follows_the_design(farm, tmp_path, method, back_home):
    with balancer_running(spec_for("nginx", http=persistence(method)), tmp_path):
        check_failover(method, reached_by_new_clients, back_home, client_for(method), farm=farm[0])


def test_a_failed_probe_url_goes_unnoticed(farm, tmp_path):
    """No active checks in nginx OSS: a CAS whose health is down (logon page 503) keeps its clients."""
    with balancer_running(spec_for("nginx", http=persistence("lb-cookie")), tmp_path):
        browsers = [Client(NAT) for _ in range(6)]
        homes = [b.request().server for b in browsers]
        set_health("CAS02", "down")
        try:
            assert [b.request().server for b in browsers] == homes
            assert "CAS02" in {Client(NAT).request().server for _ in range(3)}
        finally:
            set_health("CAS02", "up")


def test_a_stopped_cas_costs_no_errors(farm, tmp_path):
    check_stopped_cas_costs_no_errors("nginx", farm[0], tmp_path)


def test_recommended_preset_per_path_rules_on_one_vip(farm, tmp_path):
    check_recommended_per_path(spec_for("nginx", preset="recommended"), tmp_path)


def test_counters_agree_with_the_ledgers(farm, tmp_path):
    check_counters_agree_with_ledgers(spec_for("nginx", preset="recommended"), tmp_path, Nginx.counters)


@pytest.mark.parametrize("mode", ["offload", "bridge", "passthrough"])
def test_tls_modes(farm, tmp_path, mode):
    http = persistence("source-ip") if mode == "passthrough" else persistence("lb-cookie")
    check_tls_mode("nginx", farm[1], tmp_path, mode, http)


def test_vip_per_service(farm, tmp_path):
    check_vip_per_service(spec_for("nginx", preset="recommended", topology="vip-per-service"), tmp_path)


def test_access_log_line_names_the_cas_that_answered():
    hosts = {"127.0.16.11": "CAS01", "127.0.16.12": "CAS02"}
    retried = '"127.0.16.11:8080, 127.0.16.12:8080" "0, 312" 200 "GET /owa/" 127.16.3.1'
    assert answered_by(retried, hosts) == "CAS02"
    assert answered_by('"127.0.16.11:8080" "0" 502 "GET /owa/" 127.16.3.1', hosts) is None
    assert answered_by('"-" "-" 400 "GET /" 127.16.3.1', hosts) is None


def test_balancer_cookie_lifetime(farm, tmp_path):
    """Set again on every answer, so its Max-Age is an idle timeout."""
    check_cookie_lifetime("nginx", tmp_path, "90", refreshed=True)


class NginxWithFewConnections(Nginx):
    """nginx with 64 worker_connections per worker instead of what the open-file limit allows."""

    def render(self) -> dict[str, str]:
        return {
            name: text.replace(f"worker_connections {worker_connections()};", "worker_connections 64;")
            for name, text in super().render().items()
        }


def test_running_out_of_worker_connections_is_a_limit_reached(farm, tmp_path):
    """nginx logs when its worker_connections are not enough; limits_reached says so, which the verifier
    turns into an invalid run when sessions broke (lab/verifier/limits.py)."""
    spec = spec_for("nginx")
    with contextlib.ExitStack() as stack:
        driver = stack.enter_context(balancer_running(spec, tmp_path, NginxWithFewConnections))
        assert driver.limits_reached() == []
        address = (spec.vip.host, spec.vip.http_port)
        # nginx accepts until it has no connection left, then logs and drops them; each worker has 64,
        # and with 80 per worker one of them runs out however the kernel deals them.
        for _ in range(80 * Nginx.processes()):
            stack.enter_context(socket.create_connection(address))
        poll(lambda: driver.limits_reached() != [], what="nginx to log that it ran out")
        [reached] = driver.limits_reached()
        assert reached.startswith("nginx ran out of its worker_connections ")
        assert re.search(r"(once|\d[\d,]* times) \(its log: 'worker_connections are not enough'\)$", reached)


def test_a_crashed_worker_is_a_balancer_that_did_not_run_throughout(farm, tmp_path):
    """nginx's master starts a new worker for one that crashed, so nginx still runs, but the crashed
    worker's connections were cut: stopped() says so (the run is then invalid), and says nothing before."""
    with balancer_running(spec_for("nginx"), tmp_path) as driver:
        assert driver.stopped() is None
        psutil.Process(driver.process.pid).children()[0].kill()
        poll(lambda: driver.stopped() is not None, what="nginx to log its crashed worker")
        assert driver.stopped() == "an nginx worker process crashed once (its log: 'exited on signal')"
        assert driver.process.poll() is None  # the master runs on
