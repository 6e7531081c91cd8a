"""Rendering and refusing, without running balancers: every preset x TLS mode x topology either renders
a config the real binary accepts (haproxy -c, nginx -t, envoy --mode validate) or is refused by name;
every single method on every service is either claimed or refused with the driver's alternatives; the
layout's pools; the small parsers."""

from __future__ import annotations

import itertools
import json
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caslab.vocab import METHODS, SERVICES, TCP_SERVICES, TLS_MODES, TOPOLOGIES, VIP_GROUPS
from lab.balancers import DRIVERS, driver_class
from lab.balancers.drivers.nginx import answered_by
from lab.balancers.layout import build_layout
from lab.balancers.presets import PRESETS, resolve
from lab.balancers.process import listening_sockets
from lab.certs import make_tls_files
from lab.model import BalancerSpec, Persistence, Vip, local_farm

VIP = Vip("127.0.16.1")
SERVERS = local_farm(3, "127.0.16")
NAMED = {"app-cookie": "OutlookSession", "cookie-hash": "OutlookSession", "header": "Authorization"}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"), VIP, SERVERS)


def spec(driver, persistence, tls="none", topology="single-vip", tls_files=None, preset=None):
    files = tls_files if tls != "none" else None
    return BalancerSpec(driver, persistence, SERVERS, VIP, topology, tls, tls_files=files, preset=preset)


def test_every_driver_of_the_design_is_registered():
    assert set(DRIVERS) == {"haproxy", "envoy", "nginx", "traefik", "external"}


def test_a_balancer_cookie_without_idle_timeout_is_a_note_of_the_drivers_that_have_none(tmp_path):
    """Envoy and Traefik do lb-cookie with a session cookie that never expires while the browser runs:
    the spec's persistence timeout is not enforced, and every run says so (run notes); HAProxy and
    nginx enforce it, and a spec without lb-cookie has nothing to say."""
    recommended = resolve("recommended")  # lb-cookie on owa, ecp and ews
    for driver in ("haproxy", "nginx", "external"):
        assert driver_class(driver)(spec(driver, recommended), tmp_path).unenforced() == []
    for driver in ("envoy", "traefik"):
        [note] = driver_class(driver)(spec(driver, recommended), tmp_path).unenforced()
        assert note.startswith(f"{driver} does not expire its balancer cookie (lb-cookie on ecp, ews, owa)")
        assert driver_class(driver)(spec(driver, resolve("source-ip-all")), tmp_path).unenforced() == []


@pytest.mark.parametrize("driver", ["haproxy", "envoy", "nginx", "traefik", "external"])
def test_every_preset_tls_and_topology_renders_a_valid_config_or_is_refused(driver, tls_files, tmp_path):
    accepted = 0
    for preset, tls, topology in itertools.product(PRESETS, TLS_MODES, TOPOLOGIES):
        s = spec(driver, resolve(preset), tls, topology, tls_files, preset)
        balancer = driver_class(driver)(s, tmp_path / f"{preset}-{tls}-{topology}")
        refusals = balancer.refusals()
        if refusals:
            assert all(" it can do: " in str(r) or "one TCP listener" in str(r) for r in refusals), (
                refusals
            )  # each names what the driver has instead
            continue
        accepted += 1
        if hasattr(balancer, "validate"):
            balancer.validate()  # the real binary's own check (Traefik and external have none)
        else:
            balancer.write_config()
        for name, text in balancer.render().items():
            if name.endswith((".json", ".yml")):
                json.loads(text)
            assert "0.0.0.0" not in text  # loopback only
    assert accepted >= 8  # at least none-all in every mode and topology


@pytest.mark.parametrize("driver", ["haproxy", "envoy", "nginx", "traefik"])
def test_each_method_on_each_service_is_claimed_or_refused_with_the_alternatives(driver, tls_files):
    cls = driver_class(driver)
    for service, method, tls in itertools.product(SERVICES, METHODS, ("none", "passthrough")):
        if tls == "passthrough" and service not in TCP_SERVICES:
            # One TCP listener for all web services: give them all the method.
            overrides = {s: Persistence(method, NAMED.get(method)) for s in SERVICES if s not in TCP_SERVICES}
        else:
            overrides = {service: Persistence(method, NAMED.get(method))}
        refusals = cls(
            spec(driver, resolve("none-all", overrides), tls, tls_files=tls_files), Path(".")
        ).refusals()
        tcp = service in TCP_SERVICES or tls == "passthrough"
        web_passthrough = tls == "passthrough" and service not in TCP_SERVICES
        possible = {"none", "leastconn", "source-ip"} | ({"ssl-session-id"} if web_passthrough else set())
        claimed = (cls.tcp_methods if tcp and cls.tcp_methods is not None else cls.methods) & (
            possible if tcp else set(METHODS) - {"ssl-session-id"}
        )
        mine = [str(r) for r in refusals if f"persistence for {service}" in str(r)]
        if method in claimed:
            assert mine == [], mine
        else:
            assert len(mine) == 1, (service, method, tls, refusals)
            assert f"'{method}' persistence for {service}" in mine[0]
            listed = mine[0].rsplit("it can do: ", 1)[1].split(", ")
            assert set(listed) == claimed and method not in listed


def test_only_haproxy_does_ssl_session_id_and_only_with_passthrough(tls_files):
    over = {s: Persistence("ssl-session-id") for s in SERVICES if s not in TCP_SERVICES}
    for driver in ("haproxy", "envoy", "nginx", "traefik"):
        refused = driver_class(driver)(
            spec(driver, resolve("none-all", over), "passthrough", tls_files=tls_files), Path(".")
        )
        assert (refused.refusals() == []) == (driver == "haproxy")
    offload = driver_class("haproxy")(
        spec("haproxy", resolve("none-all", over), "offload", tls_files=tls_files), Path(".")
    )
    assert any("only with tls passthrough" in str(r) for r in offload.refusals())


def test_a_fallback_is_only_for_a_key_the_client_may_not_send():
    odd = resolve("none-all", {"owa": Persistence("lb-cookie", fallback=Persistence("source-ip"))})
    refusals = driver_class("haproxy")(spec("haproxy", odd), Path(".")).refusals()
    assert any("owa: a fallback is only for" in str(r) for r in refusals)


def test_pools_owa_and_ecp_share_one_when_their_methods_match_and_tcp_shares_one_rule():
    recommended = build_layout(spec("haproxy", resolve("recommended")))
    names = [p.name for p in recommended.pools]
    assert names[:2] == ["owa_ecp", "ews"] and "owa" not in names
    ab = next(p for p in recommended.pools if p.name == "addressbook")
    assert ab.rule_owner == "mapi" and ab.port(SERVERS[0]) == 59532
    article = build_layout(spec("haproxy", resolve("article")))
    assert {"owa", "ecp"} <= {p.name for p in article.pools}
    routes = {r.service: r.pool.name for r in article.listeners[0].routes}
    assert routes["owa"] == "owa" and routes["ecp"] == "ecp"
    assert next(p for p in article.pools if p.name == "addressbook").rule_owner == "mapi"
    mixed = resolve("source-ip-all", {"addressbook": Persistence("source-ip", timeout_s=60)})
    assert (
        next(p for p in build_layout(spec("haproxy", mixed)).pools if p.name == "addressbook").rule_owner
        is None
    )


def test_vip_per_service_listens_on_one_address_per_group():
    layout = build_layout(spec("haproxy", resolve("article"), topology="vip-per-service"))
    hosts = {listener.name: listener.host for listener in layout.listeners}
    assert hosts["owa_ecp"] == "127.0.16.2" and hosts["mapi"] == hosts["addressbook"] == "127.0.16.8"
    owa_ecp = next(listener for listener in layout.listeners if listener.name == "owa_ecp")
    assert [r.service for r in owa_ecp.routes] == ["ecp"] and owa_ecp.default.name == "owa"


@given(st.integers(0, 246), st.sampled_from(SERVICES))
def test_service_hosts_are_distinct_per_group_and_beside_the_vip(last, service):
    vip = Vip(f"127.0.16.{last}")
    hosts = vip.hosts("vip-per-service")
    assert len(set(hosts)) == len(VIP_GROUPS) and vip.host not in hosts
    group = next(g for g in VIP_GROUPS if service in g)
    assert {vip.service_host(s, "vip-per-service") for s in group} == {
        vip.service_host(service, "vip-per-service")
    }
    assert vip.service_host(service) == vip.host


addresses = st.sampled_from(["127.0.16.11", "127.0.16.12", "127.0.16.13", "10.9.9.9"])
attempts = st.lists(
    st.tuples(addresses, st.integers(1, 65535), st.integers(0, 10**6)), min_size=1, max_size=4
)


@given(attempts, st.integers(100, 599))
def test_nginx_log_line_names_the_last_upstream_that_sent_anything(tried, status):
    hosts = {s.host: s.name for s in SERVERS}
    line = '"{}" "{}" {} "GET /owa/" 127.16.1.1'.format(
        ", ".join(f"{a}:{p}" for a, p, _ in tried), ", ".join(str(b) for _, _, b in tried), status
    )
    address, _, received = tried[-1]
    assert answered_by(line, hosts) == (hosts.get(address) if received else None)


@given(st.text(max_size=80))
def test_nginx_log_parser_never_raises(line):
    assert answered_by(line, {"127.0.16.11": "CAS01"}) in (None, "CAS01")


def test_listening_sockets_reads_the_kernel_table():
    with socket.socket() as listener:
        listener.bind(("127.0.16.50", 0))
        port = listener.getsockname()[1]
        assert ("127.0.16.50", port) not in listening_sockets()
        listener.listen()
        assert ("127.0.16.50", port) in listening_sockets()


def test_web_pools_with_one_source_ip_rule_share_it_so_an_address_reaches_one_cas():
    pools = {p.name: p for p in build_layout(spec("haproxy", resolve("source-ip-all"))).pools}
    assert pools["owa_ecp"].rule_owner is None and pools["addressbook"].rule_owner == "mapi"
    assert {pools[s].rule_owner for s in ("ews", "eas", "rpchttp", "oab", "autodiscover")} == {"owa_ecp"}
    config = driver_class("haproxy")(spec("haproxy", resolve("source-ip-all")), Path(".")).render()
    assert config["haproxy.cfg"].count("stick on src table owa_ecp") == 5
    longer = resolve("source-ip-all", {"ews": Persistence("source-ip", timeout_s=60)})
    assert next(p for p in build_layout(spec("haproxy", longer)).pools if p.name == "ews").rule_owner is None
