"""EWS as a client speaks it: pure helpers (no I/O) for the ews-app and Outlook client kinds.

A mail application polling a pull subscription on Exchange 2010 (every request: `POST PATH` with
`HEADERS` and Basic `Authorization`):
1. `subscribe(...)` -> SubscriptionId + Watermark; the server's first answer sets `exchangecookie`, which a
   client that keeps cookies sends back (balancers may persist on it);
2. `get_events(id, watermark)` every poll -> the events since the watermark and a new watermark;
3. `unsubscribe(id)` at the end. `PullPoller` keeps the id and watermark between these calls, and starts
   a new subscription when the old one is gone (Microsoft's advice: never resume with the old watermark).
Stateless calls: `get_folder`, `find_item`, `get_user_availability`.
`parse()` reads any EWS answer (response messages or a SOAP fault); `classify()` says ok, foreign
(ErrorSubscriptionNotFound: the poll reached a CAS that does not hold the subscription) or error;
`read()` is both at once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

PATH = "/EWS/Exchange.asmx"
HEADERS = {"Content-Type": "text/xml; charset=utf-8", "Accept": "text/xml"}
EXCHANGE_COOKIE = "exchangecookie"
REQUEST_VERSION = "Exchange2010_SP1"

NS_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS_M = "http://schemas.microsoft.com/exchange/services/2006/messages"
NS_T = "http://schemas.microsoft.com/exchange/services/2006/types"
NS_E = "http://schemas.microsoft.com/exchange/services/2006/errors"
SUBSCRIPTION_NOT_FOUND = "ErrorSubscriptionNotFound"
EVENT_KINDS = (
    "CopiedEvent",
    "CreatedEvent",
    "DeletedEvent",
    "ModifiedEvent",
    "MovedEvent",
    "NewMailEvent",
    "FreeBusyChangedEvent",
    "StatusEvent",
)


# --- request bodies ------------------------------------------------------------------------------


def envelope(operation_xml: str, version: str = REQUEST_VERSION) -> bytes:
    """A SOAP 1.1 request around one operation element (written with the m: and t: prefixes)."""
    return b"".join((_envelope_head(version), operation_xml.encode(), _ENVELOPE_TAIL))


@functools.cache
def _envelope_head(version: str) -> bytes:
    """Everything before the operation, encoded once per version: a poller sends it with every GetEvents."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{NS_SOAP}" xmlns:m="{NS_M}" xmlns:t="{NS_T}">'
        f"<soap:Header><t:RequestServerVersion Version={quoteattr(version)}/></soap:Header><soap:Body>"
    ).encode()


_ENVELOPE_TAIL = b"</soap:Body></soap:Envelope>"


def _folder_ids(folders: Iterable[str]) -> str:
    return "".join(f"<t:DistinguishedFolderId Id={quoteattr(f)}/>" for f in folders)


def subscribe(
    folders: Iterable[str] = ("inbox",),
    event_types: Iterable[str] = ("NewMailEvent", "CreatedEvent", "ModifiedEvent"),
    timeout_minutes: int = 30,
) -> bytes:
    """A pull subscription that expires after `timeout_minutes` (1-1440) without a GetEvents."""
    kinds = "".join(f"<t:EventType>{escape(k)}</t:EventType>" for k in event_types)
    return envelope(
        f"<m:Subscribe><m:PullSubscriptionRequest><t:FolderIds>{_folder_ids(folders)}</t:FolderIds>"
        f"<t:EventTypes>{kinds}</t:EventTypes><t:Timeout>{timeout_minutes}</t:Timeout>"
        "</m:PullSubscriptionRequest></m:Subscribe>"
    )


def get_events(subscription_id: str, watermark: str) -> bytes:
    return envelope(
        f"<m:GetEvents><m:SubscriptionId>{escape(subscription_id)}</m:SubscriptionId>"
        f"<m:Watermark>{escape(watermark)}</m:Watermark></m:GetEvents>"
    )


def unsubscribe(subscription_id: str) -> bytes:
    return envelope(
        f"<m:Unsubscribe><m:SubscriptionId>{escape(subscription_id)}</m:SubscriptionId></m:Unsubscribe>"
    )


def get_folder(folders: Iterable[str] = ("inbox",), shape: str = "Default") -> bytes:
    return envelope(
        f"<m:GetFolder><m:FolderShape><t:BaseShape>{escape(shape)}</t:BaseShape></m:FolderShape>"
        f"<m:FolderIds>{_folder_ids(folders)}</m:FolderIds></m:GetFolder>"
    )


def find_item(folder: str = "inbox", max_entries: int = 20, offset: int = 0, shape: str = "Default") -> bytes:
    """One page of a folder's items, newest first (IndexedPageItemView from the beginning)."""
    return envelope(
        f'<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>{escape(shape)}</t:BaseShape>'
        f'</m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="{max_entries}" Offset="{offset}" '
        f'BasePoint="Beginning"/><m:ParentFolderIds>{_folder_ids([folder])}</m:ParentFolderIds></m:FindItem>'
    )


def get_user_availability(
    addresses: Iterable[str],
    start: datetime,
    end: datetime,
    view: str = "FreeBusy",
    interval_minutes: int = 30,
) -> bytes:
    """Free/busy of some mailboxes between two UTC times (what a meeting planner asks)."""
    mailboxes = "".join(
        f"<t:MailboxData><t:Email><t:Address>{escape(a)}</t:Address></t:Email>"
        "<t:AttendeeType>Required</t:AttendeeType><t:ExcludeConflicts>false</t:ExcludeConflicts></t:MailboxData>"
        for a in addresses
    )
    return envelope(
        "<m:GetUserAvailabilityRequest><t:TimeZone><t:Bias>0</t:Bias>"
        "<t:StandardTime><t:Bias>0</t:Bias><t:Time>02:00:00</t:Time><t:DayOrder>5</t:DayOrder>"
        "<t:Month>10</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek></t:StandardTime>"
        "<t:DaylightTime><t:Bias>0</t:Bias><t:Time>02:00:00</t:Time><t:DayOrder>1</t:DayOrder>"
        "<t:Month>4</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek></t:DaylightTime></t:TimeZone>"
        f"<m:MailboxDataArray>{mailboxes}</m:MailboxDataArray>"
        "<t:FreeBusyViewOptions><t:TimeWindow>"
        f"<t:StartTime>{start.strftime('%Y-%m-%dT%H:%M:%S')}</t:StartTime>"
        f"<t:EndTime>{end.strftime('%Y-%m-%dT%H:%M:%S')}</t:EndTime></t:TimeWindow>"
        f"<t:MergedFreeBusyIntervalInMinutes>{interval_minutes}</t:MergedFreeBusyIntervalInMinutes>"
        f"<t:RequestedView>{escape(view)}</t:RequestedView></t:FreeBusyViewOptions>"
        "</m:GetUserAvailabilityRequest>"
    )


# --- answers -------------------------------------------------------------------------------------


class EwsAnswer(NamedTuple):
    """What a client needs from one EWS answer (a tuple: one is made for every answer a client gets)."""

    operation: str  # from the XxxResponse element, e.g. "GetEvents"; "" for a fault
    response_class: str  # the worst of the response messages: Success, Warning or Error; "Error" for a fault
    response_code: str  # NoError, the first error's code, or the fault's code
    fault: bool = False
    subscription_id: str = ""
    watermark: str = ""  # Subscribe's, or the newest event's in a GetEvents notification
    events: tuple[str, ...] = ()  # event kinds in a notification, e.g. ("NewMailEvent", "StatusEvent")
    more_events: bool = False
    messages: int = 0  # response messages (one per folder, mailbox...)


def _parse_xml(body: bytes) -> ET.Element | None:
    try:
        return ET.fromstring(body)
    except (ET.ParseError, LookupError, ValueError):
        return None


# Qualified names, built once: parse() runs on every answer a client gets, and a poller's whole cost is
# mostly this function (it walks the tree by direct children, which ElementTree does in C, and uses
# its Python path search only for shapes that are not the usual ResponseMessages list).
_ENVELOPE = f"{{{NS_SOAP}}}Envelope"
_BODY = f"{{{NS_SOAP}}}Body"
_FAULT = f"{{{NS_SOAP}}}Fault"
_RESPONSE_MESSAGES = f"{{{NS_M}}}ResponseMessages"
_RESPONSE_CODE = f"{{{NS_M}}}ResponseCode"
_NOTIFICATION = f"{{{NS_M}}}Notification"
_M_SUBSCRIPTION_ID = f"{{{NS_M}}}SubscriptionId"
_M_WATERMARK = f"{{{NS_M}}}Watermark"
_T_SUBSCRIPTION_ID = f"{{{NS_T}}}SubscriptionId"
_T_WATERMARK = f"{{{NS_T}}}Watermark"
_T_MORE_EVENTS = f"{{{NS_T}}}MoreEvents"
_EVENT_TAGS = {f"{{{NS_T}}}{kind}": kind for kind in EVENT_KINDS}
_CLASS_RANK = {"Error": 0, "Warning": 1}


def parse(body: bytes) -> EwsAnswer | None:
    """Read an EWS answer; None when the body is not one (an HTML error page, garbage, nothing)."""
    root = _parse_xml(body)
    if root is None or root.tag != _ENVELOPE:
        return None
    soap_body = root.find(_BODY)
    if soap_body is None or len(soap_body) == 0:
        return None
    fault = soap_body.find(_FAULT)
    if fault is not None:
        code = (fault.findtext(f"detail/{{{NS_E}}}ResponseCode") or fault.findtext("faultcode") or "").strip()
        return EwsAnswer("", "Error", code.rpartition(":")[2], fault=True)
    response = soap_body[0]
    operation = response.tag.rpartition("}")[2].removesuffix("Response")
    listed = response.find(_RESPONSE_MESSAGES)
    # Most operations list their messages under ResponseMessages; others nest them deeper (free/busy).
    candidates = listed if listed is not None else response.iter()
    messages = [m for m in candidates if m.get("ResponseClass")]
    if not messages:
        return None
    first = min(messages, key=lambda m: _CLASS_RANK.get(m.get("ResponseClass", ""), 2))  # first of the worst
    subscription_id, watermark, events, more = "", "", [], False
    notification = next((n for m in messages if (n := m.find(_NOTIFICATION)) is not None), None)
    if notification is not None:
        subscription_id = (notification.findtext(_T_SUBSCRIPTION_ID) or "").strip()
        more = (notification.findtext(_T_MORE_EVENTS) or "").strip() == "true"
        for event in notification:
            kind = _EVENT_TAGS.get(event.tag)
            if kind is not None:
                events.append(kind)
                watermark = (event.findtext(_T_WATERMARK) or watermark).strip()
    else:
        subscription_id = (first.findtext(_M_SUBSCRIPTION_ID) or "").strip()
        watermark = (first.findtext(_M_WATERMARK) or "").strip()
    return EwsAnswer(
        operation=operation,
        response_class=first.get("ResponseClass", ""),
        response_code=(first.findtext(_RESPONSE_CODE) or "").strip(),
        subscription_id=subscription_id,
        watermark=watermark,
        events=tuple(events),
        more_events=more,
        messages=len(messages),
    )


def classify(status: int, body: bytes) -> tuple[str, str]:
    """(outcome, detail) of one EWS answer: ok, foreign (the subscription is not on the CAS that
    answered) or error (HTTP error, SOAP fault, an error response message, or not EWS at all)."""
    outcome, detail, _answer = read(status, body)
    return outcome, detail


def read(status: int, body: bytes) -> tuple[str, str, EwsAnswer | None]:
    """`classify` and the parsed answer together, for a client that needs both (parsing is most of
    what a client spends on an EWS answer: do it once)."""
    answer = parse(body) if status in (200, 500) else None
    if answer is None:
        return "error", f"http {status}" if status != 200 else "not an EWS answer", None
    if answer.response_code == SUBSCRIPTION_NOT_FOUND:
        return "foreign", SUBSCRIPTION_NOT_FOUND, answer
    if answer.fault or answer.response_class == "Error":
        return "error", answer.response_code or "error", answer
    return "ok", "", answer


@dataclass
class PullPoller:
    """One pull subscription as a client keeps it: call `next_body()`, send it, give the answer to
    `update()`. Without a live subscription the next body is a Subscribe, else a GetEvents."""

    folders: tuple[str, ...] = ("inbox",)
    event_types: tuple[str, ...] = ("NewMailEvent", "CreatedEvent", "ModifiedEvent")
    timeout_minutes: int = 30
    subscription_id: str = ""
    watermark: str = ""
    events_seen: int = 0  # real events (not StatusEvents) received so far
    subscriptions_lost: int = 0  # ErrorSubscriptionNotFound answers (each forces a new Subscribe)

    def next_body(self) -> bytes:
        if not self.subscription_id:
            return subscribe(self.folders, self.event_types, self.timeout_minutes)
        return get_events(self.subscription_id, self.watermark)

    def update(self, answer: EwsAnswer | None) -> None:
        if answer is None:
            return  # nothing learned: the same request is made again
        if answer.operation == "Subscribe" and answer.response_class == "Success":
            self.subscription_id, self.watermark = answer.subscription_id, answer.watermark
        elif answer.operation == "GetEvents" and answer.response_class == "Success":
            self.watermark = answer.watermark or self.watermark
            self.events_seen += sum(1 for kind in answer.events if kind != "StatusEvent")
        elif answer.operation == "GetEvents":
            # Any error on a poll (not found, invalid watermark...) ends this subscription for the client.
            self.subscriptions_lost += answer.response_code == SUBSCRIPTION_NOT_FOUND
            self.subscription_id, self.watermark = "", ""
