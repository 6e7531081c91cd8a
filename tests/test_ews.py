"""EWS in the mock CAS: pull subscriptions that live on one CAS, the stateless operations, the SOAP faults,
and the client helpers of loadgen.wire.ews that drive them."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime, timedelta

import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from mockcas_helpers import ledger, mangle

from loadgen.wire import ews

BASE = "127.0.12"
CAS01, CAS02 = f"http://{BASE}.11:8080", f"http://{BASE}.12:8080"
USER = "user1@caslab.test"


def _auth(user: str = USER, password: str = "caslab") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _post(session: requests.Session, server: str, body: bytes, user: str = USER) -> requests.Response:
    return session.post(server + ews.PATH, data=body, headers={**ews.HEADERS, **_auth(user)}, timeout=5)


def _subscribe(session: requests.Session, server: str = CAS01, minutes: int = 30) -> ews.EwsAnswer:
    answer = ews.parse(_post(session, server, ews.subscribe(timeout_minutes=minutes)).content)
    assert answer is not None and answer.response_class == "Success"
    return answer


def test_subscribe_answers_id_and_watermark_and_sets_exchangecookie(make_farm):
    make_farm(BASE, servers=1)
    response = _post(requests.Session(), CAS01, ews.subscribe())
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/xml")
    assert re.fullmatch(r"exchangecookie=[0-9a-f]{32}; Path=/", response.headers["Set-Cookie"])
    assert 'Version="Exchange2010_SP1"' in response.text and "t:ServerVersionInfo" in response.text
    answer = ews.parse(response.content)
    assert answer is not None
    assert (answer.operation, answer.response_class, answer.response_code) == (
        "Subscribe",
        "Success",
        "NoError",
    )
    assert answer.subscription_id and answer.watermark
    [row] = ledger(CAS01, "ews")
    assert (row["state"], row["session_key"], row["status"]) == ("new", answer.subscription_id, 200)


def test_exchangecookie_is_set_once_and_keys_stateless_requests(make_farm):
    make_farm(BASE, servers=1)
    session = requests.Session()  # keeps cookies, like the EWS Managed API's CookieContainer
    first = _post(session, CAS01, ews.get_folder())
    second = _post(session, CAS01, ews.get_folder())
    assert "Set-Cookie" in first.headers and "Set-Cookie" not in second.headers
    cookie = session.cookies[ews.EXCHANGE_COOKIE]
    rows = ledger(CAS01, "ews")
    assert [(r["session_key"], r["state"]) for r in rows] == [(USER, "none"), (cookie, "none")]


def test_requests_without_valid_credentials_get_a_basic_challenge(make_farm):
    make_farm(BASE, servers=1)
    for headers in ({}, _auth(password="wrong"), {"Authorization": "Basic !!!"}):
        response = requests.post(CAS01 + ews.PATH, data=ews.get_folder(), headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "Set-Cookie" not in response.headers
    assert len(ledger(CAS01, "ews")) == 3


def test_a_poller_that_stays_on_its_cas_gets_events_and_never_breaks(make_farm):
    make_farm(BASE, servers=2, time_scale=600)  # a made-up mail every 0.2 s; idle expiry 3 s
    session, poller = requests.Session(), ews.PullPoller(timeout_minutes=30)
    deadline = time.monotonic() + 15
    while poller.events_seen < 3:
        assert time.monotonic() < deadline, "no events reached the poller"
        response = _post(session, CAS01, poller.next_body())
        assert ews.classify(response.status_code, response.content) == ("ok", "")
        poller.update(ews.parse(response.content))
        time.sleep(0.05)  # the poll interval
    assert poller.subscriptions_lost == 0
    states = [r["state"] for r in ledger(CAS01, "ews")]
    assert states[0] == "new" and set(states[1:]) == {"own"} and len(states) >= 2
    assert ledger(CAS02, "ews") == []


def test_events_are_kept_until_a_watermark_acknowledges_them(make_farm):
    make_farm(BASE, servers=1, time_scale=600)
    session = requests.Session()
    sub = _subscribe(session)
    deadline, answer = time.monotonic() + 15, None
    while answer is None or "NewMailEvent" not in answer.events:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        answer = ews.parse(_post(session, CAS01, ews.get_events(sub.subscription_id, sub.watermark)).content)
    # The same old watermark again: the events are still there (not acknowledged).
    again_response = _post(session, CAS01, ews.get_events(sub.subscription_id, sub.watermark))
    again = ews.parse(again_response.content)
    assert again is not None and again.events[: len(answer.events)] == answer.events
    # Acknowledged by the newest watermark: they are not sent again (new mail may have come meanwhile).
    after_response = _post(session, CAS01, ews.get_events(sub.subscription_id, again.watermark))
    after = ews.parse(after_response.content)
    assert after is not None and after.response_class == "Success"
    items = [set(re.findall(r'<t:ItemId Id="([^"]+)"', r.text)) for r in (again_response, after_response)]
    assert items[0] and not items[0] & items[1]


def test_get_events_on_another_cas_is_subscription_not_found_and_foreign(make_farm):
    make_farm(BASE, servers=2)
    session = requests.Session()
    sub = _subscribe(session, CAS01)
    response = _post(session, CAS02, ews.get_events(sub.subscription_id, sub.watermark))
    assert response.status_code == 200  # an error response message, not a fault, as Exchange answers
    answer = ews.parse(response.content)
    assert answer is not None
    assert (answer.operation, answer.response_class, answer.response_code) == (
        "GetEvents",
        "Error",
        "ErrorSubscriptionNotFound",
    )
    assert "The specified subscription was not found." in response.text
    assert ews.classify(response.status_code, response.content) == ("foreign", "ErrorSubscriptionNotFound")
    unsubscribe = _post(session, CAS02, ews.unsubscribe(sub.subscription_id))
    assert ews.parse(unsubscribe.content).response_code == "ErrorSubscriptionNotFound"
    rows = ledger(CAS02, "ews")
    assert [(r["state"], r["session_key"]) for r in rows] == [("foreign", sub.subscription_id)] * 2
    assert "cas01.caslab.test" in rows[0]["detail"]
    # The subscription is untouched on its own CAS.
    back = ews.parse(_post(session, CAS01, ews.get_events(sub.subscription_id, sub.watermark)).content)
    assert back is not None and back.response_class == "Success"


def test_a_poller_moved_to_another_cas_loses_its_subscription_and_subscribes_again(make_farm):
    make_farm(BASE, servers=2)
    session, poller = requests.Session(), ews.PullPoller()
    poller.update(ews.parse(_post(session, CAS01, poller.next_body()).content))
    poller.update(ews.parse(_post(session, CAS02, poller.next_body()).content))
    assert poller.subscriptions_lost == 1 and poller.subscription_id == ""
    assert b"<m:Subscribe>" in poller.next_body()


def test_subscription_expires_after_its_timeout_in_lab_time(make_farm):
    farm = make_farm(BASE, servers=1, time_scale=6000)  # Timeout 1 minute = 10 ms
    session = requests.Session()
    first, second = _subscribe(session, minutes=1), _subscribe(session, minutes=1)
    time.sleep(0.2)  # idle well past the scaled timeout: the behaviour under test is the idle time
    answer = ews.parse(_post(session, CAS01, ews.get_events(first.subscription_id, first.watermark)).content)
    assert answer is not None and answer.response_code == "ErrorSubscriptionNotFound"
    assert ledger(CAS01, "ews")[-1]["state"] == "expired"
    # Expired subscriptions are dropped from memory, not only refused.
    assert second.subscription_id not in farm["CAS01"].http_services["ews"].subscriptions


def test_unsubscribe_ends_the_subscription_without_a_foreign_row(make_farm):
    make_farm(BASE, servers=1)
    session = requests.Session()
    sub = _subscribe(session)
    assert (
        ews.parse(_post(session, CAS01, ews.unsubscribe(sub.subscription_id)).content).response_class
        == "Success"
    )
    late = ews.parse(_post(session, CAS01, ews.get_events(sub.subscription_id, sub.watermark)).content)
    assert late is not None and late.response_code == "ErrorSubscriptionNotFound"
    assert [r["state"] for r in ledger(CAS01, "ews")] == ["new", "own", "invalid"]


def test_a_subscription_is_usable_only_by_its_owner_with_its_own_watermark(make_farm):
    make_farm(BASE, servers=1)
    session = requests.Session()
    mine, other = _subscribe(session), _subscribe(session)
    stolen = _post(
        session, CAS01, ews.get_events(mine.subscription_id, mine.watermark), user="user2@caslab.test"
    )
    assert ews.parse(stolen.content).response_code == "ErrorSubscriptionAccessDenied"
    mixed = _post(session, CAS01, ews.get_events(mine.subscription_id, other.watermark))
    assert ews.parse(mixed.content).response_code == "ErrorInvalidWatermark"
    assert [r["state"] for r in ledger(CAS01, "ews")][-2:] == ["invalid", "invalid"]


def test_stateless_operations_answer_alike_on_every_cas(make_farm):
    make_farm(BASE, servers=2)
    session = requests.Session()
    folders = [_post(session, cas, ews.get_folder(["inbox", "calendar"])) for cas in (CAS01, CAS02)]
    assert folders[0].content.count(b'ResponseClass="Success"') == 2
    assert re.sub(rb"CAS0\d", b"", folders[0].content) == re.sub(rb"CAS0\d", b"", folders[1].content)
    page = _post(session, CAS01, ews.find_item("inbox", max_entries=5))
    answer = ews.parse(page.content)
    assert answer is not None and answer.response_class == "Success"
    assert page.text.count("<t:Message>") == 5 and 'IndexedPagingOffset="5"' in page.text
    ids = [
        re.findall(r'ItemId Id="([^"]+)"', _post(session, cas, ews.find_item()).text)
        for cas in (CAS01, CAS02)
    ]
    assert ids[0] == ids[1] and len(ids[0]) > 0
    start = datetime(2026, 11, 30, tzinfo=UTC)
    free_busy = _post(
        session,
        CAS02,
        ews.get_user_availability(
            ["user2@caslab.test", "nobody@else.test"], start, start + timedelta(days=5)
        ),
    )
    assert free_busy.status_code == 200
    assert "<t:CalendarEventArray>" in free_busy.text and "ErrorMailRecipientNotFound" in free_busy.text
    assert {r["state"] for r in ledger(CAS01, "ews") + ledger(CAS02, "ews")} == {"none"}


_MALFORMED = {
    "not xml": b"this is not xml",
    "truncated": ews.subscribe()[:120],
    "a DTD with entities": b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>',
    "an external entity": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>&xxe;</soap:Body>'
    b"</soap:Envelope>",
    "a SOAP 1.2 envelope": ews.get_folder().replace(
        ews.NS_SOAP.encode(), b"http://www.w3.org/2003/05/soap-envelope"
    ),
    "no body": b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"/>',
    "timeout out of range": ews.subscribe(timeout_minutes=1441),
    "unknown folder": ews.get_folder(["attic"]),
    "a time that is before year 1 in UTC": ews.get_user_availability(
        [USER], datetime(2026, 1, 1), datetime(2026, 1, 2)
    ).replace(b"2026-01-01T00:00:00<", b"0001-01-01T00:00:00+01:00<"),
}


def test_malformed_requests_get_the_soap_fault_exchange_sends(make_farm):
    make_farm(BASE, servers=1)
    session = requests.Session()
    for name, body in _MALFORMED.items():
        response = _post(session, CAS01, body)
        assert response.status_code == 500, name
        answer = ews.parse(response.content)
        assert answer is not None and answer.fault and answer.response_code == "ErrorSchemaValidation", name
        assert "passwd" not in response.text and "lollol" not in response.text
    unknown = _post(session, CAS01, ews.envelope("<m:DeleteItem/>"))
    assert (unknown.status_code, ews.parse(unknown.content).response_code) == (500, "ErrorInvalidRequest")
    version = _post(session, CAS01, ews.envelope("<m:GetFolder/>", version="Exchange2013"))
    assert ews.parse(version.content).response_code == "ErrorInvalidServerVersion"
    rows = ledger(CAS01, "ews")
    assert len(rows) == len(_MALFORMED) + 2 and {r["state"] for r in rows} == {"invalid"}
    assert ews.classify(500, unknown.content) == ("error", "ErrorInvalidRequest")


_VALID_BODIES = [
    ews.subscribe(),
    ews.get_events("EWNhczAxLmNhc2xhYi50ZXN0EAAAAHnVGZXJDgID7tXf1Y93/CY=", "AQAAAHnVGZXJDgIDAAAAAAAAAAA="),
    ews.unsubscribe("x"),
    ews.get_folder(["inbox", "contacts"]),
    ews.find_item("calendar", 3, 2),
    ews.get_user_availability([USER], datetime(2026, 1, 1), datetime(2026, 1, 3), view="DetailedMerged"),
]
_bodies = st.binary(max_size=600) | st.builds(
    mangle,
    st.sampled_from(_VALID_BODIES),
    st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 40), st.binary(max_size=12)), max_size=4),
)


def test_random_and_mangled_bodies_never_crash_and_always_leave_a_ledger_row(make_farm):
    make_farm(BASE, servers=1, time_scale=600)
    session = requests.Session()
    sent = 0

    @settings(max_examples=150, deadline=None)
    @given(body=_bodies)
    def check(body: bytes) -> None:
        nonlocal sent
        response = _post(session, CAS01, body)
        sent += 1
        assert response.status_code in (200, 500)
        answer = ews.parse(response.content)
        assert answer is not None, response.text[:200]  # an EWS answer or fault, never a bare 500
        assert answer.fault == (response.status_code == 500)
        assert "Traceback" not in response.text

    check()
    rows = ledger(CAS01, "ews")
    assert len(rows) == sent
    assert all(r["detail"] != "bug" for r in rows)


@given(st.binary(max_size=300))
def test_the_client_parser_never_raises(body):
    assert ews.parse(body) is None or isinstance(ews.parse(body), ews.EwsAnswer)
    assert ews.classify(200, body)[0] in ("ok", "foreign", "error")


def test_get_folder_answers_the_additional_properties_asked_for(make_farm):
    make_farm(BASE, servers=1)
    body = ews.get_folder(["inbox", "calendar"], shape="IdOnly").replace(
        b"</t:BaseShape>",
        b'</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI="folder:DisplayName"/>'
        b'<t:FieldURI FieldURI="folder:UnreadCount"/><t:FieldURI FieldURI="folder:FolderClass"/>'
        b"</t:AdditionalProperties>",
    )
    answer = _post(requests.Session(), CAS01, body).text
    assert "<t:DisplayName>Inbox</t:DisplayName>" in answer and "<t:FolderClass>IPF.Note<" in answer
    assert "<t:DisplayName>Calendar</t:DisplayName>" in answer and "IPF.Appointment" in answer
    assert answer.count("<t:UnreadCount>") == 1, "a calendar folder has no unread count"
    assert "<t:TotalCount>" not in answer, "only what IdOnly and the additional properties name"


def test_convert_id_converts_mailbox_ids_and_refuses_others_with_server_version_info(make_farm):
    make_farm(BASE, servers=1)
    session = requests.Session()
    inbox_id = re.search(r'FolderId Id="([^"]+)"', _post(session, CAS01, ews.get_folder()).text).group(1)
    ids = (
        f'<t:AlternateId Format="EwsId" Id="{inbox_id}" Mailbox="{USER}"/>'
        '<t:AlternateId Format="EwsId" Id="DUMMY" Mailbox="DUMMY"/>'
    )
    body = ews.envelope(
        f'<m:ConvertId DestinationFormat="HexEntryId"><m:SourceIds>{ids}</m:SourceIds></m:ConvertId>'
    )
    answer = _post(session, CAS01, body)
    assert answer.status_code == 200 and "ServerVersionInfo" in answer.text
    hex_id = base64.b64decode(inbox_id).hex().upper()
    assert f'Format="HexEntryId" Id="{hex_id}"' in answer.text
    assert answer.text.count('ResponseClass="Success"') == 1 and "ErrorInvalidIdMalformed" in answer.text
