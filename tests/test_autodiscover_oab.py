"""Autodiscover and OAB in the mock CAS, with the client helpers of loadgen.wire.autodiscover and .oab."""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib

import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from mockcas_helpers import ledger, mangle

from loadgen.wire import autodiscover, oab

BASE = "127.0.12"
CAS01, CAS02 = f"http://{BASE}.11:8080", f"http://{BASE}.12:8080"
USER = "user3@caslab.test"
VIP = "vip.caslab.example"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:caslab".encode()).decode()}


def _discover(server: str, body: bytes, headers: dict[str, str] = AUTH) -> requests.Response:
    return requests.post(
        server + autodiscover.PATH, data=body, headers={**autodiscover.HEADERS, **headers}, timeout=5
    )


# --- Autodiscover ----------------------------------------------------------------------------------


def test_outlook_settings_point_at_the_vip_never_at_the_cas(make_farm):
    farm = make_farm(BASE, servers=2, vip_host=VIP)
    for server in (CAS01, CAS02):
        response = _discover(server, autodiscover.outlook_request(USER))
        assert response.status_code == 200
        answer = autodiscover.parse(response.content)
        assert answer is not None and answer.error_code == ""
        assert answer.hosts() == {VIP}
        assert "cas0" not in response.text.lower() and BASE not in response.text
        assert set(answer.protocols) == {"EXCH", "EXPR", "WEB"}
        expr = answer.protocols["EXPR"]
        assert (expr["Server"], expr["SSL"], expr["AuthPackage"]) == (VIP, "On", "Basic")
        assert answer.ews_url == f"https://{VIP}/EWS/Exchange.asmx"
        assert answer.protocols["EXCH"]["OOFUrl"] == answer.ews_url
        assert oab.oab_path(answer.oab_url) == f"/OAB/{farm['CAS01'].http_services['oab'].guid}/"
        assert answer.display_name == "User 3"
    assert [(r["state"], r["session_key"]) for r in ledger(CAS01, "autodiscover")] == [("none", USER)]


def test_mobilesync_settings_give_the_activesync_url_of_the_vip(make_farm):
    make_farm(BASE, servers=1, vip_host=VIP)
    response = _discover(CAS01, autodiscover.mobilesync_request(USER))
    assert autodiscover.classify(response.status_code, response.content) == ("ok", "")
    answer = autodiscover.parse(response.content)
    assert answer is not None and answer.mobile_sync_url == f"https://{VIP}/Microsoft-Server-ActiveSync"
    assert answer.hosts() == {VIP}


def test_bad_autodiscover_requests_get_exchanges_error_answer(make_farm):
    make_farm(BASE, servers=1)
    cases = {
        "unknown schema": (autodiscover.outlook_request(USER).replace(b"/outlook/", b"/fax/"), "600"),
        "broken xml": (b"<Autodiscover", "600"),
        "a DTD": (b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>', "600"),
        "wrong response schema": (autodiscover.outlook_request(USER).replace(b"2006a", b"2006b"), "601"),
        "unknown outlook address": (autodiscover.outlook_request("someone@else.test"), "500"),
        "unknown phone address": (autodiscover.mobilesync_request("user0@caslab.test"), "2"),
    }
    for name, (body, code) in cases.items():
        response = _discover(CAS01, body)
        assert response.status_code == 200, name
        answer = autodiscover.parse(response.content)
        assert answer is not None and answer.error_code == code, name
        assert autodiscover.classify(200, response.content) == ("error", f"autodiscover {code}")
    browser = requests.get(CAS01 + autodiscover.PATH, headers=AUTH, timeout=5)  # what a browser sees
    assert autodiscover.parse(browser.content).error_message == "Invalid Request"
    assert {r["state"] for r in ledger(CAS01, "autodiscover")} == {"invalid"}
    unauthenticated = _discover(CAS01, autodiscover.outlook_request(USER), headers={})
    assert (
        unauthenticated.status_code == 401 and "Basic realm=" in unauthenticated.headers["WWW-Authenticate"]
    )


_pox_bodies = st.binary(max_size=400) | st.builds(
    mangle,
    st.sampled_from([autodiscover.outlook_request(USER), autodiscover.mobilesync_request(USER)]),
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 30), st.binary(max_size=10)), max_size=4),
)


def test_random_and_mangled_pox_never_crashes_and_always_leaves_a_ledger_row(make_farm):
    make_farm(BASE, servers=1)
    session = requests.Session()
    sent = 0

    @settings(max_examples=150, deadline=None)
    @given(body=_pox_bodies)
    def check(body: bytes) -> None:
        nonlocal sent
        response = session.post(CAS01 + autodiscover.PATH, data=body, headers=AUTH, timeout=5)
        sent += 1
        assert response.status_code == 200
        assert autodiscover.parse(response.content) is not None, response.text[:200]

    check()
    rows = ledger(CAS01, "autodiscover")
    assert len(rows) == sent and all(r["detail"] != "bug" for r in rows)


@given(st.binary(max_size=300))
def test_the_autodiscover_and_manifest_parsers_never_raise(body):
    assert autodiscover.classify(200, body)[0] in ("ok", "error")
    assert oab.parse_manifest(body) is None or isinstance(oab.parse_manifest(body), list)


# --- OAB -------------------------------------------------------------------------------------------


def _oab_get(server: str, path: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(server + path, headers={**AUTH, **(headers or {})}, timeout=5)


def _manifest(farm, server: str) -> tuple[str, list[oab.OabFile]]:
    base = f"/OAB/{farm['CAS01'].http_services['oab'].guid}/"
    response = _oab_get(server, oab.manifest_path(f"https://{VIP}{base}"))
    assert response.status_code == 200
    files = oab.parse_manifest(response.content)
    assert files is not None
    return base, files


def _download(base: str, file: oab.OabFile, servers: list[str], chunk: int) -> oab.Download:
    """Fetch a file in ranges, taking the servers in turn (as a balancer without affinity would)."""
    download, turn = oab.Download(file, chunk=chunk), 0
    while not download.done:
        response = _oab_get(servers[turn % len(servers)], base + file.name, download.next_headers())
        download.take(response.status_code, response.headers, response.content)
        turn += 1
    return download


def test_oab_files_are_identical_on_every_cas_so_ranges_from_both_verify(make_farm):
    farm = make_farm(BASE, servers=2)
    base, files = _manifest(farm, CAS01)
    assert _manifest(farm, CAS02)[1] == files
    assert {f.kind for f in files} == {"Full", "Template"}
    full = next(f for f in files if f.kind == "Full")
    assert 100_000 < full.size < 1_000_000
    download = _download(base, full, [CAS01, CAS02], chunk=50_000)
    assert download.verified() and download.restarts == 0
    states = {r["state"] for r in ledger(CAS01, "oab") + ledger(CAS02, "oab")}
    assert states == {"none"}


def test_with_oab_skew_a_download_spread_over_two_cas_is_caught(make_farm):
    farm = make_farm(BASE, servers=2, oab_skew=True)
    base, files = _manifest(farm, CAS01)
    other = _manifest(farm, CAS02)[1]
    assert [f.name for f in files] == [f.name for f in other]  # same files, different copies
    assert [f.sha1 for f in files] != [f.sha1 for f in other]
    full = next(f for f in files if f.kind == "Full")
    # A client that sends If-Range gets the whole file from the other CAS, which the ledger marks foreign.
    first = _oab_get(CAS01, base + full.name, {"Range": "bytes=0-999"})
    second = _oab_get(
        CAS02, base + full.name, {"Range": "bytes=1000-1999", "If-Range": first.headers["ETag"]}
    )
    assert second.status_code == 200 and "Content-Range" not in second.headers and len(second.content) > 1000
    assert ledger(CAS02, "oab")[-1]["state"] == "foreign"
    download = oab.Download(full, chunk=1000)
    download.take(first.status_code, first.headers, first.content)
    assert download.take(second.status_code, second.headers, second.content)[0] == "foreign"
    assert not download.verified()  # it now holds CAS02's copy, not the one CAS01's manifest lists
    # A client that ignores If-Range and stitches ranges from both copies fails the manifest's SHA-1.
    stitched = b"".join(
        _oab_get(
            server, base + full.name, {"Range": f"bytes={start}-{min(start + 50_000, full.size) - 1}"}
        ).content
        for start, server in zip(range(0, full.size, 50_000), [CAS01, CAS02] * 10, strict=False)
    )
    assert len(stitched) == full.size and hashlib.sha1(stitched).hexdigest() != full.sha1


def test_oab_range_requests_follow_http(make_farm):
    farm = make_farm(BASE, servers=1)
    base, files = _manifest(farm, CAS01)
    name, size = files[0].name, files[0].size
    whole = _oab_get(CAS01, base + name).content
    suffix = _oab_get(CAS01, base + name, {"Range": "bytes=-100"})
    assert suffix.status_code == 206 and suffix.content == whole[-100:]
    assert suffix.headers["Content-Range"] == f"bytes {size - 100}-{size - 1}/{size}"
    tail = _oab_get(CAS01, base + name, {"Range": f"bytes={size - 10}-"})
    assert tail.status_code == 206 and tail.content == whole[-10:]
    beyond = _oab_get(CAS01, base + name, {"Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"
    several = _oab_get(CAS01, base + name, {"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.content == whole  # a Range it cannot parse is ignored
    matching = _oab_get(CAS01, base + name, {"Range": "bytes=0-9", "If-Range": suffix.headers["ETag"]})
    assert matching.status_code == 206 and matching.content == whole[:10]
    head = requests.head(CAS01 + base + name, headers=AUTH, timeout=5)
    assert head.status_code == 200 and head.content == b"" and head.headers["Accept-Ranges"] == "bytes"
    assert _oab_get(CAS01, f"/OAB/{'0' * 8}-0000-0000-0000-{'0' * 12}/oab.xml").status_code == 404
    assert requests.get(CAS01 + base + name, timeout=5).status_code == 401
    assert requests.post(CAS01 + base + name, headers=AUTH, timeout=5).status_code == 405


def test_oab_files_have_the_lzx_shape_outlook_expects(make_farm):
    farm = make_farm(BASE, servers=1)
    base, files = _manifest(farm, CAS01)
    full = next(f for f in files if f.kind == "Full")
    data = _oab_get(CAS01, base + full.name).content
    assert hashlib.sha1(data).hexdigest() == full.sha1 and len(data) == full.size
    version_hi, version_lo, block_max, target_size = struct.unpack_from("<IIII", data)
    assert (version_hi, version_lo) == (3, 1)  # [MS-OXOAB] LZX header of a full download
    offset, payload = 16, b""
    while offset < len(data):
        flags, compressed, uncompressed, crc = struct.unpack_from("<IIII", data, offset)
        block = data[offset + 16 : offset + 16 + compressed]
        assert flags == 0 and compressed == uncompressed <= block_max and zlib.crc32(block) == crc
        payload += block
        offset += 16 + compressed
    assert len(payload) == target_size
    assert struct.unpack_from("<I", payload)[0] == 0x20  # OAB_HDR of a version 4 Full Details file
