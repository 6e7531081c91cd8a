"""A user's own HAProxy file put into the lab by rules they can predict, refused where it cannot be, and
explained per service, all before anything starts. These tests read and write text only: nothing is
started and nothing is sent (the runs are in test_userconfig_runs.py, each in a network namespace)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from caslab.vocab import SERVICES
from lab.balancers.presets import PRESETS
from lab.balancers.userconfig import ConfigRefused, Explanation, Place, reader_for
from lab.balancers.userconfig.haproxy import HAProxyReader
from lab.balancers.userconfig.placeholders import example_place
from lab.cli import main
from lab.scenario import load_scenario

HERE = Path(__file__).parent / "userconfig"
PRODUCTION = HERE / "exchange-single-vip.cfg"
READER = reader_for("haproxy")


@pytest.fixture
def place() -> Place:
    return dataclasses.replace(example_place(), time_scale=120)


def write(tmp_path: Path, text: str, name: str = "candidate.cfg") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def production_with(tmp_path: Path, old: str, new: str) -> Path:
    text = PRODUCTION.read_text()
    assert old in text
    return write(tmp_path, text.replace(old, new))


def refused(path: Path, place: Place) -> ConfigRefused:
    with pytest.raises(ConfigRefused) as err:
        READER.adopt(path, place)
    return err.value


# ---- the rules -------------------------------------------------------------------------------------


def test_a_production_file_runs_with_the_lab_put_into_it(place):
    adopted = READER.adopt(PRODUCTION, place)
    text = adopted.main.text
    assert adopted.main.name == "haproxy.cfg" and adopted.tls == "offload"
    directives = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\b10\.20\.", directives), "a production address is left"
    assert "/etc/ssl" not in text.replace("ca-base /etc/ssl/certs", "").replace(
        "crt-base /etc/ssl/private", ""
    )
    assert "bind 127.0.1.1:8443 ssl crt tls/server.pem alpn http/1.1" in text
    assert "bind 127.0.1.1:8080" in text and "bind 127.0.1.1:8404" in text
    assert "bind 127.0.1.1:59531" in text and "bind 127.0.1.1:59532" in text
    assert "server exch02 127.0.1.12:8080 check cookie exch02" in text  # options stay
    assert "server exch03 127.0.1.13:59532 check" in text
    assert text.count("stats socket") == 1 and "stats socket unix@haproxy.sock mode 600 level admin" in text
    assert "log stdout format short local0" in text and "chroot" not in text and "daemon" not in text
    # Exchange time, divided by time_scale 120: 1h -> 30s, 45m -> 22.5s, a 30m cookie idle -> 15s
    assert "timeout client  30s" in text and "expire 22500ms" in text and "maxidle 15s" in text
    assert "timeout connect 5s" in text and "timeout http-request 30s" in text  # not idle timeouts
    # Everything else as written: ACLs, routes, methods.
    assert "use_backend bk_owa_ecp if is_owa or is_ecp" in text and "stick on req.hdr(Authorization)" in text
    assert {(m.server, m.cas) for m in adopted.servers} == {
        ("exch01", "CAS01"), ("exch02", "CAS02"), ("exch03", "CAS03")
    }  # fmt: skip
    assert set(adopted.listeners) == {("127.0.1.1", p) for p in (8080, 8443, 8404, 59531, 59532)}


def test_every_rewrite_is_accounted_for_with_its_line_as_written(place):
    adopted = READER.adopt(PRODUCTION, place)
    written = PRODUCTION.read_text().splitlines()
    for rewrite in adopted.rewrites:
        if rewrite.line:
            assert written[rewrite.line - 1] == rewrite.was, rewrite
    server = next(r for r in adopted.rewrites if "exch02 10.20.0.22:80" in r.was)
    assert server.rule == "server -> CAS02 (HTTP port)" and server.now.strip().startswith(
        "server exch02 127.0.1.12"
    )
    diff = adopted.diff()
    assert "-    bind 10.20.0.10:443 ssl crt /etc/ssl/private/mail.contoso.com.pem" in diff
    assert "+    bind 127.0.1.1:8443 ssl crt tls/server.pem" in diff
    # Lines no rule touched are not in the account.
    assert not any("use_backend" in r.was for r in adopted.rewrites)


def test_servers_named_alike_in_every_backend_are_one_cas_everywhere(tmp_path, place):
    path = write(tmp_path, """\
frontend web
    mode http
    bind 10.0.0.5:80
    acl is_eas path_beg -i /microsoft-server-activesync
    use_backend eas if is_eas
    default_backend owa
backend owa
    mode http
    server b 10.0.0.12:80
    server a 10.0.0.11:80
    server c 10.0.0.13:80
backend eas
    mode http
    server c 10.0.0.13:80
    server b 10.0.0.12:80
    server a 10.0.0.11:80
""")  # fmt: skip
    adopted = READER.adopt(path, place)
    cas = {(m.pool, m.server): m.cas for m in adopted.servers}
    assert cas[("owa", "b")] == cas[("eas", "b")] == "CAS01"  # the 1st distinct name, wherever it stands
    assert cas[("owa", "a")] == cas[("eas", "a")] == "CAS02"
    assert cas[("owa", "c")] == cas[("eas", "c")] == "CAS03"
    assert "server c 127.0.1.13:8080" in adopted.main.text


def test_servers_named_differently_map_by_order_and_a_short_backend_is_refused(tmp_path, place):
    text = """\
frontend web
    mode http
    bind :80
    default_backend owa
backend owa
    mode http
    server owa1 10.0.0.11:80
    server owa2 10.0.0.12:80
    server owa3 10.0.0.13:80
backend eas
    mode http
    server eas1 10.0.0.21:443 ssl verify required ca-file /etc/ssl/certs/corp-ca.pem sni str(mail.contoso.com)
    server eas2 10.0.0.22:443 ssl verify required ca-file /etc/ssl/certs/corp-ca.pem sni str(mail.contoso.com)
    server eas3 10.0.0.23:443 ssl verify required ca-file /etc/ssl/certs/corp-ca.pem sni str(mail.contoso.com)
"""  # fmt: skip
    adopted = READER.adopt(write(tmp_path, text), place)
    assert [(m.server, m.cas) for m in adopted.servers if m.pool == "eas"] == [
        ("eas1", "CAS01"), ("eas2", "CAS02"), ("eas3", "CAS03")
    ]  # fmt: skip
    assert (
        "server eas2 127.0.1.12:8443 ssl verify required ca-file tls/ca.pem sni str(mail.caslab.test)"
        in adopted.main.text
    )
    assert "bind 127.0.1.1:8080" in adopted.main.text  # `bind :80` listens nowhere else
    short = write(
        tmp_path, text.replace("    server eas3 10.0.0.23:443 ssl", "    #server eas3"), "short.cfg"
    )
    err = refused(short, place)
    assert "backend eas lists 2 servers (lines 12, 13), the farm has 3 CAS" in str(err)
    assert err.problems[0].line == 10


def test_a_farm_of_another_size_is_named_in_the_refusal(tmp_path):
    err = refused(PRODUCTION, example_place(servers=2))
    assert "the backends name 3 servers (exch01, exch02, exch03), the farm has 2 CAS" in str(err)
    assert "set [farm] servers = 3" in str(err)


SERVER = "    server exch01 10.20.0.21:59531 check"
REFUSED = [
    ("    bind 10.20.0.10:59532", "    bind 10.20.0.10:25", "port 25 is none of the services the lab serves"),
    (
        "    stats timeout 30s",
        "    lua-load /etc/haproxy/auth.lua",
        "lua-load: a Lua script can open connections",
    ),
    ("    maxconn 20000", '    setenv VIP "${PUBLIC_VIP}"', "an environment variable the lab cannot know"),
    (
        "listen stats",
        "resolvers corpdns\n    nameserver dns1 10.20.0.53:53\n\nlisten stats",
        "a resolvers section resolves names with DNS servers",
    ),
    (
        SERVER,
        "    server-template exch 3 _exchange._tcp.contoso.com",
        "server-template resolves servers by DNS",
    ),
    (SERVER, f"{SERVER} source 10.20.0.9", "server ... source: a source address the lab does not have"),
    (
        "    http-request set-header X-Forwarded-Proto https",
        "    errorfile 503 /etc/haproxy/errors/maint.http",
        "names /etc/haproxy/errors/maint.http, which is not on this machine",
    ),
    ("    bind 10.20.0.10:59532", "    bind 10.20.0.10:59531", "as line 112 does already"),
]


@pytest.mark.parametrize(("old", "new", "why"), REFUSED)
def test_what_cannot_be_made_the_labs_is_refused_with_its_line(tmp_path, place, old, new, why):
    path = production_with(tmp_path, old, new)
    err = refused(path, place)
    assert why in str(err), str(err)
    line = next(p.line for p in err.problems if why in p.why)
    written = path.read_text().splitlines()[line - 1]
    assert written.strip() in new or new.splitlines()[0].strip() in written, (line, written)


def test_a_file_for_another_driver_is_refused_by_name(tmp_path, place):
    nginx = write(tmp_path, """\
upstream owa {
    server 10.0.0.11:80;
    server 10.0.0.12:80;
}
server {
    listen 443 ssl;
    location /owa { proxy_pass http://owa; }
}
""", "mail.conf")  # fmt: skip
    err = refused(nginx, place)
    assert "this looks like an nginx config, not HAProxy's" in str(err)
    assert "set the scenario's driver to nginx" in str(err)


def test_a_folder_of_config_files_is_refused_with_what_to_do(tmp_path, place):
    (tmp_path / "conf.d").mkdir()
    err = refused(tmp_path / "conf.d", place)
    assert "a folder of config files; the lab runs one HAProxy file" in str(err)


def test_a_relative_pattern_file_is_copied_beside_the_file_as_run(tmp_path, place):
    (tmp_path / "tenants.lst").write_text("127.64.0.0/10\n")
    path = production_with(
        tmp_path,
        "    acl is_owa    path_beg -i /owa",
        "    acl is_owa    path_beg -i /owa\n    acl tenant src -f tenants.lst",
    )
    adopted = READER.adopt(path, place)
    assert adopted.as_run()["tenants.lst"] == "127.64.0.0/10\n"
    assert "acl tenant src -f tenants.lst" in adopted.main.text


# ---- never a production address --------------------------------------------------------------------


class MissesOneServer(HAProxyReader):
    """A reader with a bug: it leaves the last server of the file as the user wrote it."""

    def rewrite(self, source, place):
        adopted = super().rewrite(source, place)
        main = adopted.main
        lines = main.text.splitlines()
        last = max(i for i, line in enumerate(lines) if line.strip().startswith("server exch03"))
        lines[last] = "    server exch03 10.20.0.23:59532 check"
        main = dataclasses.replace(main, text="\n".join(lines) + "\n")
        return dataclasses.replace(adopted, files=(main, *adopted.files[1:]))


def test_a_missed_rewrite_is_refused_by_the_safety_check_with_the_line_as_written(place):
    err = refused_by(MissesOneServer(), PRODUCTION, place)
    (problem,) = err.problems
    assert problem.file == "exchange-single-vip.cfg" and problem.line == 135
    assert "server 10.20.0.23:59532 is not a CAS of the farm nor the VIP" in problem.why
    assert "name the CAS as the servers of a backend or upstream" in problem.why  # and what to do
    assert "would reach addresses that are not the lab's" in str(err)


def refused_by(reader, path, place) -> ConfigRefused:
    with pytest.raises(ConfigRefused) as err:
        reader.adopt(path, place)
    return err.value


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("    server x 10.9.9.9:80", "server 10.9.9.9:80 is not a CAS"),
        ("    server x cas01.contoso.local:80", "a host name; the lab never resolves names"),
        ("    bind *:8443", "bind on every address (*:8443)"),
        ("    bind 127.0.1.1:9999", "bind 127.0.1.1:9999 is not one of the lab's VIP addresses"),
        ("    log 10.20.0.50:514 local0", "log 10.20.0.50:514 is not a CAS"),
        ("    stats socket /run/haproxy/admin.sock", "stats socket: a socket outside the run's folder"),
        ("    nameserver dns1 10.20.0.53:53", "nameserver"),
        ("    tcp-check connect addr 10.20.0.60 port 25", "tcp-check connect 10.20.0.60:25 is not a CAS"),
    ],
)
def test_the_safety_check_refuses_every_kind_of_address_that_is_not_the_labs(place, line, why):
    from lab.balancers.userconfig.safety import not_the_labs

    found = [a for a in READER.addresses({"haproxy.cfg": f"backend b\n{line}\n"})]
    assert found, line
    assert any(why in (not_the_labs(a, place) or "") for a in found), [not_the_labs(a, place) for a in found]


def test_the_labs_own_addresses_pass_the_safety_check(place):
    from lab.balancers.userconfig.safety import not_the_labs

    adopted = READER.adopt(PRODUCTION, place)
    addresses = READER.addresses(adopted.as_run())
    assert {a.what for a in addresses} >= {"bind", "server", "stats socket"}
    assert [not_the_labs(a, place) for a in addresses if not_the_labs(a, place)] == []


# ---- placeholders ----------------------------------------------------------------------------------


def test_placeholders_name_the_labs_addresses_and_files(tmp_path, place):
    path = write(tmp_path, """\
frontend web
    mode http
    bind {{ vip }}:{{ https_port }} ssl crt {{ cert_pem }}
    default_backend owa
backend owa
    mode http
    balance roundrobin
    cookie SRV insert indirect nocache
    {{ cas_servers("http", "check") }}
backend mapi
    mode tcp
    {{ cas_servers.mapi }}
""")  # fmt: skip
    adopted = READER.adopt(path, place)
    text = adopted.main.text
    assert "bind 127.0.1.1:8443 ssl crt tls/server.pem" in text
    assert "server CAS02 127.0.1.12:8080 check" in text and "server CAS03 127.0.1.13:59531" in text
    assert all(r.rule != "" for r in adopted.rewrites)
    assert not [r for r in adopted.rewrites if "server" in r.now], "placeholder lines need no rewrite"
    assert [m.cas for m in adopted.servers if m.pool == "mapi"] == ["CAS01", "CAS02", "CAS03"]


def test_an_unknown_placeholder_is_refused_with_its_line(tmp_path, place):
    path = write(tmp_path, "frontend web\n    mode http\n    bind {{ vip_address }}:{{ http_port }}\n")
    err = refused(path, place)
    assert err.problems[0].line == 3 and "'vip_address' is undefined; placeholders: cas_servers" in str(err)


# ---- explain ---------------------------------------------------------------------------------------


def methods(explanation) -> dict[str, str]:
    return {r.service: r.method for r in explanation.readings}


def test_explain_reads_each_services_route_and_persistence():
    explanation = READER.explain(PRODUCTION)
    assert methods(explanation) == {
        "owa": "lb-cookie", "ecp": "lb-cookie", "ews": "lb-cookie", "eas": "header Authorization",
        "rpchttp": "cookie-hash OutlookSession (fallback source-ip)", "oab": "none", "autodiscover": "none",
        "mapi": "source-ip", "addressbook": "source-ip",
    }  # fmt: skip
    eas = explanation.reading("eas")
    assert eas.pool == "bk_eas" and eas.route == "use_backend bk_eas if is_eas (line 52)"
    assert [str(t) for t in eas.timeouts][:2] == ["stick-table expire 45m", "timeout client 1h"]
    assert (
        explanation.reading("mapi").rule == explanation.reading("addressbook").rule == "stick table bk_mapi"
    )
    assert explanation.unrouted() == []


def test_explain_predicts_what_the_article_says_for_each_client_kind(tmp_path):
    text = PRODUCTION.read_text()
    # Everything on one balancer cookie: ActiveSync devices and Outlook 2007 never return it.
    cookies = write(tmp_path, text.replace("stick on req.hdr(Authorization)", "cookie EAS insert indirect")
                    .replace("stick on req.cook(OutlookSession)", "cookie RPC insert indirect"))  # fmt: skip
    explanation = READER.explain(cookies)
    eas = {p.client_kind: p for p in explanation.reading("eas").predictions}["eas-device"]
    assert eas.effect == "soft" and "an ActiveSync device never returns it" in eas.why
    rpc = {p.client_kind: p for p in explanation.reading("rpchttp").predictions}
    assert (
        rpc["outlook2007-rpchttp"].effect == "hard"
        and "channels of a pair split" in rpc["outlook2007-rpchttp"].why
    )
    assert rpc["outlook2010-rpchttp"].effect == "holds"
    # Source address for everything: a NAT-ed tenant lands on one CAS.
    source = write(
        tmp_path, re.sub(r"(?m)^    (cookie|stick|balance) .*$", "    balance source", text), "source.cfg"
    )
    for reading in READER.explain(source).readings:
        assert reading.method == "source-ip", reading
        assert {p.effect for p in reading.predictions} <= {"balance", "soft"}, reading.predictions


def test_explain_says_what_it_cannot_read_and_which_services_have_no_route(tmp_path):
    path = production_with(tmp_path, "    use_backend bk_rpc if is_rpc\n", "")
    text = path.read_text().replace("    default_backend bk_owa_ecp\n", "")
    sticky = "    stick on req.hdr(Authorization)"
    path = write(tmp_path, text.replace(sticky, f"{sticky} if {{ src 10.0.0.0/8 }}"))
    explanation = READER.explain(path)
    assert explanation.unrouted() == ["rpchttp"]
    assert explanation.reading("rpchttp").route == "no use_backend takes it and there is no default_backend"
    assert any("a condition" in u for u in explanation.reading("eas").unread)


def test_a_backend_without_servers_routes_its_services_nowhere(tmp_path):
    servers = "    server exch01 10.20.0.21:80 check\n    server exch02 10.20.0.22:80 check\n"
    servers += "    server exch03 10.20.0.23:80 check\n"
    oab = "backend bk_oab\n    balance roundrobin\n"
    path = production_with(tmp_path, oab + servers, oab + "    errorfile 503 /etc/haproxy/errors/503.http\n")
    reading = READER.explain(path).reading("oab")
    assert reading.pool is None and reading.route.endswith(
        "backend bk_oab has no server: HAProxy answers 503 (or its errorfile for 503)"
    )
    assert {p.effect for p in reading.predictions} == {"hard"}


def test_a_service_routed_nowhere_fails_for_its_clients_whatever_affinity_it_needs():
    from lab.balancers.userconfig import Reading
    from lab.balancers.userconfig.predict import predicted

    nowhere = "no location takes it: nginx answers 404"
    oab, owa = predicted([Reading("oab", None, nowhere, None, ""), Reading("owa", None, nowhere, None, "")])
    assert {p.effect for p in [*oab.predictions, *owa.predictions]} == {"hard"}
    assert oab.predictions[0].why == "no route: the balancer answers itself and every oab request fails"
    assert owa.predictions[0].why == "no route: the balancer answers itself"


def test_idle_timeouts_shorter_than_exchange_s_own_timers_are_said_with_what_they_cut(tmp_path):
    as_written = READER.explain(PRODUCTION)  # 1 h everywhere: above the keep-alives and heartbeats
    assert (as_written.reading("rpchttp").timers, as_written.reading("eas").timers) == ((), ())
    (mapi,) = as_written.reading("mapi").timers  # but not above an idle intranet Outlook's hours
    assert mapi.startswith("timeout tunnel 1h (line 26) closes an intranet Outlook's mapi connection")
    assert "a full proxy does not count them as activity" in mapi
    five = READER.explain(production_with(tmp_path, "    timeout server  1h\n", "    timeout server  5m\n"))
    (rpc,) = five.reading("rpchttp").timers
    assert rpc.startswith("timeout server 5m (line 25) cuts idle Outlook Anywhere channels")
    assert rpc.endswith("set below 5m (Microsoft advises 120 s), or the timeout is raised above 15m")
    (eas,) = five.reading("eas").timers
    assert "Microsoft asks for at least 15 minutes on the ActiveSync path (KB 905013)" in eas
    assert eas.endswith("Exchange 2010 logs event 1040")  # 5 min is under the first 9-minute heartbeat
    again = Explanation.from_dict(five.to_dict())
    assert again.reading("rpchttp").timers == (rpc,)
    old = five.to_dict()
    for r in old["readings"]:
        del r["timers"]  # an adoption.json from before timers were read
    assert Explanation.from_dict(old).reading("rpchttp").timers == ()


TLS_PASSTHROUGH = """\
defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 1h

frontend ft_exchange
    bind 10.20.0.10:443
    default_backend bk_exchange

backend bk_exchange
    balance source
    server exch01 10.20.0.21:443
    server exch02 10.20.0.22:443
    server exch03 10.20.0.23:443
"""


def test_in_tcp_mode_the_client_side_and_the_tunnel_timeouts_cut_held_requests_too(tmp_path):
    # TLS passthrough: HAProxy reads no HTTP, so its client side times out an idle channel or Ping as well.
    five = READER.explain(write(tmp_path, TLS_PASSTHROUGH, "passthrough.cfg"))
    assert five.reading("eas").tcp and five.reading("eas").timers[0].startswith(
        "timeout client 5m (line 4) cuts"
    )
    assert (
        five.reading("rpchttp").timers[0].startswith("timeout client 5m (line 4) cuts idle Outlook Anywhere")
    )
    tunnel = TLS_PASSTHROUGH.replace(
        "    timeout server 1h\n", "    timeout server 1h\n    timeout tunnel 2h\n"
    )
    kept = READER.explain(write(tmp_path, tunnel, "tunnel.cfg"))  # the tunnel timeout replaces both sides
    assert (kept.reading("eas").timers, kept.reading("rpchttp").timers) == ((), ())
    (browser,) = kept.reading("owa").predictions  # balance source, placed per connection
    assert browser.why.startswith("source-ip")


NO_DELAY = "    option http-no-delay\n"
UNDONE = "    no option http-no-delay\n"
IN_DEFAULTS = ("    mode    http\n", "    mode    http\n" + NO_DELAY)


@pytest.mark.parametrize(
    "changes, said",
    [
        ([], True),  # as written: mode http from defaults, the option nowhere
        ([("backend bk_rpc\n", "backend bk_rpc\n" + NO_DELAY)], False),
        ([("frontend ft_exchange_https\n", "frontend ft_exchange_https\n" + NO_DELAY)], False),
        ([IN_DEFAULTS], False),
        ([IN_DEFAULTS, ("backend bk_rpc\n", "backend bk_rpc\n" + UNDONE)], False),  # the frontend has it
        (
            [
                IN_DEFAULTS,
                ("backend bk_rpc\n", "backend bk_rpc\n" + UNDONE),
                ("frontend ft_exchange_https\n", "frontend ft_exchange_https\n" + UNDONE),
            ],
            True,
        ),  # undone in both: held again
        ([("backend bk_rpc\n", "backend bk_rpc\n    mode tcp\n")], False),  # TCP mode holds nothing
    ],
)
def test_explain_says_when_outlook_anywhere_calls_wait_for_http_no_delay(tmp_path, changes, said):
    text = PRODUCTION.read_text()
    for old, new in changes:
        assert old in text
        text = text.replace(old, new, 1)
    notes = [n for n in READER.explain(write(tmp_path, text)).notes if "http-no-delay" in n]
    assert bool(notes) == said, notes
    if said:
        assert "backend bk_rpc in HTTP mode" in notes[0] and "0.4 s" in notes[0]


@pytest.mark.parametrize("where", ["frontend ft_exchange_https", "backend bk_rpc"])
def test_explain_says_when_haproxy_buffers_outlook_anywhere_s_endless_request(tmp_path, where):
    path = production_with(tmp_path, f"{where}\n", f"{where}\n    option http-buffer-request\n")
    notes = [n for n in READER.explain(path).notes if "http-buffer-request" in n]
    assert len(notes) == 1 and "backend bk_rpc" in notes[0] and "408" in notes[0], notes
    assert not [n for n in READER.explain(PRODUCTION).notes if "http-buffer-request" in n]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_the_configs_the_lab_renders_read_back_as_their_presets_and_run_unchanged(tmp_path, capsys, preset):
    assert main(["balancer", "config", "--driver", "haproxy", "--preset", preset]) == 0
    path = write(tmp_path, capsys.readouterr().out, f"{preset}.cfg")
    explanation = READER.explain(path)
    for service in SERVICES:
        want, got = PRESETS[preset][service], explanation.reading(service).persistence
        assert got is not None, (service, explanation.reading(service))
        fallback = got.fallback.method if got.fallback else None
        assert (got.method, got.name, fallback) == (
            want.method, want.name, want.fallback.method if want.fallback else None
        ), service  # fmt: skip
    assert explanation.notes == ()  # nothing else it does changes what a run measures
    adopted = READER.adopt(path, example_place())
    assert adopted.rewrites == () and adopted.main.text == path.read_text() and adopted.tls == "none"


def test_balancer_explain_prints_the_table_and_whether_the_file_can_run(tmp_path, capsys):
    assert main(["balancer", "explain", str(PRODUCTION), "--driver", "haproxy", "--diff"]) == 0
    out = capsys.readouterr().out
    assert "eas: bk_eas  via use_backend bk_eas if is_eas (line 52)" in out
    assert "persistence: header Authorization" in out
    assert "in the lab: tls offload" in out and "exch02->CAS02" in out
    assert "haproxy's own check (haproxy -c) reads the file as run: ok" in out
    assert "+    bind 127.0.1.1:8443 ssl crt tls/server.pem" in out
    bad = production_with(tmp_path, "    bind 10.20.0.10:59532", "    bind 10.20.0.10:25")
    assert main(["balancer", "explain", str(bad), "--driver", "haproxy"]) == 2
    assert "line 117: port 25 is none of the services the lab serves" in capsys.readouterr().err
    assert main(["balancer", "explain", str(PRODUCTION), "--driver", "external"]) == 2
    assert "the external driver is a VIP you run yourself" in capsys.readouterr().err


def test_balancer_explain_refuses_what_the_labs_balancer_would_refuse_naming_the_line_as_written(
    tmp_path, capsys, monkeypatch
):
    # NGINX Plus's NTLM pass-through, as its Exchange guide writes it: the lab's nginx is the open edition.
    text = (
        (HERE / "nginx-hash.conf")
        .read_text()
        .replace("        least_conn;\n", "        least_conn;\n        ntlm;\n")
    )
    plus = write(tmp_path, text, "nginx-plus.conf")
    line = text.splitlines().index("        ntlm;") + 1
    assert main(["balancer", "explain", str(plus), "--driver", "nginx"]) == 2
    err = capsys.readouterr().err
    assert "nginx's own check refuses the file as run" in err
    assert f'unknown directive "ntlm" in nginx-plus.conf line {line}' in err
    assert "a commercial edition (NGINX Plus, HAProxy Enterprise)" in err
    assert "caslab-explain-" not in err, "the scratch folder is no path of the user's"
    assert main(["balancer", "explain", str(HERE / "nginx-hash.conf"), "--driver", "nginx"]) == 0
    assert "nginx's own check (nginx -t) reads the file as run: ok" in capsys.readouterr().out
    # Without the balancer installed here the reading stands, and says the check did not run.
    monkeypatch.setattr("lab.balancers.drivers.nginx.nginx_binary", lambda: "/nonexistent/nginx")
    assert main(["balancer", "explain", str(HERE / "nginx-hash.conf"), "--driver", "nginx"]) == 0
    out = capsys.readouterr().out
    assert "nginx's own check did not run here" in out and "a run checks the file before it starts" in out


# ---- the scenario ------------------------------------------------------------------------------------


def test_a_scenarios_config_is_relative_to_it_and_command_line_one_to_where_caslab_runs(tmp_path):
    scenario = load_scenario(HERE / "candidate-recommended.toml")
    assert scenario.balancer.config == "exchange-single-vip.cfg"
    assert scenario.config_path == HERE / "exchange-single-vip.cfg"
    assert scenario.not_applied_with_config() == []
    other = scenario.with_overrides(config="elsewhere/my.cfg", preset="source-ip-all")
    assert other.config_path == Path("elsewhere/my.cfg")
    assert other.not_applied_with_config() == ["preset source-ip-all"]
    bundled = load_scenario("hosted-tenant-recommended").with_overrides(config="my.cfg", driver="haproxy")
    assert bundled.not_applied_with_config() == ["preset recommended"]


def test_a_driver_without_a_reader_is_a_scenario_error():
    from lab.scenario import ScenarioError

    with pytest.raises(ScenarioError) as err:
        load_scenario(HERE / "candidate-recommended.toml").with_overrides(driver="external")
    readers = "envoy, haproxy, nginx, traefik"
    assert f"caslab reads configs for {readers}, not for driver external" in str(err.value)
    assert err.value.key == "balancer.config"


def test_on_vip_per_service_each_listener_takes_the_addresses_of_the_services_it_routes(tmp_path):
    path = write(tmp_path, """\
defaults
    mode http
frontend ft_owa
    bind 10.0.0.10:443 ssl crt /etc/ssl/private/owa.pem
    use_backend bk_web if { path_beg -i /owa /ecp }
frontend ft_eas
    bind 10.0.0.11:443 ssl crt /etc/ssl/private/eas.pem
    use_backend bk_web if { path_beg -i /microsoft-server-activesync }
backend bk_web
    server ex1 10.0.0.21:80
    server ex2 10.0.0.22:80
    server ex3 10.0.0.23:80
""")  # fmt: skip
    per_service = dataclasses.replace(example_place(), topology="vip-per-service")
    adopted = READER.adopt(path, per_service)
    assert sorted(adopted.listeners) == [("127.0.1.2", 8443), ("127.0.1.4", 8443)]  # OWA/ECP's, EAS's
    err = refused(path, example_place())  # one VIP: both would be 127.0.1.1:8443
    assert "line 7: becomes VIP 127.0.1.1:8443, as line 4 does already" in str(err)
