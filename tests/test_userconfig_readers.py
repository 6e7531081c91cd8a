"""The nginx, Envoy and Traefik readers of users' own balancer files (lab.balancers.userconfig): files
written the way users write them, with production addresses (10.20.0.x, 443, 59531, /etc/ssl), put into
the lab by the rules; what the lab reads per service; refusals by name; a missed rewrite caught by the
safety check; and the configs the lab renders itself read back as the presets they came from.

Nothing here starts a balancer except the tests marked slow, which start the real binary on the file as
run; run those inside `unshare -n` (loopback only), as every test that starts servers.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from namespace import isolated

from caslab.vocab import SERVICES
from lab.balancers import BalancerError, Unsupported, get_driver
from lab.balancers.presets import PRESETS, resolve
from lab.balancers.userconfig import ConfigRefused, ConnectionLimit, Place, reader_for
from lab.balancers.userconfig.placeholders import example_place
from lab.certs import make_tls_files
from lab.model import BalancerSpec, Persistence, Vip, local_farm

HERE = Path(__file__).parent / "userconfig"
FILES = {"nginx": "nginx-hash.conf", "envoy": "envoy-hash-policy.yaml", "traefik": "traefik-sticky.yml"}
COOKIE_HASH_FALLBACK = "cookie-hash OutlookSession (fallback source-ip)"
# What each file does per service, in the lab's words (as `caslab balancer explain` says it).
READ = {
    "nginx": {"owa": "source-ip", "ecp": "source-ip", "ews": "leastconn", "eas": "header Authorization",
              "rpchttp": COOKIE_HASH_FALLBACK, "oab": "leastconn", "autodiscover": "leastconn",
              "mapi": "source-ip", "addressbook": "source-ip"},
    "envoy": {"owa": "lb-cookie", "ecp": "lb-cookie", "ews": "none", "eas": "header Authorization",
              "rpchttp": COOKIE_HASH_FALLBACK, "oab": "none", "autodiscover": "none", "mapi": "source-ip",
              "addressbook": "(unknown)"},
    "traefik": {"owa": "lb-cookie", "ecp": "lb-cookie", "ews": "lb-cookie", "eas": "none",
                "rpchttp": "source-ip", "oab": "none", "autodiscover": "none", "mapi": "none",
                "addressbook": "(unknown)"},
}  # fmt: skip
PRODUCTION = re.compile(r"(?m)^[^#\n]*(\b10\.20\.|/etc/ssl)")  # addresses and TLS files of production


@pytest.fixture
def place(tmp_path: Path) -> Place:
    farm, vip = local_farm(3), Vip()
    folder = tmp_path / "balancer"
    folder.mkdir()
    return Place(tuple(farm), vip, make_tls_files(tmp_path / "tls", vip, farm), folder)


def copy(tmp_path: Path, driver: str, change: tuple[str, str] | None = None) -> Path:
    """The user-style file of `driver` in tmp_path, with one text change."""
    text = (HERE / FILES[driver]).read_text()
    if change:
        assert change[0] in text
        text = text.replace(*change)
    path = tmp_path / FILES[driver]
    path.write_text(text)
    return path


@pytest.mark.parametrize("driver", FILES)
def test_a_production_file_runs_with_the_lab_in_place_of_production(driver, place):
    adopted = reader_for(driver).adopt(HERE / FILES[driver], place)
    for name, text in adopted.as_run().items():
        assert not PRODUCTION.search(text), (name, PRODUCTION.search(text))
    assert {m.cas for m in adopted.servers} == {"CAS01", "CAS02", "CAS03"}
    by_address = {(m.pool, m.server): m.cas for m in adopted.servers}
    # 10.20.0.11 is the first distinct server of the file, so CAS01 in every pool; .12 CAS02, .13 CAS03
    assert all(
        cas == "CAS0" + re.search(r"10\.20\.0\.1(\d)", server).group(1)
        for (_p, server), cas in by_address.items()
    )
    assert (place.vip.host, place.vip.https_port) in adopted.listeners
    assert (place.vip.host, place.vip.mapi_port) in adopted.listeners
    assert adopted.tls == "bridge", adopted.tls_reason  # each file ends TLS and speaks TLS to the CAS
    assert all(r.rule for r in adopted.rewrites) and all(r.line or not r.was for r in adopted.rewrites)
    assert str(place.tls_files.ca_pem) in adopted.main.text
    assert place.tls_files.server_name in adopted.main.text


@pytest.mark.parametrize("driver", FILES)
def test_explain_reads_each_services_persistence_from_the_routes(driver):
    explanation = reader_for(driver).explain(HERE / FILES[driver])
    assert {r.service: r.method for r in explanation.readings} == READ[driver]
    owa, ecp = explanation.reading("owa"), explanation.reading("ecp")
    assert owa.pool == ecp.pool and owa.rule == ecp.rule and owa.rule  # one rule holds both
    eas = {p.client_kind: p.effect for p in explanation.reading("eas").predictions}
    assert eas["eas-device"] == ("holds" if driver != "traefik" else "soft")


def test_nginx_reads_timeouts_and_the_rule_mapi_and_the_address_book_share():
    explanation = reader_for("nginx").explain(HERE / FILES["nginx"])
    mapi, ab = explanation.reading("mapi"), explanation.reading("addressbook")
    assert mapi.rule == ab.rule  # a plain hash over the same hosts: one address, one CAS on both ports
    assert [str(t) for t in mapi.timeouts] == ["proxy_timeout 2h"]
    assert "proxy_read_timeout 1h" in [str(t) for t in explanation.reading("owa").timeouts]


@pytest.mark.parametrize(
    "change, said",
    [
        (None, []),
        (("    client_max_body_size 0;\n", ""), ["client_max_body_size 1m is below"]),
        (("    client_max_body_size 0;\n", "    client_max_body_size 2g;\n"), []),
        (("    proxy_request_buffering off;\n", ""), ["proxy_request_buffering is on"]),
        (("    proxy_buffering off;\n", ""), ["proxy_buffering is on, so nginx keeps what the CAS sends"]),
    ],
)
def test_nginx_says_when_its_outlook_anywhere_location_cannot_stream_a_channel(tmp_path, change, said):
    path = copy(tmp_path, "nginx", change)
    notes = reader_for("nginx").explain(path).notes
    assert len(notes) == len(said) and all(s in n for s, n in zip(said, notes, strict=True)), notes
    rpc = next(n for n, line in enumerate(path.read_text().splitlines(), 1) if "location ~* ^/rpc/" in line)
    assert all(f"location of line {rpc}:" in n for n in notes)  # the /rpc/ location, where it applies


@pytest.mark.parametrize(
    "change, processes, per_process, words",
    [
        (None, "cores", 4096, "worker_processes auto (one per core here: {cores}) (line 3), "
                               "worker_connections 4096 (line 8)"),
        (("worker_processes auto;", "worker_processes 3;"), 3, 4096,
         "worker_processes 3 (line 3), worker_connections 4096 (line 8)"),
        (("worker_processes auto;\n", ""), 1, 4096,
         "worker_processes 1 (nginx's default), worker_connections 4096 (line 7)"),
        (("    worker_connections 4096;\n", ""), "cores", 512,
         "worker_processes auto (one per core here: {cores}) (line 3), "
         "worker_connections 512 (nginx's default)"),
    ],
)  # fmt: skip
def test_nginx_reads_its_workers_and_their_connections_as_the_file_sets_them(
    tmp_path, place, change, processes, per_process, words
):
    """The capacity check compares the scenario's connections with these (lab.capacity.balancer_note)."""
    cores = len(os.sched_getaffinity(0))
    reader = reader_for("nginx")
    path = copy(tmp_path, "nginx", change)
    limit = reader.connection_limit(reader.open(path, place), place)
    assert limit == ConnectionLimit(
        cores if processes == "cores" else processes, per_process, words.format(cores=cores)
    )


def test_haproxy_reads_its_global_maxconn_as_the_limit_of_client_connections(tmp_path, place):
    """Each client connection has one to a CAS beside it: HAProxy holds twice its maxconn."""
    reader = reader_for("haproxy")
    production = HERE / "exchange-single-vip.cfg"
    limit = reader.connection_limit(reader.open(production, place), place)
    assert limit == ConnectionLimit(1, 40_000, "global maxconn 20000 (line 11)")
    unset = tmp_path / "haproxy.cfg"
    unset.write_text(production.read_text().replace("    maxconn 20000\n", ""))
    assert reader.connection_limit(reader.open(unset, place), place) is None  # HAProxy sizes it itself


def test_nginx_timeouts_the_file_leaves_to_nginx_are_its_defaults_scaled_like_the_rest(tmp_path, place):
    path = copy(tmp_path, "nginx", ("    client_body_timeout 3600s;", ""))
    rpc = reader_for("nginx").explain(path).reading("rpchttp")
    assert "client_body_timeout (nginx's default) 1m" in [str(t) for t in rpc.timeouts]
    as_run = reader_for("nginx").adopt(path, place).main.text  # place: time_scale 1 -> nothing added
    assert "client_body_timeout" not in as_run
    scaled = reader_for("nginx").adopt(path, dataclasses.replace(place, time_scale=120)).main.text
    assert re.search(r"(?m)^    client_body_timeout 500ms;$", scaled), scaled[:1500]


LEFT_TO_ENVOY = (  # lines of the Envoy file whose timeouts Envoy would otherwise default
    "          stream_idle_timeout: 3600s\n",
    "          common_http_protocol_options: { idle_timeout: 3600s }\n",
    "          idle_timeout: 7200s\n",  # the MAPI tcp_proxy's
)
ROUTE_TIMEOUT = "                  timeout: 0s\n"  # the first three: OWA's, ECP's and EAS's routes


def test_envoy_timeouts_the_file_leaves_to_envoy_are_its_defaults_scaled_like_the_rest(tmp_path, place):
    text = (HERE / FILES["envoy"]).read_text().replace(ROUTE_TIMEOUT, "", 3)
    for line in LEFT_TO_ENVOY:
        assert line in text
        text = text.replace(line, "")
    path = tmp_path / FILES["envoy"]
    path.write_text(text)
    said = {r.service: [str(t) for t in r.timeouts] for r in reader_for("envoy").explain(path).readings}
    assert said["eas"] == [
        "stream_idle_timeout (Envoy's default) 5m",
        "connection idle_timeout (Envoy's default) 1h",
        "route timeout (Envoy's default) 15s",
    ]
    assert "route timeout 0ms" in said["rpchttp"]  # the file's own 0s: never
    assert said["mapi"] == ["tcp_proxy idle_timeout (Envoy's default) 1h"]
    assert "Envoy's default" not in str(reader_for("envoy").adopt(path, place).rewrites)  # time_scale 1
    scaled = reader_for("envoy").adopt(path, dataclasses.replace(place, time_scale=120))
    listeners = yaml.safe_load(scaled.main.text)["static_resources"]["listeners"]
    hcm = listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["stream_idle_timeout"] == "2.500s"
    assert hcm["common_http_protocol_options"]["idle_timeout"] == "30s"
    timeouts = [r["route"]["timeout"] for r in hcm["route_config"]["virtual_hosts"][0]["routes"]]
    assert timeouts == ["0.125s", "0.125s", "0.125s", "0s", "0s"]  # Envoy's 15 s / 120; the file's 0s
    assert listeners[1]["filter_chains"][0]["filters"][0]["typed_config"]["idle_timeout"] == "30s"


def test_envoy_s_stream_idle_timeouts_against_exchange_s_timers(tmp_path):
    """A route's idle_timeout replaces the listener's stream_idle_timeout on its route, longer or shorter,
    and 0s switches it off (measured with Envoy 1.40); the tcp_proxy's idle_timeout for MAPI."""

    def timers(*changes: tuple[str, str]) -> dict[str, tuple[str, ...]]:
        text = (HERE / FILES["envoy"]).read_text()
        for old, new in changes:
            assert old in text
            text = text.replace(old, new)
        path = tmp_path / FILES["envoy"]
        path.write_text(text)
        return {r.service: r.timers for r in reader_for("envoy").explain(path).readings if r.timers}

    assert timers() == {}  # 1 h streams, a 20 min RPC route, 2 h MAPI, no route timeouts: nothing cut
    listener_90s = ("stream_idle_timeout: 3600s", "stream_idle_timeout: 90s")
    said = timers(listener_90s)
    assert list(said) == ["eas"]  # the RPC route's own 20 minutes outlive the CAS's OUT keep-alive
    assert said["eas"][0].startswith("stream_idle_timeout 1m30s (line 26) cuts Direct Push Pings")
    assert "every Ping is cut" not in said["eas"][0] and "event 1040" in said["eas"][0]
    assert timers(listener_90s, ("idle_timeout: 1200s", "idle_timeout: 0s")) == {"eas": said["eas"]}
    (rpc,) = timers(("idle_timeout: 1200s", "idle_timeout: 600s"))["rpchttp"]
    assert rpc.startswith("route idle_timeout 10m (line 60) cuts idle Outlook Anywhere channels")
    left_to_envoy = timers((LEFT_TO_ENVOY[0], ""), ("                  idle_timeout: 1200s\n", ""))
    assert set(left_to_envoy) == {"eas", "rpchttp"}
    assert left_to_envoy["rpchttp"][0].startswith("stream_idle_timeout (Envoy's default) 5m cuts idle")
    (mapi,) = timers((LEFT_TO_ENVOY[2], ""))["mapi"]
    assert mapi.startswith("tcp_proxy idle_timeout (Envoy's default) 1h closes an intranet Outlook's mapi")
    assert timers(("idle_timeout: 7200s", "idle_timeout: 0s")) == {}  # never


def test_envoy_s_limits_on_a_whole_request_or_stream_end_outlook_anywhere_channels(tmp_path, place):
    """Envoy's edge best practices set `request_timeout: 300s` (and warn it must be off for long-lived
    requests): it ends every RPC_IN_DATA channel, busy or not; `max_stream_duration` ends every channel
    and every Ping. Both are Exchange time, scaled in the file as run."""
    text = (HERE / FILES["envoy"]).read_text()
    hcm = "          stream_idle_timeout: 3600s\n"
    limits = (
        "          request_timeout: 300s\n"
        "          common_http_protocol_options: { idle_timeout: 3600s, max_stream_duration: 600s }\n"
    )
    assert hcm in text and LEFT_TO_ENVOY[1] in text
    path = tmp_path / FILES["envoy"]
    path.write_text(text.replace(LEFT_TO_ENVOY[1], "").replace(hcm, hcm + limits))
    explanation = reader_for("envoy").explain(path)
    request, stream = explanation.reading("rpchttp").timers
    assert request.startswith(
        "request_timeout 5m (line 27) ends every RPC_IN_DATA channel 5m after it opened"
    )
    assert stream.startswith("max_stream_duration 10m (line 28) ends both channels of every Outlook Anywhere")
    (ping,) = explanation.reading("eas").timers
    assert ping.startswith("max_stream_duration 10m (line 28) cuts Direct Push Pings held longer")
    as_run = reader_for("envoy").adopt(path, dataclasses.replace(place, time_scale=120)).main.text
    typed = yaml.safe_load(as_run)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    assert typed["typed_config"]["request_timeout"] == "2.500s"
    assert typed["typed_config"]["common_http_protocol_options"]["max_stream_duration"] == "5s"


def test_traefik_says_what_its_default_read_timeout_would_do_to_outlook_anywhere(tmp_path):
    notes = reader_for("traefik").explain(HERE / FILES["traefik"]).notes
    assert len(notes) == 1 and "default readTimeout (60s) ends every Outlook Anywhere IN channel" in notes[0]


def test_traefik_servers_transport_timeouts_are_exchange_time(tmp_path, place):
    """responseHeaderTimeout bounds how long a held Ping waits for its answer, so it is scaled like the
    rest (and idleConnTimeout, a pooled connection's idleness)."""
    timeouts = "      forwardingTimeouts: { responseHeaderTimeout: 120s, idleConnTimeout: 90s }\n"
    path = copy(
        tmp_path,
        "traefik",
        ("      serverName: mail.contoso.com\n", "      serverName: mail.contoso.com\n" + timeouts),
    )
    as_run = yaml.safe_load(
        reader_for("traefik").adopt(path, dataclasses.replace(place, time_scale=120)).main.text
    )
    forwarding = as_run["http"]["serversTransports"]["exchange"]["forwardingTimeouts"]
    assert forwarding == {"responseHeaderTimeout": "1s", "idleConnTimeout": "0.75s"}


def test_traefik_s_response_header_timeout_against_direct_push(tmp_path):
    """A servers transport's responseHeaderTimeout bounds a held Ping's wait for its answer; nothing of it
    applies to Outlook Anywhere's channels (measured with Traefik 3.7)."""
    assert all(r.timers == () for r in reader_for("traefik").explain(HERE / FILES["traefik"]).readings)
    timeouts = "      forwardingTimeouts: { responseHeaderTimeout: 5m }\n"
    path = copy(
        tmp_path,
        "traefik",
        ("      serverName: mail.contoso.com\n", "      serverName: mail.contoso.com\n" + timeouts),
    )
    explanation = reader_for("traefik").explain(path)
    (eas,) = explanation.reading("eas").timers
    assert eas.startswith("responseHeaderTimeout 5m (line 70) cuts Direct Push Pings held longer")
    assert "responseHeaderTimeout 5m" in [str(t) for t in explanation.reading("rpchttp").timeouts]
    assert explanation.reading("rpchttp").timers == ()


def test_envoy_at_layer_4_places_every_service_per_connection_by_its_tcp_proxy():
    """TLS passing through a tcp_proxy on 443 (Microsoft's layer-4 source-IP advice for Exchange 2010):
    every HTTP service is that proxy's, placed per connection; it was read as routed nowhere."""
    explanation = reader_for("envoy").explain(HERE / "envoy-l4.yaml")
    for service in SERVICES:
        if service == "addressbook":
            continue
        r = explanation.reading(service)
        assert (r.pool, str(r.persistence)) == ("cas_https" if service != "mapi" else "mapi", "source-ip")
        assert r.tcp == (service != "mapi")
    owa = explanation.reading("owa")
    assert owa.route == "tcp_proxy cluster cas_https (line 14): the connection passes through"
    assert [str(t) for t in owa.timeouts] == ["tcp_proxy idle_timeout 30m"]
    assert {p.effect for p in owa.predictions} == {"balance"}  # the NAT-ed tenant on one CAS
    assert explanation.reading("rpchttp").timers == ()  # 30 minutes: above the channels' keep-alives


@pytest.mark.parametrize(
    ("driver", "file", "method", "via"),
    [
        ("nginx", "nginx-l4.conf", "source-ip", "stream server (line 18): proxy_pass cas_https"),
        ("traefik", "traefik-l4.yml", "none", "TCP router exchange (line 6): service cas"),
    ],
)
def test_a_web_port_passed_through_at_layer_4_places_every_service_per_connection(driver, file, method, via):
    """A stream server (nginx) or a TCP router (Traefik) on 443 instead of an HTTP one: every web service is
    its, placed per connection; they were read as routed nowhere (every client 'hard')."""
    explanation = reader_for(driver).explain(HERE / file)
    for service in ("owa", "ecp", "ews", "eas", "rpchttp", "oab", "autodiscover"):
        r = explanation.reading(service)
        assert (r.route, r.method, r.tcp) == (f"{via}: the connection passes through", method, True)
    assert explanation.notes == ()  # Traefik's readTimeout bounds HTTP requests, not a TCP router's
    if driver == "nginx":  # its proxy_timeout watches each channel's connection
        assert [str(t) for t in explanation.reading("rpchttp").timeouts] == ["proxy_timeout 30m"]
        assert explanation.reading("rpchttp").timers == ()


def test_envoy_reads_cookie_ttls_and_route_idle_timeouts():
    explanation = reader_for("envoy").explain(HERE / FILES["envoy"])
    assert "ttl 3600s (Envoy sets it)" in explanation.reading("owa").words
    assert explanation.reading("owa").persistence.timeout_s == 3600
    assert "route idle_timeout 20m" in [str(t) for t in explanation.reading("rpchttp").timeouts]


@pytest.mark.parametrize("driver", FILES)
@pytest.mark.parametrize("other", FILES)
def test_a_file_for_another_driver_is_refused_by_name(driver, other, place):
    if driver == other:
        return
    with pytest.raises(ConfigRefused) as refused:
        reader_for(driver).adopt(HERE / FILES[other], place)
    assert f"set the scenario's driver to {other}" in str(refused.value)


@pytest.mark.parametrize("driver", FILES)
def test_a_missed_rewrite_is_refused_by_the_safety_check(driver, place, monkeypatch):
    module = sys.modules[type(reader_for(driver)).__module__]
    monkeypatch.setattr(module, "map_servers", lambda servers, place: ({}, []))  # rule 1 "forgets" them
    with pytest.raises(ConfigRefused) as refused:
        reader_for(driver).adopt(HERE / FILES[driver], place)
    lines = (HERE / FILES[driver]).read_text().splitlines()
    problems = refused.value.problems
    assert problems and all("is not a CAS of the farm nor the VIP" in p.why for p in problems)
    assert all("10.20.0." in lines[p.line - 1] for p in problems)  # each names the line as written
    assert "as run would reach addresses that are not the lab's" in refused.value.headline


FORWARD_AUTH = (
    "  middlewares:\n    auth:\n      forwardAuth:\n        address: https://sso.contoso.com/auth\n"
)


@pytest.mark.parametrize(
    ("driver", "change", "said"),
    [
        ("nginx", ("http {\n", "http {\n    resolver 10.20.0.53;\n"), "resolver"),
        ("nginx", ("    include /etc/nginx/mime.types;", "    include /etc/nginx/conf.d/*.conf;"), "glob"),
        ("nginx", ("    include /etc/nginx/mime.types;", "    include owa-extra.conf;"), "no such file"),
        ("nginx", ("proxy_pass https://exchange;", "proxy_pass https://10.9.9.9;"), "10.9.9.9:443 is not a"),
        ("nginx", ("error_log /var/log/nginx/error.log warn;", "ssl_dhparam /etc/ssl/dh.pem;"), "dhparam"),
        ("envoy", ("static_resources:\n", "dynamic_resources:\n  ads_config: {}\nstatic_resources:\n"),
         "dynamic_resources"),
        ("envoy", ("  - name: mapi\n    connect_timeout", "  - name: zipkin\n    connect_timeout"),
         "cluster zipkin is reached by no route"),
        ("traefik", ("  serversTransports:", FORWARD_AUTH + "  serversTransports:"), "forwardAuth sso."),
    ],
)  # fmt: skip
def test_what_would_reach_outside_the_lab_is_refused_by_name(driver, change, said, tmp_path, place):
    with pytest.raises(ConfigRefused) as refused:
        reader_for(driver).adopt(copy(tmp_path, driver, change), place)
    assert said in str(refused.value)


def test_a_farm_of_another_size_is_refused_with_the_size_that_fits(tmp_path):
    small = example_place(servers=2)
    with pytest.raises(ConfigRefused) as refused:
        reader_for("nginx").adopt(HERE / FILES["nginx"], small)
    assert "set `[farm] servers = 3`" in str(refused.value)


def test_nginx_placeholders_and_rules_mix(tmp_path, place):
    servers = "".join(f"        server 10.20.0.1{n}:443;\n" for n in (1, 2, 3))
    change = (servers + "        keepalive 32;", "        {{ cas_servers.https }}\n        keepalive 32;")
    adopted = reader_for("nginx").adopt(copy(tmp_path, "nginx", change), place)
    upstream = re.search(r"upstream exchange \{(.*?)\}", adopted.main.text, re.S).group(1)
    assert [s.split()[1] for s in upstream.split(";") if "server" in s] == [
        f"{c.host}:{c.https_port}" for c in place.servers
    ]
    assert {m.cas for m in adopted.servers if m.pool == "exchange"} == {"CAS01", "CAS02", "CAS03"}


def test_nginx_counters_get_the_lab_s_log_beside_each_log_of_a_location(place):
    adopted = reader_for("nginx").adopt(HERE / FILES["nginx"], place)
    text = adopted.main.text
    rpc = re.search(r"location ~\* \^/rpc/ \{(.*?)\}", text, re.S).group(1)
    assert "access_log rpc.log;" in rpc and "access_log access.log caslab_counts;" in rpc
    assert "access_log stream.log caslab_counts;" in text and "load_module" in text
    assert "user www-data" not in text and "pid nginx.pid;" in text and "error_log stderr warn;" in text


def _rendered(driver: str, preset: str, tls: str) -> tuple[BalancerSpec, str, str] | None:
    place = example_place()
    spec = BalancerSpec(driver, resolve(preset), list(place.servers), place.vip, tls=tls,
                        tls_files=place.tls_files, preset=preset)  # fmt: skip
    drv = get_driver(spec, Path("unused"))
    try:
        drv.check()
    except Unsupported:
        return None
    main = {"nginx": "nginx.conf", "envoy": "envoy.json", "traefik": "dynamic.yml"}[driver]
    return spec, main, drv.render()[main]


@pytest.mark.parametrize("tls", ["none", "offload"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("driver", FILES)
def test_the_configs_the_lab_renders_read_back_as_their_preset(driver, preset, tls, tmp_path):
    rendered = _rendered(driver, preset, tls)
    if rendered is None:
        return  # the driver cannot do this preset (its refusal is tested with the driver)
    spec, main, text = rendered
    (tmp_path / main).write_text(text)
    reader = reader_for(driver)
    adopted = reader.adopt(tmp_path / main, example_place())
    assert adopted.tls == tls and {m.cas for m in adopted.servers} == {"CAS01", "CAS02", "CAS03"}
    explanation = reader.explain(tmp_path / main)
    # What the lab renders streams RPC/HTTP channels; Traefik's note is on the static config it runs with.
    assert [n for n in explanation.notes if "static config is not under test" not in n] == []
    readings = {r.service: r.persistence for r in explanation.readings}
    for service in SERVICES:
        want, got = spec.persistence[service], readings[service]
        assert got is not None, service
        fallback = got.fallback.method if got.fallback else None
        assert (got.method, got.name, fallback) == (
            want.method,
            want.name,
            want.fallback.method if want.fallback else None,
        ), service


# -- the balancers' own checks (slow: they run the real binaries; inside `unshare -n`) --------------------


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["nginx", "envoy"])
def test_the_file_as_run_passes_the_balancers_own_check(driver, place):
    adopted = reader_for(driver).adopt(HERE / FILES[driver], place)
    spec = BalancerSpec(driver, {s: Persistence() for s in SERVICES}, list(place.servers), place.vip,
                        tls=adopted.tls, tls_files=place.tls_files, config=adopted)  # fmt: skip
    get_driver(spec, place.folder.parent).validate()


@pytest.mark.slow
def test_the_balancers_own_check_refuses_what_it_refuses(tmp_path, place):
    path = copy(tmp_path, "nginx", ("proxy_buffering off;", "proxy_bufering off;"))
    adopted = reader_for("nginx").adopt(path, place)
    spec = BalancerSpec("nginx", {s: Persistence() for s in SERVICES}, list(place.servers), place.vip,
                        tls=adopted.tls, tls_files=place.tls_files, config=adopted)  # fmt: skip
    with pytest.raises(BalancerError, match='unknown directive "proxy_bufering"'):
        get_driver(spec, place.folder.parent).validate()


def test_a_stream_conf_d_file_is_refused_saying_where_it_belongs(tmp_path, place):
    mapi = "upstream mapi {\n    hash $remote_addr;\n    server 10.20.0.11:135;\n}\n\n"
    mapi += "server {\n    listen 10.20.0.10:135;\n    proxy_pass mapi;\n}\n"
    path = tmp_path / "mapi.conf"
    path.write_text(mapi)
    with pytest.raises(ConfigRefused) as err:
        reader_for("nginx").explain(path, place)
    (problem,) = err.value.problems
    assert problem.line == 6 and "put it inside `stream { }` in your main nginx.conf" in problem.why


def copy_text(tmp_path: Path, path: Path, change: tuple[str, str]) -> Path:
    text = path.read_text()
    assert change[0] in text
    out = tmp_path / path.name
    out.write_text(text.replace(*change))
    return out


def test_an_nginx_conf_d_file_is_read_as_the_inside_of_http_and_runs_inside_one(tmp_path, place):
    path = HERE / "nginx-conf-d.conf"  # server and upstream blocks at its top, as Exchange guides give it
    reader = reader_for("nginx")
    explanation = reader.explain(path, place)
    assert {
        r.service: r.method for r in explanation.readings if r.service not in ("mapi", "addressbook")
    } == {s: "source-ip" for s in SERVICES if s not in ("mapi", "addressbook")}
    assert explanation.reading("owa").route == "location / (line 30): proxy_pass https://exchange"
    assert any(
        n.startswith(
            "nginx-conf-d.conf has `server`, `upstream` at its top and no `http` block: a conf.d file"
        )
        for n in explanation.notes
    )
    # nginx's own 60 s client_body_timeout, which the file leaves alone, cuts an idle RPC_IN_DATA channel.
    (rpc,) = explanation.reading("rpchttp").timers
    assert rpc.startswith("client_body_timeout (nginx's default) 1m cuts idle Outlook Anywhere channels")
    assert rpc.endswith("even Microsoft's 120 s is not below it: raise the timeout")
    assert explanation.reading("eas").timers == ()  # proxy_read_timeout 3600: above every heartbeat
    # Each timeout against the channel it watches: client_body_timeout IN (Outlook pings every 12 min),
    # proxy_read_timeout OUT too (silent until the CAS's keep-alive after 15).
    both = copy_text(
        tmp_path, path, ("proxy_read_timeout 3600;", "proxy_read_timeout 800;\n    client_body_timeout 760;")
    )
    (rpc,) = reader.explain(both, place).reading("rpchttp").timers
    assert rpc.startswith("proxy_read_timeout 13m20s (line 26) cuts") and rpc.endswith("raised above 15m")
    adopted = reader.adopt(path, place)
    text = adopted.main.text
    assert text.startswith("events {}\nhttp {\n") and text.endswith("}\n}\n")
    assert {m.cas for m in adopted.servers} == {"CAS01", "CAS02", "CAS03"}
    assert (place.vip.host, place.vip.https_port) in adopted.listeners
    # The lab's lines are the http block's: its counters' log and nginx's default timeouts, scaled.
    assert "    access_log access.log caslab_counts;" in text.splitlines()[:6]
    wrapper = [r for r in adopted.rewrites if "a conf.d file" in r.rule]
    assert [r.now for r in wrapper] == ["events {}", "http {", "}"] and all(r.line == 0 for r in wrapper)
    spec = BalancerSpec("nginx", {s: Persistence() for s in SERVICES}, list(place.servers), place.vip,
                        tls=adopted.tls, tls_files=place.tls_files, config=adopted)  # fmt: skip
    get_driver(spec, place.folder.parent).validate()  # nginx -t: the file as run is whole


@pytest.mark.slow
def test_traefik_loads_every_router_of_the_file_as_run(place):
    if subprocess.run(["ip", "route", "get", "10.20.0.11"], capture_output=True).returncode == 0:
        # A user's file runs only where nothing but loopback is reachable: this test, in a namespace.
        this = f"{__file__}::test_traefik_loads_every_router_of_the_file_as_run"
        command = isolated(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", this)
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
        return
    adopted = reader_for("traefik").adopt(HERE / FILES["traefik"], place)
    spec = BalancerSpec("traefik", {s: Persistence() for s in SERVICES}, list(place.servers), place.vip,
                        tls=adopted.tls, tls_files=place.tls_files, config=adopted)  # fmt: skip
    driver = get_driver(spec, place.folder.parent)
    driver.start()
    try:
        driver.wait_ready(20)  # every router of the file enabled; a disabled one is a BalancerError
        routers = {r["name"]: r for r in driver.api("/http/routers")}
    finally:
        driver.stop()
    assert {"owa-ecp@file", "ews@file", "exchange@file"} <= set(routers)
    assert "127.0.1.1" in routers["owa-ecp@file"]["rule"]
