"""Idle timeouts and the persistence table size, without running balancers: each driver renders them with
its own directives (the scenario's own in its defaults, a service's own where that service has its
listener, route or pool), the real binaries accept the configs (haproxy -c, nginx -t, envoy --mode
validate), and what a driver cannot do is refused by name with what to do instead."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from caslab.vocab import TLS_MODES, TOPOLOGIES
from lab.balancers import driver_class
from lab.balancers.layout import build_layout
from lab.balancers.presets import resolve
from lab.certs import make_tls_files
from lab.model import BalancerSpec, Persistence, Timeouts, Vip, local_farm

VIP = Vip("127.0.16.1")
SERVERS = local_farm(3, "127.0.16")
# The scenario's own: 5 s client side, 10 s server side; RPC/HTTP its own 20 s and 1.5 s; MAPI its own
# server side (its TCP stream then idles out at the shorter one, the scenario's client side).
TIMERS = Timeouts(5, 10, {"rpchttp": Timeouts(20, 1.5), "mapi": Timeouts(None, 60)})


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"), VIP, SERVERS)


def spec(
    driver: str,
    timeouts: Timeouts = TIMERS,
    *,
    preset: str = "recommended",
    topology: str = "single-vip",
    tls: str = "none",
    size: int | None = None,
    tls_files=None,
    overrides: dict[str, Persistence] | None = None,
) -> BalancerSpec:
    return BalancerSpec(
        driver,
        resolve(preset, overrides),
        SERVERS,
        VIP,
        topology,
        tls,
        tls_files=tls_files if tls != "none" else None,
        preset=preset,
        timeouts=timeouts,
        persistence_table_size=size,
    )


def rendered(s: BalancerSpec) -> str:
    balancer = driver_class(s.driver)(s, Path("."))
    assert balancer.refusals() == []
    return "".join(balancer.render().values())


def refusals(s: BalancerSpec) -> list:
    return driver_class(s.driver)(s, Path(".")).refusals()


def sections(cfg: str) -> dict[str, list[str]]:
    """An HAProxy config by section ("defaults#0", "frontend web", ...): its lines, stripped."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in cfg.splitlines():
        if line and not line.startswith(" "):
            current = line if line != "defaults" else f"defaults#{sum(k.startswith('defaults') for k in out)}"
            out[current] = []
        elif line.strip():
            out[current].append(line.strip())
    return out


# ---- the layout ----------------------------------------------------------------------------------


def test_the_layout_gives_each_route_its_service_and_each_pool_and_listener_theirs():
    layout = build_layout(spec("haproxy", topology="vip-per-service"))
    by_name = {listener.name: listener for listener in layout.listeners}
    assert by_name["rpchttp"].timeouts == Timeouts(20, 1.5) and not by_name["rpchttp"].client_idle_varies
    assert by_name["eas"].timeouts == Timeouts(5, 10)
    assert (
        by_name["mapi"].default.timeouts == Timeouts(5, 60) and by_name["mapi"].default.timeouts.idle_s == 5
    )
    web = build_layout(spec("nginx")).listeners[0]
    assert web.client_idle_varies and web.timeouts == Timeouts(5, 10)  # the scenario's own, with RPC/HTTP's
    assert {r.service: r.timeouts for r in web.routes}["rpchttp"] == Timeouts(20, 1.5)
    assert web.default.name == "other" and web.default.timeouts == Timeouts(5, 10)


# ---- each driver's directives ----------------------------------------------------------------------


def test_haproxy_defaults_frontends_backends_and_stick_tables():
    cfg = sections(rendered(spec("haproxy", topology="vip-per-service", size=5000)))
    http, tcp = cfg["defaults#0"], cfg["defaults#1"]
    for line in ("timeout client 5s", "timeout server 10s", "timeout tunnel 5s", "timeout client-fin 5s",
                 "timeout http-keep-alive 5s", "timeout http-request 30s"):  # fmt: skip
        assert line in http
    for line in ("timeout client 5s", "timeout server 10s", "timeout tunnel 5s", "timeout client-fin 5s"):
        assert line in tcp
    # RPC/HTTP's own: the client side in its frontend, the server side and the tunnel in its backend.
    assert {"timeout client 20s", "timeout client-fin 20s", "timeout http-keep-alive 20s"} <= set(
        cfg["frontend rpchttp"]
    )
    assert {"timeout server 1500ms", "timeout tunnel 1500ms"} <= set(cfg["backend rpchttp"])
    assert "timeout server 60s" in cfg["backend mapi"]  # its stream still idles out at 5 s: no own tunnel
    assert not any(line.startswith("timeout") for line in cfg["frontend eas"] + cfg["backend eas"])
    tables = [line for lines in cfg.values() for line in lines if line.startswith("stick-table")]
    assert tables and all(" size 5000 expire 1800s" in line for line in tables), tables


def test_haproxy_without_timeouts_keeps_its_long_defaults_and_table_size():
    cfg = sections(rendered(spec("haproxy", Timeouts())))
    assert {"timeout client 1h", "timeout server 1h", "timeout tunnel 1h"} <= set(cfg["defaults#0"])
    assert not any("client-fin" in line or "keep-alive" in line for line in cfg["defaults#0"])
    assert "stick-table type ip size 1m expire 1800s" in cfg["backend mapi"]


def test_nginx_http_locations_upstreams_and_stream():
    conf = rendered(spec("nginx"))
    http, stream = conf.split("\nstream {")
    top = [
        line.strip() for line in http.splitlines() if line.startswith("    ") and not line.startswith("     ")
    ]
    for line in ("proxy_read_timeout 10s;", "proxy_send_timeout 10s;", "client_body_timeout 5s;",
                 "send_timeout 5s;", "keepalive_timeout 5s;"):  # fmt: skip
        assert line in top
    rpc = re.search(r"location ~\* \^/rpc\(/\|\$\) \{(.*?)\}", http, re.S).group(1)
    for line in ("client_body_timeout 20s;", "send_timeout 20s;", "keepalive_timeout 20s;",
                 "proxy_read_timeout 1500ms;", "proxy_send_timeout 1500ms;"):  # fmt: skip
        assert line in rpc
    owa = re.search(r"location ~\* \^/owa\(/\|\$\) \{(.*?)\}", http, re.S).group(1)
    assert "timeout" not in owa  # the scenario's own, from http {}
    ews = re.search(r"upstream ews \{(.*?)\}", http, re.S).group(1)
    assert "keepalive_timeout 10s;" in ews  # idle kept-alive connections to the CAS
    assert "    proxy_timeout 5s;" in stream  # the shorter side of the one TCP stream
    mapi = re.search(r"server \{\s*listen 127.0.16.1:59531 reuseport;(.*?)\}", stream, re.S).group(1)
    assert "proxy_timeout" not in mapi  # MAPI's own server side is longer than the client side


def test_envoy_connection_stream_route_cluster_and_tcp_proxy():
    config = json.loads(rendered(spec("envoy", topology="vip-per-service")))
    listeners = {item["name"]: item for item in config["static_resources"]["listeners"]}
    clusters = {item["name"]: item for item in config["static_resources"]["clusters"]}

    def manager(name: str) -> dict:
        return listeners[name]["filter_chains"][0]["filters"][0]["typed_config"]

    assert manager("eas")["common_http_protocol_options"] == {"idle_timeout": "5.000s"}
    assert manager("eas")["stream_idle_timeout"] == "5.000s"
    assert manager("eas")["drain_timeout"] == "0s"  # else an idle connection closes 5 s after its timeout
    assert manager("rpchttp")["common_http_protocol_options"] == {"idle_timeout": "20.000s"}
    assert manager("rpchttp")["stream_idle_timeout"] == "1.500s"  # a stream is idle on both sides at once
    upstream = clusters["rpchttp"]["typed_extension_protocol_options"]
    options = next(iter(upstream.values()))["common_http_protocol_options"]
    assert options == {"max_requests_per_connection": 1, "idle_timeout": "1.500s"}
    eas = next(iter(clusters["eas"]["typed_extension_protocol_options"].values()))
    assert eas["common_http_protocol_options"] == {"idle_timeout": "10.000s"}
    tcp = listeners["mapi"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert tcp["idle_timeout"] == "5.000s"
    # On one VIP a service's own stream timeout is its route's.
    unset = json.loads(rendered(spec("envoy", Timeouts())))["static_resources"]["listeners"][0]
    assert "drain_timeout" not in unset["filter_chains"][0]["filters"][0]["typed_config"]
    single = json.loads(rendered(spec("envoy")))
    web = single["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert web["stream_idle_timeout"] == "5.000s"
    routes = web["route_config"]["virtual_hosts"][0]["routes"]
    own = {r["match"].get("safe_regex", {}).get("regex"): r["route"].get("idle_timeout") for r in routes}
    assert own["(?i)/rpc(/.*)?"] == "1.500s" and own["(?i)/owa(/.*)?"] is None


def test_traefik_entry_points_and_servers_transports(tls_files):
    # Per HTTP service only: MAPI and Address Book are TCP, which Traefik cannot time out.
    timers = Timeouts(None, None, {"rpchttp": Timeouts(20, 1.5), "eas": Timeouts(None, 10)})
    traefik = driver_class("traefik")(
        spec("traefik", timers, preset="none-all", topology="vip-per-service"), Path(".")
    )
    assert traefik.refusals() == []
    static, dynamic = (json.loads(text) for text in traefik.render().values())
    points = static["entryPoints"]
    assert points["rpchttp"]["transport"]["respondingTimeouts"] == {"readTimeout": "0s", "idleTimeout": "20s"}
    assert points["eas"]["transport"]["respondingTimeouts"]["idleTimeout"] == "3600s"  # no client_idle set
    services = dynamic["http"]["services"]
    assert services["rpchttp"]["loadBalancer"]["serversTransport"] == "cas_rpchttp"
    assert services["eas"]["loadBalancer"]["serversTransport"] == "cas_eas"
    assert "serversTransport" not in services["oab"]["loadBalancer"]
    transports = dynamic["http"]["serversTransports"]
    assert transports["cas_rpchttp"] == {
        "forwardingTimeouts": {"responseHeaderTimeout": "1500ms", "idleConnTimeout": "1500ms"}
    }
    # Under bridge a pool's transport carries the TLS to the CAS as well.
    bridge = spec(
        "traefik", timers, preset="none-all", topology="vip-per-service", tls="bridge", tls_files=tls_files
    )
    _static, dynamic = (
        json.loads(text) for text in driver_class("traefik")(bridge, Path(".")).render().values()
    )
    transports = dynamic["http"]["serversTransports"]
    assert transports["cas_eas"]["serverName"] == tls_files.server_name
    assert transports["cas_eas"]["forwardingTimeouts"]["responseHeaderTimeout"] == "10s"
    assert "forwardingTimeouts" not in transports["cas"]  # the pools without a server_idle


def test_external_writes_what_the_appliance_must_be_set_to():
    text = rendered(spec("external", size=5000))
    assert "127.0.16.1:80 (web), client side: 5 s (but rpchttp 20 s)" in text.replace(":8080", ":80")
    assert "pool rpchttp, server side: 1.5 s" in text and "pool eas, server side: 10 s" in text
    assert "127.0.16.1:59531 (mapi), TCP: 5 s" in text
    assert "at most 5000 records per table" in text
    assert "Idle timeouts" not in rendered(spec("external", Timeouts()))


# ---- what each driver refuses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("driver", "says"),
    [
        ("nginx", "nginx OSS keeps no persistence table"),
        ("envoy", "Envoy keeps no persistence table"),
        ("traefik", "Traefik keeps no persistence table"),
    ],
)
def test_a_table_size_is_refused_where_the_balancer_keeps_no_table(driver, says):
    found = [r for r in refusals(spec(driver, Timeouts(), preset="none-all", size=100)) if r.setting]
    assert [r.setting for r in found] == ["persistence_table_size"]
    assert says in str(found[0]) and "driver haproxy" in str(found[0])


def test_haproxy_takes_a_table_size_only_where_a_method_keeps_a_table():
    assert refusals(spec("haproxy", Timeouts(), preset="source-ip-all", size=100)) == []
    only_hashes = {
        s: Persistence("cookie-hash", "OutlookSession") for s in ("owa", "ecp", "ews", "eas", "rpchttp")
    }
    refused = refusals(spec("haproxy", Timeouts(), preset="none-all", size=100, overrides=only_hashes))
    assert [r.setting for r in refused] == ["persistence_table_size"]
    assert "app-cookie or header or source-ip or ssl-session-id persistence" in str(refused[0])
    assert refusals(spec("external", Timeouts(), preset="none-all", size=100)) == []


@pytest.mark.parametrize("driver", ["haproxy", "traefik"])
def test_one_client_timeout_per_listener_refuses_a_service_of_its_own_on_one_vip(driver):
    timers = Timeouts(None, None, {"rpchttp": Timeouts(20)})
    refused = refusals(spec(driver, timers, preset="none-all"))
    assert [(r.setting, r.service) for r in refused] == [("timeouts.client_idle", "rpchttp")]
    assert "topology vip-per-service" in str(refused[0]) and "share the listener web" in str(refused[0])
    assert refusals(spec(driver, timers, preset="none-all", topology="vip-per-service")) == []


@pytest.mark.parametrize("driver", ["nginx", "envoy", "external"])
def test_a_route_of_its_own_takes_a_service_client_timeout_on_one_vip(driver):
    assert refusals(spec(driver, Timeouts(None, None, {"rpchttp": Timeouts(20)}))) == []


def test_traefik_refuses_idle_timeouts_on_tcp_naming_who_asked():
    refused = refusals(spec("traefik", Timeouts(5), preset="none-all"))
    assert [(r.setting, r.service) for r in refused] == [("timeouts.client_idle", None)] * 2  # MAPI, AB
    assert "mapi is TCP here, and Traefik's TCP routers have no idle timeout" in str(refused[0])
    own = refusals(
        spec("traefik", Timeouts(None, None, {"addressbook": Timeouts(None, 5)}), preset="none-all")
    )
    assert [(r.setting, r.service) for r in own] == [("timeouts.server_idle", "addressbook")]


@pytest.mark.parametrize("driver", ["haproxy", "nginx", "envoy", "traefik", "external"])
def test_services_of_one_pool_share_its_server_side(driver):
    # recommended: OWA and ECP share one balancer cookie, so one pool.
    refused = refusals(
        spec(driver, Timeouts(None, None, {"ecp": Timeouts(None, 20)}), preset="lb-cookie-all")
    )
    shared = [r for r in refused if r.setting == "timeouts.server_idle"]
    assert len(shared) == 1 and shared[0].service == "ecp" and "owa and ecp share one pool" in str(shared[0])
    # vip-per-service: one address whose every path goes to that pool, so one client side too.
    refused = refusals(
        spec(
            driver,
            Timeouts(None, None, {"ecp": Timeouts(20)}),
            preset="lb-cookie-all",
            topology="vip-per-service",
        )
    )
    assert any("one address, where one route takes every path" in str(r) for r in refused)


# ---- the real binaries accept every config with timers -------------------------------------------


@pytest.mark.parametrize("driver", ["haproxy", "nginx", "envoy"])
def test_configs_with_timers_pass_the_binarys_own_check(driver, tls_files, tmp_path):
    checked = 0
    for tls, topology in itertools.product(TLS_MODES, TOPOLOGIES):
        preset = "source-ip-all" if tls == "passthrough" else "recommended"
        size = 5000 if driver == "haproxy" else None
        balancer = driver_class(driver)(
            spec(driver, preset=preset, topology=topology, tls=tls, size=size, tls_files=tls_files),
            tmp_path / f"{tls}-{topology}",
        )
        if topology == "single-vip" and (driver == "haproxy" or tls == "passthrough"):
            # RPC/HTTP's own timeouts on one VIP: HAProxy has one client timeout per frontend, and TLS
            # passthrough sends every web service through one TCP listener.
            assert balancer.refusals()
            continue
        balancer.validate()
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize(
    ("driver", "short_s", "enough_s"), [("haproxy", 0.1, 0.2), ("nginx", 0.5, 0.9), ("envoy", 0.1, None)]
)
def test_a_timeout_shorter_than_the_balancers_timer_slack_is_refused(driver, short_s, enough_s):
    """nginx can end an idle timeout 0.3 s early and HAProxy 0.05 s: below three times that in the lab's
    time (a 5-minute timeout is 0.5 s at time_scale 600, 0.1 s at 3000) a keep-alive sent in time could be
    cut, so the driver refuses it and names the fix; Envoy's timers are exact."""
    short = driver_class(driver)(
        spec(driver, Timeouts(None, None, {"eas": Timeouts(None, short_s)})), Path(".")
    )
    refused = [r for r in short.refusals() if r.setting == "timeouts.server_idle"]
    if enough_s is None:
        assert refused == []
        return
    assert [r.service for r in refused] == ["eas"]
    assert f"{short_s:g} s of the lab's time" in str(refused[0]) and "a lower time_scale" in str(refused[0])
    enough = driver_class(driver)(
        spec(driver, Timeouts(None, None, {"eas": Timeouts(None, enough_s)})), Path(".")
    )
    assert enough.refusals() == []
