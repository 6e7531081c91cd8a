"""`caslab scenario from-logs`: the readers (IIS W3C, HAProxy httplog, nginx combined; plain and
gzipped; bad input), the inference of clients and populations from a farm's logs, and the scenario it
writes (valid, with its evidence, and nothing personal in it)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import tomllib
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.cli import main
from lab.fromlogs import haproxy, nginx
from lab.fromlogs.classify import agent_family, first_address, person_keys, service_of, user_key
from lab.fromlogs.infer import infer
from lab.fromlogs.read import read_logs
from lab.fromlogs.sources import LogError
from lab.fromlogs.w3c import W3cReader
from lab.fromlogs.writer import scenario_toml
from lab.scenario import SCHEMA_FILE, parse_scenario

FIELDS = (
    "date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) "
    "sc-status sc-substatus sc-win32-status time-taken cs(X-Forwarded-For)"
)
SOFTWARE = "#Software: Microsoft Internet Information Services 7.5\n"
HEADER = f"{SOFTWARE}#Version: 1.0\n#Date: 2024-01-05 00:00:00\n#Fields: {FIELDS}\n"
OUTLOOK_2010 = "Microsoft+Office/14.0+(Windows+NT+6.1;+Microsoft+Outlook+14.0.7113;+Pro)"
OUTLOOK_2007 = "Microsoft+Office/12.0+(Windows+NT+6.1;+Microsoft+Office+Outlook+12.0.6662;+Pro)"
BROWSER = "Mozilla/5.0+(compatible;+MSIE+9.0;+Windows+NT+6.1;+WOW64;+Trident/5.0)"
IPHONE = "Apple-iPhone4C1/902.176"
DAY = dt.datetime(2024, 1, 5, tzinfo=dt.UTC).timestamp()
CHANGE_EVERY_S = 1200  # the carrier's phones in farm_lines move every 20 minutes
BALANCER = "10.0.0.5"


def line(t: float, stem: str, query: str, user: str, agent: str, forwarded: str, peer: str = BALANCER) -> str:
    when = dt.datetime.fromtimestamp(DAY + t, dt.UTC)
    return (
        f"{when:%Y-%m-%d %H:%M:%S} 10.0.0.11 POST {stem} {query or '-'} 443 {user or '-'} {peer} {agent} "
        f"200 0 0 15 {forwarded or '-'}"
    )


def farm_lines(hours: int = 2, forwarded: bool = True) -> list[str]:
    """Two hours of a farm behind a balancer that source-NATs, in time order: a tenant of 30 users
    behind 2 NAT addresses (all with a browser, 10 with Outlook 2010 and 4 with Outlook 2007 over
    RPC/HTTP), 8 phones on a carrier's 4 addresses moving every 20 minutes, 5 intranet users with
    Outlook over MAPI and 4 home users with a browser."""
    rows: list[tuple[float, str]] = []

    def add(t: float, *args: str) -> None:
        peer = BALANCER if forwarded else args[-1]
        rows.append((t, line(t, *args[:-1], args[-1] if forwarded else "", peer=peer)))

    for t in range(0, hours * 3600, 60):
        for u in range(1, 31):
            nat = f"203.0.113.{1 + u % 2}"
            if (t // 60 + u) % 5 == 0:
                add(t, "/owa/ev.owa", "ns=Messaging", f"CONTOSO\\user{u}", BROWSER, nat)
            if u <= 14 and (t // 60 + u) % 10 == 0:
                add(t, "/rpc/rpcproxy.dll", "cas01.contoso.com:6001", f"user{u}@contoso.com", "MSRPC", nat)
                agent = OUTLOOK_2010 if u <= 10 else OUTLOOK_2007
                add(t, "/EWS/Exchange.asmx", "", f"user{u}@contoso.com", agent, nat)
        for d in range(1, 9):
            if (t // 60 + d) % 2 == 0:
                slot = (d + (t + d * 150) // CHANGE_EVERY_S) % 4
                query = f"Cmd=Ping&User=phone{d}&DeviceId=APPL{d:04d}SECRET&DeviceType=iPhone"
                add(
                    t,
                    "/Microsoft-Server-ActiveSync/default.eas",
                    query,
                    f"phone{d}",
                    IPHONE,
                    f"198.51.100.{slot + 1}",
                )
        for u in range(1, 6):
            if (t // 60 + u) % 10 == 0:
                add(t, "/EWS/Exchange.asmx", "", f"desk{u}", OUTLOOK_2010, f"10.1.0.{u}")
        for u in range(1, 5):
            if (t // 60 + u) % 5 == 0:
                add(t, "/owa/", "ae=Folder", f"home{u}", BROWSER, f"192.0.2.{u}")
    return [text for _, text in sorted(rows)]


def write_log(path: Path, lines: list[str], header: str = HEADER) -> Path:
    text = header + "".join(f"{x}\n" for x in lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def read_one(path: Path) -> tuple[W3cReader, list[dict]]:
    reader = W3cReader(path)
    rows = [row for batch in reader.batches() for row in batch.to_pylist()]
    return reader, rows


# -- what a request says ----------------------------------------------------------------------------


def test_service_of_a_path_is_its_virtual_directory_in_any_case():
    assert service_of("/owa/") == service_of("/OWA") == "owa"
    assert service_of("/Microsoft-Server-ActiveSync/default.eas") == "eas"
    assert service_of("/rpc/rpcproxy.dll") == "rpchttp"
    assert service_of("/EWS/Exchange.asmx") == "ews"
    assert service_of("/OAB/1234/oab.xml") == "oab"
    assert service_of("/Autodiscover/Autodiscover.xml") == "autodiscover"
    assert service_of("/owanext") == service_of("/") == service_of("/favicon.ico") == "other"


def test_agent_families_of_exchange_clients():
    assert agent_family(OUTLOOK_2010) == agent_family(OUTLOOK_2010.replace("+", " ")) == "outlook2010"
    assert (
        agent_family("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.4266; Pro)")
        == "outlook2010"
    )
    assert (
        agent_family(OUTLOOK_2007) == agent_family("Microsoft Office/11.0 (Windows NT 5.1)") == "outlook2007"
    )
    assert agent_family("MSRPC") == "msrpc"
    assert agent_family("Microsoft+BITS/7.5") == "bits"
    assert agent_family(IPHONE) == agent_family("Android-SAMSUNG-GT-I9300/101.40102") == "eas"
    assert agent_family("ExchangeServicesClient/14.03.0032.000") == "ews-app"
    assert agent_family(BROWSER) == "browser"
    assert agent_family("curl/7.88.1") == "other"
    assert agent_family("-") == agent_family("") == "none"


def test_a_user_is_one_name_however_a_log_spells_it():
    assert person_keys(
        [user_key("CONTOSO\\User1"), user_key("user1@contoso.com"), user_key("user1%40contoso.com")]
    ) == (["user1", "user1", "user1"], "")
    assert user_key("-") == user_key("") == ""
    assert (
        first_address("198.51.100.7,+10.0.0.1") == first_address("198.51.100.7, 10.0.0.1") == "198.51.100.7"
    )
    assert first_address("-") == ""
    # A port some proxies add (ARR) is not part of the address; an IPv6 address keeps its colons.
    assert first_address("203.0.113.10:51234,+10.0.0.1") == "203.0.113.10"
    assert first_address("[2001:db8::7]:443") == first_address("2001:db8::7") == "2001:db8::7"


def test_users_of_a_hosted_farm_s_tenants_are_told_apart_by_their_upn_domain():
    names = ["user1@alpha-corp.com", "user1@beta-ltd.com", "ALPHA-CORP\\user1", "BETA\\user1",
             "user2@beta-ltd.com", "BETA\\user2", "user3", ""]  # fmt: skip
    keys, said = person_keys([user_key(n) for n in names])
    assert keys == ["user1@alpha-corp.com", "user1@beta-ltd.com", "user1@alpha-corp.com", "user1",
                    "user2", "user2", "user3", ""]  # fmt: skip
    assert said == (
        "1 user names appear under 2 UPN domains (tenants of a hosted farm): those are told apart by domain, "
        "their DOMAIN\\user spellings by the UPN domain whose first label is DOMAIN; 1 spellings without "
        "such a domain by the name alone"
    )
    # One organisation with several UPN suffixes (and a NetBIOS name that is none of them): every spelling
    # of a person is still one person.
    one_org = [
        "corp\\jdoe",
        "jdoe@contoso.com",
        "asmith@fabrikam.com",
        "corp\\asmith",
        "bsmith@contoso.co.uk",
    ]
    assert person_keys(one_org) == (["jdoe", "jdoe", "asmith", "asmith", "bsmith"], "")


# -- the IIS W3C reader -----------------------------------------------------------------------------


def test_fields_decide_the_columns_and_an_unknown_field_is_skipped_with_a_note(tmp_path):
    header = "#Version: 1.0\n#Fields: time c-ip X-Forwarded-For cs-uri-stem x-made-up date cs-username\n"
    log = write_log(
        tmp_path / "u_ex240105.log",
        ["10:00:01 10.0.0.5 203.0.113.9 /owa/ zz 2024-01-05 CONTOSO\\alice"],
        header,
    )
    reader, rows = read_one(log)
    assert rows == [
        {
            "ts": int(DAY) + 36001,
            "peer": "10.0.0.5",
            "forwarded": "203.0.113.9",
            "user": "CONTOSO\\alice",
            "agent": "",
            "path": "/owa/",
            "query": "",
        }
    ]
    assert reader.notes.skipped_fields == ["x-made-up"]


def test_lines_of_another_format_are_counted_and_quoted_never_read(tmp_path):
    good = farm_lines(hours=1)[:3]
    nginx_line = '203.0.113.7 - bob [05/Jan/2024:10:00:00 +0000] "GET /owa/ HTTP/1.1" 200 5 "-" "x"'
    bad_time = good[0].replace(good[0][11:19], "25:61:00")
    lines = [good[0], nginx_line, "", good[1], "   ", bad_time, good[2]]  # blank lines are no misfits
    reader, rows = read_one(write_log(tmp_path / "u_ex240105.log", lines))
    assert len(rows) == 3 and reader.notes.misfits == 2
    first, second = reader.notes.examples
    assert first.startswith("line 6: 12 fields where #Fields names 15")  # after 4 header lines
    assert second.startswith("line 10: a date and time not as IIS writes them")
    assert reader.notes.lines == 11


def test_a_new_header_block_may_change_the_fields_mid_file(tmp_path):
    first = line(0, "/owa/", "", "alice", BROWSER, "203.0.113.1")
    second_header = f"{SOFTWARE}#Fields: date time cs-uri-stem c-ip cs-username\n"
    text = HEADER + first + "\n" + second_header + "2024-01-05 00:00:09 /EWS/Exchange.asmx 192.0.2.8 bob\n"
    log = tmp_path / "u_ex240105.log"
    log.write_text(text)
    _, rows = read_one(log)
    assert [(r["path"], r["peer"], r["forwarded"], r["user"]) for r in rows] == [
        ("/owa/", BALANCER, "203.0.113.1", "alice"),
        ("/EWS/Exchange.asmx", "192.0.2.8", "", "bob"),
    ]


def test_gzipped_and_plain_logs_read_alike_and_several_days_add_up(tmp_path):
    lines = farm_lines(hours=1)
    plain = write_log(tmp_path / "u_ex240105.log", lines)
    packed = write_log(tmp_path / "u_ex240106.log.gz", [x.replace("2024-01-05", "2024-01-06") for x in lines])
    assert [r["path"] for r in read_one(packed)[1]] == [r["path"] for r in read_one(plain)[1]]
    observed = read_logs([plain, packed])
    assert [f.requests for f in observed.files] == [len(lines), len(lines)]
    assert int(observed.activity["requests"].sum()) == 2 * len(lines)
    assert observed.activity["first"].min() == int(DAY)
    assert observed.activity["last"].max() >= int(DAY) + 86400


def test_bytes_that_are_not_utf8_are_read_with_replacement(tmp_path):
    log = tmp_path / "u_ex240105.log"
    log.write_bytes(
        HEADER.encode() + line(0, "/owa/", "", "al\xe9", BROWSER, "203.0.113.1").encode("latin-1") + b"\n"
    )
    reader, rows = read_one(log)
    assert rows[0]["user"] == "al\ufffd" and reader.notes.remarks


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("hello world\nthis is no log\n", "line 1: not an IIS W3C log"),
        ("\n\nGET / HTTP/1.1\n", "line 3: not an IIS W3C log"),
        (
            line(0, "/owa/", "", "a", BROWSER, "") + "\n",
            r"line 1: an IIS W3C request line with no #Fields line",
        ),
        (
            "#Software: IIS\n" + line(0, "/owa/", "", "a", BROWSER, "") + "\n",
            "line 2: a request line before any #Fields",
        ),
        ("#Fields: time c-ip cs-uri-stem\n", "line 1: #Fields lacks date"),
        (
            "#Fields: date time cs-uri-stem cs-username\n",
            "line 1: #Fields has neither c-ip nor X-Forwarded-For",
        ),
    ],
)
def test_a_file_that_is_not_a_log_says_which_line_and_why(tmp_path, content, problem):
    log = tmp_path / "not.log"
    log.write_text(content)
    with pytest.raises(LogError, match=problem):
        read_logs([log])


def test_a_log_saved_again_on_windows_reads_alike_and_utf16_says_how_to_make_it_utf8(tmp_path):
    lines = farm_lines(hours=1)
    plain = write_log(tmp_path / "u_ex240105.log", lines)
    text = plain.read_bytes()
    with_bom = tmp_path / "bom.log"
    with_bom.write_bytes(b"\xef\xbb\xbf" + text.replace(b"\n", b"\r\n"))  # PowerShell's Set-Content
    packed = tmp_path / "bom.log.gz"
    packed.write_bytes(gzip.compress(b"\xef\xbb\xbf" + text))
    expected = [(r["path"], r["user"]) for r in read_one(plain)[1]]
    assert [(r["path"], r["user"]) for r in read_one(with_bom)[1]] == expected
    assert [(r["path"], r["user"]) for r in read_one(packed)[1]] == expected
    assert [f.requests for f in read_logs([with_bom, packed]).files] == [len(lines), len(lines)]
    utf16 = tmp_path / "all.log"
    utf16.write_bytes(text.decode().encode("utf-16"))  # with its byte-order mark, as `>` writes it
    with pytest.raises(LogError, match=r"line 1: UTF-16 text .* save it as UTF-8"):
        read_logs([utf16])


def test_binary_data_and_broken_gzip_are_not_logs(tmp_path):
    binary = tmp_path / "a.bin"
    binary.write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(LogError, match="line 1: binary data"):
        read_logs([binary])
    # NULs after the first line (a log cut short by a crash, then written on) are one line the reader
    # counts, wherever they are: the rest of the file is read.
    lines = farm_lines(hours=1)
    crashed = tmp_path / "u_ex240107.log"
    crashed.write_bytes(
        (HEADER + "".join(f"{x}\n" for x in lines[:40])).encode() + b"\0" * 4096 + b"\n"
        + "".join(f"{x}\n" for x in lines[40:]).encode()
    )  # fmt: skip
    (notes,) = read_logs([crashed]).files
    assert notes.requests == len(lines)
    broken = tmp_path / "u_ex240105.log.gz"
    broken.write_bytes(gzip.compress((HEADER + "\n".join(farm_lines(1))).encode())[:3000])
    with pytest.raises(LogError, match="gzip"):
        read_logs([broken])


def test_logs_without_exchange_traffic_are_an_error_not_an_empty_scenario(tmp_path):
    log = write_log(
        tmp_path / "u_ex240105.log", [line(t, "/index.html", "", "alice", BROWSER, "") for t in range(5)]
    )
    with pytest.raises(LogError, match="no Exchange traffic found: of 5 requests read"):
        read_logs([log])
    assert main(["scenario", "from-logs", str(log)]) == 2


GARBAGE_LINE = st.text(max_size=80).map(lambda g: g.replace("\n", " ").replace("\r", " ").lstrip("#"))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.lists(GARBAGE_LINE.filter(str.strip), min_size=1, max_size=30), st.integers(0, 3))
def test_the_w3c_reader_never_raises_on_garbage_lines_and_counts_each(tmp_path, garbage, good):
    lines = farm_lines(hours=1)[:good] + garbage
    log = tmp_path / "u_ex240105.log"
    log.write_text(HEADER + "".join(f"{x}\n" for x in lines), encoding="utf-8")
    reader, rows = read_one(log)
    assert len(rows) >= good
    assert len(rows) + reader.notes.misfits == len(lines)  # each line is read or counted, none lost


# -- the balancers' logs ----------------------------------------------------------------------------

HAPROXY_LINE = (
    "Jan  5 10:00:00 lb1 haproxy[1234]: 203.0.113.7:50123 [05/Jan/2024:10:00:00.123] https~ eas/cas01 "
    "0/0/1/12/13 200 512 - - ---- 10/10/2/1/0 0/0 {Apple-iPhone4C1/902.176} "
    '"POST /Microsoft-Server-ActiveSync/default.eas?Cmd=Ping&User=bob&DeviceId=D1&DeviceType=iPhone HTTP/1.1"'
)
NGINX_LINE = (
    '203.0.113.8 - alice@contoso.com [05/Jan/2024:11:00:00 +0100] "POST /EWS/Exchange.asmx HTTP/1.1" 200 512 '
    '"-" "ExchangeServicesClient/14.03.0032.000"'
)


def _balancer_rows(path: Path, reader) -> list[dict]:
    return [row for batch in reader.batches() for row in batch.to_pylist()]


def test_an_haproxy_httplog_line_gives_address_time_and_request_and_captures_when_named(tmp_path):
    log = tmp_path / "haproxy.log"
    log.write_text(HAPROXY_LINE + "\n")
    (row,) = _balancer_rows(log, haproxy.reader(log))
    assert row["peer"] == "203.0.113.7" and row["ts"] == int(DAY) + 36000
    assert row["path"] == "/Microsoft-Server-ActiveSync/default.eas" and "DeviceId=D1" in row["query"]
    assert row["agent"] == ""  # a capture is not read without its name
    (row,) = _balancer_rows(log, haproxy.reader(log, ("User-Agent",)))
    assert row["agent"] == "Apple-iPhone4C1/902.176"


def test_an_nginx_combined_line_gives_the_basic_user_the_agent_and_the_zone(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(NGINX_LINE + "\n")
    (row,) = _balancer_rows(log, nginx.reader(log))
    assert row["user"] == "alice@contoso.com" and row["agent"].startswith("ExchangeServicesClient")
    assert row["ts"] == int(DAY) + 36000  # 11:00 at +0100 is 10:00 UTC


def test_nginx_s_main_format_gives_the_forwarded_addresses_and_its_escaped_backslash_is_read(tmp_path):
    log = tmp_path / "access.log"  # nginx.conf's `main`: combined, then "$http_x_forwarded_for"
    main_line = NGINX_LINE.replace("alice@contoso.com", "CONTOSO\\x5Calice") + ' "198.51.100.9, 10.0.0.5"'
    log.write_text(f'{main_line}\n{NGINX_LINE} "-"\n')
    forwarded, plain = _balancer_rows(log, nginx.reader(log))
    assert (forwarded["forwarded"], forwarded["user"]) == ("198.51.100.9, 10.0.0.5", "CONTOSO\\alice")
    assert (plain["forwarded"], plain["user"]) == ("", "alice@contoso.com")
    assert person_keys([user_key(forwarded["user"]), user_key(plain["user"])])[0] == ["alice", "alice"]
    # Another quoted field last (here $upstream_addr, with its port) is no X-Forwarded-For.
    log.write_text(f'{NGINX_LINE} "10.20.0.11:443"\n')
    (upstream,) = _balancer_rows(log, nginx.reader(log))
    assert upstream["forwarded"] == ""


def test_a_balancer_log_of_the_other_format_is_told_apart_and_its_misfits_counted(tmp_path):
    log = tmp_path / "mixed.log"
    log.write_text(NGINX_LINE + "\n" + HAPROXY_LINE + "\n" + NGINX_LINE.replace("11:00", "11:05") + "\n")
    observed = read_logs([log])
    (notes,) = observed.files
    assert notes.format == "nginx-combined" and notes.requests == 2 and notes.misfits == 1
    assert notes.examples[0].startswith("line 2: not an nginx combined line")


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.lists(st.text(max_size=120), min_size=1, max_size=20), st.sampled_from(["haproxy", "nginx"]))
def test_the_balancer_log_readers_never_raise_on_garbage_and_count_it(tmp_path, garbage, fmt):
    first = HAPROXY_LINE if fmt == "haproxy" else NGINX_LINE
    log = tmp_path / "balancer.log"
    lines = [g.replace("\n", " ").replace("\r", " ") for g in garbage]
    log.write_text(first + "\n" + "".join(f"{x}\n" for x in lines), encoding="utf-8")
    reader = haproxy.reader(log) if fmt == "haproxy" else nginx.reader(log)
    rows = _balancer_rows(log, reader)
    assert len(rows) + reader.notes.misfits == 1 + sum(1 for x in lines if x.strip())


# -- inference ----------------------------------------------------------------------------------------


@pytest.fixture
def farm_log(tmp_path) -> Path:
    return write_log(tmp_path / "u_ex240105.log", farm_lines())


def test_populations_are_recovered_from_a_farm_behind_a_balancer(farm_log):
    inference = infer(read_logs([farm_log]))
    by_kind = {p.kind: p for p in inference.populations}
    assert set(by_kind) == {"tenant-nat", "mobile-carrier", "intranet", "direct"}
    tenant = by_kind["tenant-nat"]
    assert (tenant.users, tenant.source_ips, tenant.users_per_address) == (30, 2, (15, 15))
    assert tenant.clients == {"browser": 30, "outlook2010-rpchttp": 10, "outlook2007-rpchttp": 4}
    assert tenant.evidence[0] == "2 addresses carried 15 distinct users each: a NAT-ed tenant"
    carrier = by_kind["mobile-carrier"]
    assert (carrier.users, carrier.source_ips, carrier.clients) == (8, 4, {"eas-device": 8})
    assert carrier.ip_change_every_s == pytest.approx(CHANGE_EVERY_S, rel=0.2)
    assert (by_kind["intranet"].users, by_kind["intranet"].clients) == (5, {"outlook-mapi": 5})
    assert (by_kind["direct"].users, by_kind["direct"].clients) == (4, {"browser": 4})
    assert any("c-ip 10.0.0.5 carried" in n and "X-Forwarded-For" in n for n in inference.notes)
    assert inference.rates["browser"].per_hour == pytest.approx(12, rel=0.05)  # one page every 5 min


def test_a_balancer_that_source_nats_without_x_forwarded_for_is_named(tmp_path):
    unforwarded = [x.rsplit(" ", 1)[0] + " -" for x in farm_lines()]  # X-Forwarded-For not logged
    inference = infer(read_logs([write_log(tmp_path / "u_ex240105.log", unforwarded)]))
    (warning,) = [n for n in inference.notes if n.startswith("WARNING")]
    assert "c-ip 10.0.0.5 carried 47 of 47 users and no X-Forwarded-For was logged" in warning


def test_many_users_of_desktop_outlook_only_behind_one_address_are_a_citrix_farm(tmp_path):
    lines = [
        line(t, "/EWS/Exchange.asmx", "", f"user{u}", OUTLOOK_2010, "203.0.113.50")
        for t in range(0, 3600, 300)
        for u in range(1, 21)
    ]
    inference = infer(read_logs([write_log(tmp_path / "u_ex240105.log", lines)]))
    (citrix,) = inference.populations
    assert (citrix.kind, citrix.users, citrix.clients) == ("citrix", 20, {"outlook-mapi": 20})


def test_a_carrier_of_one_phone_is_a_valid_scenario_that_says_its_phone_moved(tmp_path):
    one_phone = [x for x in farm_lines() if "phone" not in x or "User=phone1&" in x]
    inference = infer(read_logs([write_log(tmp_path / "u_ex240105.log", one_phone)]))
    (carrier,) = [p for p in inference.populations if p.kind == "mobile-carrier"]
    assert (carrier.users, carrier.source_ips) == (1, 1) and carrier.ip_change_every_s
    text = scenario_toml(inference, "contoso")
    scenario = parse_scenario(text, "contoso.toml")  # a population of one user has one address
    (written,) = [p for p in scenario.populations if p.kind == "mobile-carrier"]
    assert written.ip_change_every_s is None
    assert "# its one device changed address every" in text


def test_requests_no_modelled_client_made_and_a_log_without_its_query_are_said(tmp_path):
    lync = "Microsoft+Lync+2010+(4.0.7577.4419)"  # names its user on Autodiscover, and is no Exchange client
    lines = farm_lines(hours=1) + [
        line(3590, "/Autodiscover/Autodiscover.xml", "", f"user{u}", lync, "203.0.113.1") for u in range(1, 4)
    ]
    inference = infer(read_logs([write_log(tmp_path / "u_ex240105.log", lines)]))
    assert any(
        n.startswith("3 requests named a user but came from programs of no client kind")
        for n in inference.notes
    )
    # Without cs-uri-query the phones' DeviceIds are not in the log: said once, not silently lost.
    fields = FIELDS.replace(" cs-uri-query", "")
    header = HEADER.replace(FIELDS, fields)
    no_query = [" ".join(x.split(" ")[:5] + x.split(" ")[6:]) for x in farm_lines(hours=1)]
    (notes,) = read_logs([write_log(tmp_path / "u_ex240106.log", no_query, header)]).files
    (said,) = [r for r in notes.remarks if "no cs-uri-query" in r]
    assert said == (
        "line 4: #Fields has no cs-uri-query: ActiveSync devices are told apart by the DeviceId in it, so "
        "their requests name no device here"
    )


def test_an_outlook_that_sent_only_msrpc_channels_takes_the_version_most_outlooks_run_and_is_said(tmp_path):
    # Outlook 2003 has no Autodiscover and no EWS: its log lines are its MSRPC channels only.
    lines = farm_lines(hours=1) + [
        line(
            3590, "/rpc/rpcproxy.dll", "cas01.contoso.com:6001", f"old{u}@contoso.com", "MSRPC", "203.0.113.1"
        )
        for u in range(1, 3)
    ]
    inference = infer(read_logs([write_log(tmp_path / "u_ex240105.log", lines)]))
    (tenant,) = [p for p in inference.populations if p.kind == "tenant-nat"]
    # 10 of the 14 Outlooks the log names run 2010 (Microsoft Office/14.0 on their EWS calls)
    assert tenant.clients["outlook2010-rpchttp"] == 10 + 2 and tenant.clients["outlook2007-rpchttp"] == 4
    (said,) = [n for n in inference.notes if n.startswith("2 Outlooks sent MSRPC channels")]
    assert "read as Outlook 2010 over RPC/HTTP" in said


def test_a_caslab_runs_logs_are_read_in_exchange_time(farm_log):
    fast = infer(read_logs([farm_log], time_scale=60))
    (carrier,) = [p for p in fast.populations if p.kind == "mobile-carrier"]
    assert carrier.ip_change_every_s == pytest.approx(CHANGE_EVERY_S * 60, rel=0.2)


# -- the scenario written ---------------------------------------------------------------------------


def test_the_scenario_is_valid_has_its_evidence_and_nothing_personal(farm_log):
    inference = infer(read_logs([farm_log]))
    text = scenario_toml(inference, "contoso")
    scenario = parse_scenario(text, "contoso.toml")
    jsonschema.validate(tomllib.loads(text), json.loads(SCHEMA_FILE.read_text()))
    assert [p.kind for p in scenario.populations] == ["tenant-nat", "mobile-carrier", "intranet", "direct"]
    carrier = scenario.populations[1]
    assert carrier.ip_change_every_s == pytest.approx(CHANGE_EVERY_S, rel=0.2)
    assert "# 2 addresses carried 15 distinct users each: a NAT-ed tenant" in text
    assert "each device moved every" in text
    for personal in ("user1", "phone1", "desk1", "home1", "appl0", "secret"):
        assert personal not in text.lower(), personal


def test_the_command_writes_the_scenario_the_report_and_prints_the_fit(farm_log, tmp_path, capsys):
    out, report = tmp_path / "contoso.toml", tmp_path / "fit.html"
    assert main(["scenario", "from-logs", str(farm_log), "-o", str(out), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert f"read {farm_log}: iis-w3c" in printed
    assert "fit: observed in the logs | synthesized by the scenario" in printed
    assert "tenant-nat outlook2010-rpchttp" in printed
    assert parse_scenario(out.read_text(), str(out)).name == "contoso"
    page = report.read_text()
    assert page.count("<svg") == 4 and "NAT-ed tenant" in page
    assert "user1" not in page.lower() and "secret" not in page.lower()


def test_an_haproxy_log_alone_still_tells_the_phones_and_how_often_they_move(tmp_path):
    lines = []
    for t in range(0, 2 * 3600, 120):
        for d in range(1, 7):
            slot = (d + (t + d * 150) // CHANGE_EVERY_S) % 3
            when = dt.datetime.fromtimestamp(DAY + t, dt.UTC).strftime("%d/%b/%Y:%H:%M:%S")
            lines.append(
                f"Jan  5 00:00:00 lb1 haproxy[1]: 198.51.100.{slot + 1}:4000{d} [{when}.000] https~ "
                f'eas/cas01 0/0/1/2/3 200 10 - - ---- 1/1/1/1/0 0/0 "POST /Microsoft-Server-ActiveSync'
                f'?Cmd=Ping&User=phone{d}&DeviceId=D{d}&DeviceType=Android HTTP/1.1"'
            )
    log = tmp_path / "haproxy.log"
    log.write_text("\n".join(lines) + "\n")
    observed = read_logs([log])
    assert any("no User-Agent and no user" in r for r in observed.files[0].remarks)
    (carrier,) = infer(observed).populations
    assert (carrier.kind, carrier.users, carrier.source_ips) == ("mobile-carrier", 6, 3)
    assert carrier.ip_change_every_s == pytest.approx(CHANGE_EVERY_S, rel=0.2)
