"""The external driver: nothing started, what the user's balancer must do rendered, counters from the
farm's ledgers. A real HAProxy stands in for the user's appliance."""

from __future__ import annotations

import uuid

import pytest

from lab.balancers import BalancerError
from lab.balancers.drivers.external import External
from lab.model import Persistence

pytest.register_assert_rewrite("lbchecks")  # its asserts explain themselves like a test's

from lbchecks import (  # noqa: E402
    Client,
    balancer_running,
    local_farm_running,
    spec_for,
)

pytestmark = pytest.mark.slow


def test_takes_the_scenario_at_its_word_but_refuses_the_impossible(tmp_path):
    assert External(spec_for("external", preset="article"), tmp_path).refusals() == []
    impossible = spec_for("external", overrides={"mapi": Persistence("header", "Authorization")})
    assert any(
        "for mapi it can do: none, leastconn, source-ip" in str(r)
        for r in External(impossible, tmp_path).refusals()
    )


def test_renders_what_the_appliance_must_do(tmp_path):
    text = External(spec_for("external", preset="recommended"), tmp_path).render()["external.txt"]
    assert "127.0.16.1:8080 http: /owa, /ecp" in text
    assert "owa_ecp (owa, ecp): lb-cookie, idle timeout 1800 s" in text
    assert "rpchttp (rpchttp): cookie-hash OutlookSession (fallback source-ip)" in text
    assert (
        "addressbook (addressbook): source-ip, idle timeout 1800 s, sharing the source-IP table of mapi"
        in text
    )
    assert "GET /owa/auth/logon.aspx" in text and "'Outlook Web App'" in text


def test_wait_ready_fails_when_nothing_listens(tmp_path):
    driver = External(spec_for("external"), tmp_path)
    with pytest.raises(BalancerError, match=r"127\.0\.16\.1:8080 does not accept connections"):
        driver.wait_ready(timeout=0.3)


def test_counts_the_labs_requests_from_the_ledgers(tmp_path):
    with (
        local_farm_running(tmp_path / "farm"),
        balancer_running(spec_for("haproxy"), tmp_path / "appliance") as appliance,
    ):
        external = External(spec_for("external"), tmp_path / "run")
        external.start()
        external.wait_ready(timeout=5)
        before = appliance.counters()
        for i in range(9):
            Client(f"127.16.13.{i + 1}").request("/owa/", headers={"X-CasLab-Request": str(uuid.uuid4())})
        Client("127.16.13.99").request("/owa/")  # no request id: not the lab's (like the appliance's probes)
        through = {name: n - before[name] for name, n in appliance.counters().items()}
        counted = external.counters()
        assert sum(counted.values()) == 9
        assert all(counted[name] <= through[name] for name in counted)
        assert sum(through.values()) == 10
        external.stop()  # nothing to stop: the appliance still answers
        assert Client("127.16.13.1").request("/owa/").server
