"""EWS of the mock CAS: SOAP 1.1 at `POST /EWS/Exchange.asmx`, answering as Exchange 2010 SP1.

Why the lab needs it: in Exchange 2010 a pull subscription and its event queue live on the CAS that took
the Subscribe. A GetEvents that the balancer sends to another CAS is answered `ErrorSubscriptionNotFound`
(HTTP 200 with ResponseClass="Error", as Exchange does) - the hard break this lab looks for. Microsoft's
advice is to persist EWS on the `exchangecookie` the server sets, or on a balancer cookie.

What is served:
- `Subscribe` (pull only) -> SubscriptionId + Watermark, kept in this service (so on this CAS alone);
  idle expiry after the subscription's Timeout (1-1440 minutes, time-scaled), reset by each GetEvents;
- `GetEvents` -> the events after the client's watermark (a NewMailEvent is made up every
  NEW_MAIL_EVERY_S so a poller sees traffic) or a StatusEvent; `Unsubscribe`;
- stateless `GetFolder`, `FindItem`, `GetUserAvailabilityRequest` with plausible, deterministic answers;
- `GET` gets the service's page, as browsing to Exchange.asmx does.
Malformed XML, a DTD, a wrong envelope or a schema violation -> HTTP 500 with a `soap:Fault`
(`ErrorSchemaValidation`); an operation not served here -> fault `ErrorInvalidRequest`. Every answer
notes its ledger state; nothing raises.

Ledger session key: the subscription id for subscription operations, else the client's exchangecookie,
else the user.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from caslab.untrusted_xml import XmlRejected, parse_untrusted_xml
from mockcas import iis
from mockcas.services import HttpService, RequestContext, register

if TYPE_CHECKING:
    from mockcas.cas import Cas

NS_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS_M = "http://schemas.microsoft.com/exchange/services/2006/messages"
NS_T = "http://schemas.microsoft.com/exchange/services/2006/types"
NS_E = "http://schemas.microsoft.com/exchange/services/2006/errors"

EWS_PATH = "/ews/exchange.asmx"
EXCHANGE_COOKIE = "exchangecookie"
# Exchange 2010 SP1 RTM is build 14.01.0218.015.
SERVER_VERSION_INFO = (
    f'<t:ServerVersionInfo xmlns:t="{NS_T}" MajorVersion="14" MinorVersion="1" '
    'MajorBuildNumber="218" MinorBuildNumber="15" Version="Exchange2010_SP1"/>'
)
# RequestServerVersion values an Exchange 2010 SP1 server accepts.
REQUEST_VERSIONS = frozenset({"Exchange2007", "Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1"})
EVENT_TYPES = (
    "CopiedEvent",
    "CreatedEvent",
    "DeletedEvent",
    "ModifiedEvent",
    "MovedEvent",
    "NewMailEvent",
    "FreeBusyChangedEvent",
)
NEW_MAIL_EVERY_S = 120.0  # a made-up mail arrives this often per subscription, in Exchange time (assumed)
MAX_EVENTS_PER_NOTIFICATION = 50  # the rest waits for the next GetEvents (MoreEvents=true)
MAX_QUEUED_EVENTS = 500  # a subscription nobody drains stops collecting made-up mail here
ENDED_REMEMBERED = 100_000  # ids of expired/unsubscribed subscriptions kept to tell them from foreign ones
MAX_AVAILABILITY_DAYS = 42  # Exchange's limit on a free/busy time window
SESSION_KEY_CHARS = 128  # client-chosen ids are cut to this in the ledger

# DistinguishedFolderId values served, with the display name and the folder element EWS answers with.
FOLDERS: dict[str, tuple[str, str]] = {
    "root": ("", "Folder"),
    "msgfolderroot": ("Top of Information Store", "Folder"),
    "inbox": ("Inbox", "Folder"),
    "drafts": ("Drafts", "Folder"),
    "sentitems": ("Sent Items", "Folder"),
    "deleteditems": ("Deleted Items", "Folder"),
    "outbox": ("Outbox", "Folder"),
    "junkemail": ("Junk E-Mail", "Folder"),
    "calendar": ("Calendar", "CalendarFolder"),
    "contacts": ("Contacts", "ContactsFolder"),
    "tasks": ("Tasks", "TasksFolder"),
    "notes": ("Notes", "Folder"),
    "journal": ("Journal", "Folder"),
    "searchfolders": ("Finder", "SearchFolder"),
}
_SUBJECTS = (
    "Quarterly review",
    "Lunch on Friday?",
    "Re: load balancer change window",
    "Build failed",
    "Minutes of the team meeting",
    "Your expense report",
    "Re: Re: CAS array names",
    "Welcome aboard",
)
SERVICE_PAGE = (
    "<html><head><title>Service</title></head><body><h1>Service</h1>"
    "<p>You have created a service.</p></body></html>"
)


# ---------------------------------------------------------------------------------------------------
# Parsing the SOAP request.


class _Fault(Exception):
    """A request Exchange answers with a SOAP fault (HTTP 500) instead of a response message."""

    def __init__(self, code: str, text: str, position: tuple[int, int] = (0, 0)) -> None:
        super().__init__(text)
        self.code, self.text, self.position = code, text, position

    def xml(self) -> bytes:
        line, col = self.position
        where = (
            f"<t:MessageXml xmlns:t={quoteattr(NS_T)}><t:LineNumber>{line}</t:LineNumber>"
            f"<t:LinePosition>{col}</t:LinePosition></t:MessageXml>"
            if line
            else ""
        )
        return (
            '<?xml version="1.0" encoding="utf-8"?>'
            f"<s:Envelope xmlns:s={quoteattr(NS_SOAP)}><s:Body><s:Fault>"
            f"<faultcode xmlns:a={quoteattr(NS_T)}>a:{self.code}</faultcode>"
            f'<faultstring xml:lang="en-US">{escape(self.text)}</faultstring>'
            f"<detail><e:ResponseCode xmlns:e={quoteattr(NS_E)}>{self.code}</e:ResponseCode>"
            f"<e:Message xmlns:e={quoteattr(NS_E)}>{escape(self.text)}</e:Message>{where}</detail>"
            "</s:Fault></s:Body></s:Envelope>"
        ).encode()


def _schema_fault(problem: str, position: tuple[int, int] = (0, 0)) -> _Fault:
    return _Fault("ErrorSchemaValidation", f"The request failed schema validation: {problem}", position)


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(parent: ET.Element, ns: str, name: str) -> ET.Element:
    element = parent.find(_q(ns, name))
    if element is None:
        raise _schema_fault(f"The element '{_local(parent.tag)}' has incomplete content: '{name}' expected.")
    return element


def _text(parent: ET.Element, ns: str, name: str) -> str:
    text = (_child(parent, ns, name).text or "").strip()
    if not text:
        raise _schema_fault(f"The element '{name}' is empty.")
    return text


def _int_in(value: str | None, name: str, low: int, high: int) -> int:
    try:
        number = int((value or "").strip())
    except ValueError:
        raise _schema_fault(f"The value of '{name}' is not a valid integer.") from None
    if not low <= number <= high:
        raise _schema_fault(f"The value of '{name}' must be between {low} and {high}.")
    return number


def _datetime(value: str, name: str) -> datetime:
    """An xs:dateTime; one without an offset is taken as UTC (the mock ignores the request's TimeZone)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: in UTC it falls outside years 1..9999
        raise _schema_fault(f"The value of '{name}' is not a valid xs:dateTime.") from None


def _operation(body: bytes) -> ET.Element:
    """The one element inside soap:Body, after checking the envelope and the requested version."""
    try:
        root = parse_untrusted_xml(body)
    except XmlRejected as err:
        raise _schema_fault(str(err), err.position) from None
    if root.tag != _q(NS_SOAP, "Envelope"):
        raise _schema_fault(f"The root element '{_local(root.tag)}' is not a SOAP 1.1 Envelope.")
    header = root.find(_q(NS_SOAP, "Header"))
    version = header.find(_q(NS_T, "RequestServerVersion")) if header is not None else None
    if version is not None and version.get("Version") not in REQUEST_VERSIONS:
        raise _Fault("ErrorInvalidServerVersion", "The specified server version is invalid.")
    soap_body = root.find(_q(NS_SOAP, "Body"))
    if soap_body is None or len(soap_body) != 1:
        raise _schema_fault("The SOAP Body must hold exactly one operation element.")
    return soap_body[0]


# ---------------------------------------------------------------------------------------------------
# Ids: opaque base64 blobs shaped like Exchange's, so they can be told apart from garbage.


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _digest(*parts: str, size: int = 16) -> bytes:
    return hashlib.sha1("\x00".join(parts).encode()).digest()[:size]


def subscription_origin(subscription_id: str) -> str | None:
    """The server FQDN an id names (Exchange 2010 ids carry the CAS's name), or None for garbage."""
    raw = _unb64(subscription_id)
    if not raw or len(raw) != 1 + raw[0] + 20:
        return None
    try:
        return raw[1 : 1 + raw[0]].decode("ascii")
    except UnicodeDecodeError:
        return None


_FOLDER_ID_PREFIX = b"\x00\x03\x24\x00"  # EWS store ids start 'AAMkA'


def folder_id(user: str, folder: str) -> str:
    return _b64(_FOLDER_ID_PREFIX + _digest(user) + folder.encode())


def _folder_from_id(user: str, text: str) -> tuple[str | None, str]:
    """(folder name, '') for an id of this user's folder, else (None, the EWS error code)."""
    raw = _unb64(text) or b""
    if not raw.startswith(_FOLDER_ID_PREFIX) or len(raw) < 21:
        return None, "ErrorInvalidIdMalformed"
    if raw[4:20] != _digest(user):
        return None, "ErrorAccessDenied"
    name = raw[20:].decode("ascii", "replace")
    return (name, "") if name in FOLDERS else (None, "ErrorFolderNotFound")


def _change_key(*parts: str) -> str:
    return _b64(b"\x01\x00\x00\x00\x16\x00\x00\x00" + _digest(*parts, size=12))


def _item_id(user: str, folder: str, index: int) -> str:
    return _b64(b"\x00\x00\x00\x00" + _digest(user, folder) + index.to_bytes(4, "little"))


def _xs_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------------
# Pull subscriptions.


@dataclass
class Event:
    seq: int
    kind: str
    timestamp: str
    item_id: str
    folder: str


@dataclass
class Subscription:
    id: str
    key: bytes  # 16 random bytes; the first 8 also go into every watermark of this subscription
    user: str
    event_types: frozenset[str]
    folders: tuple[str, ...]
    idle_s: float  # lab time without a GetEvents after which it expires
    last_used: float  # time.monotonic()
    next_mail: float  # when the next made-up NewMailEvent is due (monotonic)
    seq: int = 0  # sequence number of the newest event made
    queue: list[Event] = field(default_factory=list)  # events not yet acknowledged by a watermark

    def watermark(self, seq: int) -> str:
        return _b64(b"\x01\x00\x00\x00" + self.key[:8] + seq.to_bytes(8, "little"))

    def watermark_seq(self, watermark: str) -> int | None:
        """The event sequence a watermark of this subscription stands for; None if it is not one."""
        raw = _unb64(watermark)
        if not raw or len(raw) != 20 or raw[:12] != b"\x01\x00\x00\x00" + self.key[:8]:
            return None
        seq = int.from_bytes(raw[12:], "little")
        return seq if seq <= self.seq else None


# ---------------------------------------------------------------------------------------------------
# Building responses.


def _envelope(body_xml: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP}"><s:Header>{SERVER_VERSION_INFO}</s:Header>'
        f'<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xmlns:xsd="http://www.w3.org/2001/XMLSchema">{body_xml}</s:Body></s:Envelope>'
    ).encode()


def _response(operation: str, messages: Iterable[str]) -> str:
    return (
        f'<m:{operation}Response xmlns:m="{NS_M}" xmlns:t="{NS_T}"><m:ResponseMessages>'
        f"{''.join(messages)}</m:ResponseMessages></m:{operation}Response>"
    )


def _success(operation: str, inner: str = "") -> str:
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
        f"{inner}</m:{operation}ResponseMessage>"
    )


ERROR_TEXTS = {
    "ErrorSubscriptionNotFound": "The specified subscription was not found.",
    "ErrorSubscriptionAccessDenied": "A subscription can only be used by the account that created it.",
    "ErrorInvalidWatermark": "The watermark is invalid.",
    "ErrorInvalidSubscriptionRequest": "Only pull subscriptions are available on this server.",
    "ErrorInvalidIdMalformed": "Id is malformed.",
    "ErrorAccessDenied": "Access is denied. Check credentials and try again.",
    "ErrorFolderNotFound": "The specified folder could not be found in the store.",
    "ErrorMailRecipientNotFound": "The e-mail address cannot be found.",
    "ErrorTimeIntervalTooBig": f"The time window is longer than {MAX_AVAILABILITY_DAYS} days.",
    "ErrorInvalidTimeInterval": "The end of the time window is not after its start.",
}


def _error(operation: str, code: str) -> str:
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Error">'
        f"<m:MessageText>{escape(ERROR_TEXTS[code])}</m:MessageText><m:ResponseCode>{code}</m:ResponseCode>"
        f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey></m:{operation}ResponseMessage>"
    )


def _folder_counts(user: str, folder: str) -> tuple[int, int, int]:
    """(total items, unread items, child folders): made up, the same for a user on every CAS."""
    if folder in ("root", "msgfolderroot"):
        return 0, 0, len(FOLDERS) - 2
    h = int.from_bytes(_digest(user, folder, size=4), "little")
    total = 5 + h % 150
    return total, (h >> 8) % (total // 4 + 1), 0


# ---------------------------------------------------------------------------------------------------


@register
class EwsService(HttpService):
    id = "ews"

    def __init__(self, cas: Cas) -> None:
        super().__init__(cas)
        self.subscriptions: dict[str, Subscription] = {}
        # Ids that ended here ("expired" or "unsubscribed"), oldest first, to tell them from foreign ids.
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._next_sweep = 0.0
        self._fqdn = f"{cas.name}.{cas.config.domain}".lower().encode("ascii", "replace")[:255]
        self._operations: dict[str, Callable[[ET.Element, str, str, RequestContext], str]] = {
            _q(NS_M, "Subscribe"): self._subscribe,
            _q(NS_M, "GetEvents"): self._get_events,
            _q(NS_M, "Unsubscribe"): self._unsubscribe,
            _q(NS_M, "GetFolder"): self._get_folder,
            _q(NS_M, "FindItem"): self._find_item,
            _q(NS_M, "GetUserAvailabilityRequest"): self._get_user_availability,
        }

    async def handle(self, request: web.Request, ctx: RequestContext) -> web.StreamResponse:
        if ctx.path != EWS_PATH:
            ctx.note("", "invalid", "no such file")
            return iis.not_found()
        user = self.cas.users.check_basic(request.headers.get("Authorization"))
        if user is None:
            ctx.note("", "none", "no valid credentials")
            return iis.unauthorized(self.cas.config.vip_host)
        cookie = request.cookies.get(EXCHANGE_COOKIE, "")
        has_cookie = len(cookie) == 32 and all(c in "0123456789abcdef" for c in cookie)
        session_key = cookie if has_cookie else user
        if request.method in ("GET", "HEAD"):
            ctx.note(session_key, "none", "service page")
            response = web.Response(text=SERVICE_PAGE, content_type="text/html")
        elif request.method != "POST":
            ctx.note(session_key, "invalid", f"method {request.method[:20]}")
            response = iis.method_not_allowed("GET, POST")
        else:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                ctx.note(session_key, "invalid", "body too large")
                return iis.entity_too_large()
            status, xml = self._soap(body, user, session_key, ctx)
            response = web.Response(status=status, body=xml, content_type="text/xml", charset="utf-8")
        if not has_cookie:
            response.set_cookie(EXCHANGE_COOKIE, secrets.token_hex(16), path="/")
        return response

    def _soap(self, body: bytes, user: str, session_key: str, ctx: RequestContext) -> tuple[int, bytes]:
        try:
            operation = _operation(body)
            handler = self._operations.get(operation.tag)
            if handler is None:
                raise _Fault(
                    "ErrorInvalidRequest", f"The request is invalid: '{_local(operation.tag)[:60]}'."
                )
            return 200, _envelope(handler(operation, user, session_key, ctx))
        except _Fault as fault:
            ctx.note(session_key, "invalid", fault.code)
            return 500, fault.xml()

    # --- subscriptions -----------------------------------------------------------------------------

    def _subscribe(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        pull = op.find(_q(NS_M, "PullSubscriptionRequest"))
        if pull is None:
            if (
                op.find(_q(NS_M, "PushSubscriptionRequest")) is None
                and op.find(_q(NS_M, "StreamingSubscriptionRequest")) is None
            ):
                raise _schema_fault("The element 'Subscribe' has incomplete content.")
            ctx.note(session_key, "invalid", "push and streaming subscriptions are not mocked")
            return _response("Subscribe", [_error("Subscribe", "ErrorInvalidSubscriptionRequest")])
        if pull.get("SubscribeToAllFolders", "").strip() in ("true", "1"):
            folders: tuple[str, ...] = ("inbox",)
        else:
            targets = _folder_targets(_child(pull, NS_T, "FolderIds"), user)
            bad = next((code for name, code in targets if not name), "")
            if bad:
                ctx.note(session_key, "invalid", bad)
                return _response("Subscribe", [_error("Subscribe", bad)])
            folders = tuple(name for name, _code in targets if name)
        names = [(e.text or "").strip() for e in _child(pull, NS_T, "EventTypes")]
        if not names or any(e not in EVENT_TYPES for e in names):
            raise _schema_fault("'EventTypes' must list one or more of " + ", ".join(EVENT_TYPES) + ".")
        minutes = _int_in(_child(pull, NS_T, "Timeout").text, "Timeout", 1, 1440)
        now = time.monotonic()
        self._sweep(now)
        key = secrets.token_bytes(16)
        sub_id = _b64(bytes([len(self._fqdn)]) + self._fqdn + (16).to_bytes(4, "little") + key)
        sub = Subscription(
            id=sub_id,
            key=key,
            user=user,
            event_types=frozenset(names),
            folders=folders,
            idle_s=self.cas.scaled(minutes * 60),
            last_used=now,
            next_mail=now + self.cas.scaled(NEW_MAIL_EVERY_S),
        )
        self.subscriptions[sub_id] = sub
        ctx.note(sub_id, "new", f"Subscribe {minutes} min")
        inner = f"<m:SubscriptionId>{sub_id}</m:SubscriptionId><m:Watermark>{sub.watermark(0)}</m:Watermark>"
        return _response("Subscribe", [_success("Subscribe", inner)])

    def _held(
        self, sub_id: str, user: str, operation: str, ctx: RequestContext
    ) -> tuple[Subscription | None, str]:
        """The subscription if this CAS holds it for this user; else (None, the error message to send),
        with the ledger noted: expired here, ended by Unsubscribe, made elsewhere (foreign) or garbage."""
        now = time.monotonic()
        self._sweep(now)
        key = sub_id[:SESSION_KEY_CHARS]
        sub = self.subscriptions.get(sub_id)
        if sub is not None and now - sub.last_used > sub.idle_s:
            self._end(sub_id, "expired")
            sub = None
        if sub is not None:
            if sub.user != user:
                ctx.note(key, "invalid", "another user's subscription")
                return None, _error(operation, "ErrorSubscriptionAccessDenied")
            return sub, ""
        ended = self._ended.get(sub_id)
        origin = subscription_origin(sub_id)
        if ended == "expired":
            ctx.note(key, "expired", "subscription expired here")
        elif ended == "unsubscribed":
            ctx.note(key, "invalid", "subscription ended by Unsubscribe")
        elif origin is None:
            ctx.note(key, "invalid", "not a subscription id")
        else:
            ctx.note(key, "foreign", f"subscription made by {origin[:60]}")
        return None, _error(operation, "ErrorSubscriptionNotFound")

    def _get_events(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        sub_id, watermark = _text(op, NS_M, "SubscriptionId"), _text(op, NS_M, "Watermark")
        sub, error = self._held(sub_id, user, "GetEvents", ctx)
        if sub is None:
            return _response("GetEvents", [error])
        acknowledged = sub.watermark_seq(watermark)
        if acknowledged is None:
            ctx.note(sub.id, "invalid", "watermark of another subscription or malformed")
            return _response("GetEvents", [_error("GetEvents", "ErrorInvalidWatermark")])
        now = time.monotonic()
        sub.last_used = now
        self._make_up_mail(sub, now, user)
        sub.queue = [e for e in sub.queue if e.seq > acknowledged]
        batch = sub.queue[:MAX_EVENTS_PER_NOTIFICATION]
        more = len(sub.queue) > len(batch)
        if batch:
            events = "".join(
                f"<t:{e.kind}><t:Watermark>{sub.watermark(e.seq)}</t:Watermark>"
                f"<t:TimeStamp>{e.timestamp}</t:TimeStamp>"
                f'<t:ItemId Id="{e.item_id}" ChangeKey="{_change_key(e.item_id)}"/>'
                f'<t:ParentFolderId Id="{folder_id(user, e.folder)}" '
                f'ChangeKey="{_change_key(user, e.folder)}"/>'
                f"</t:{e.kind}>"
                for e in batch
            )
        else:
            events = f"<t:StatusEvent><t:Watermark>{sub.watermark(sub.seq)}</t:Watermark></t:StatusEvent>"
        ctx.note(sub.id, "own", f"GetEvents {len(batch)} events")
        inner = (
            f"<m:Notification><t:SubscriptionId>{sub.id}</t:SubscriptionId>"
            f"<t:PreviousWatermark>{sub.watermark(acknowledged)}</t:PreviousWatermark>"
            f"<t:MoreEvents>{'true' if more else 'false'}</t:MoreEvents>{events}</m:Notification>"
        )
        return _response("GetEvents", [_success("GetEvents", inner)])

    def _unsubscribe(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        sub, error = self._held(_text(op, NS_M, "SubscriptionId"), user, "Unsubscribe", ctx)
        if sub is None:
            return _response("Unsubscribe", [error])
        self._end(sub.id, "unsubscribed")
        ctx.note(sub.id, "own", "Unsubscribe")
        return _response("Unsubscribe", [_success("Unsubscribe")])

    def _make_up_mail(self, sub: Subscription, now: float, user: str) -> None:
        """Queue the NewMailEvents due since the last call, as if mail kept arriving in the first folder."""
        if "NewMailEvent" not in sub.event_types:
            return
        every = self.cas.scaled(NEW_MAIL_EVERY_S)
        while sub.next_mail <= now and len(sub.queue) < MAX_QUEUED_EVENTS:
            sub.seq += 1
            arrived = datetime.now(UTC) - timedelta(seconds=now - sub.next_mail)
            sub.queue.append(
                Event(
                    sub.seq,
                    "NewMailEvent",
                    _xs_time(arrived),
                    _item_id(user, sub.id, sub.seq),
                    sub.folders[0],
                )
            )
            sub.next_mail += every
        if sub.next_mail <= now:  # the queue is full: mail that arrives now is not reported
            sub.next_mail = now + every

    def _end(self, sub_id: str, how: str) -> None:
        self.subscriptions.pop(sub_id, None)
        self._ended[sub_id] = how
        while len(self._ended) > ENDED_REMEMBERED:
            self._ended.popitem(last=False)

    def _sweep(self, now: float) -> None:
        """Drop expired subscriptions now and then, so idle ones do not pile up in memory."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.cas.scaled(60)
        for sub in [s for s in self.subscriptions.values() if now - s.last_used > s.idle_s]:
            self._end(sub.id, "expired")

    # --- stateless operations ----------------------------------------------------------------------

    def _get_folder(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        shape = _base_shape(op, "FolderShape")
        messages = [
            _success("GetFolder", f"<m:Folders>{_folder_xml(user, name, shape)}</m:Folders>")
            if name
            else _error("GetFolder", code)
            for name, code in _folder_targets(_child(op, NS_M, "FolderIds"), user)
        ]
        ctx.note(session_key, "none", "GetFolder")
        return _response("GetFolder", messages)

    def _find_item(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        traversal = op.get("Traversal", "")
        if traversal not in ("Shallow", "SoftDeleted", "Associated"):
            raise _schema_fault("'Traversal' must be Shallow, SoftDeleted or Associated.")
        shape = _base_shape(op, "ItemShape")
        offset, limit, from_end = 0, None, False
        view = op.find(_q(NS_M, "IndexedPageItemView"))
        if view is not None:
            offset = _int_in(view.get("Offset"), "Offset", 0, 2**31 - 1)
            if view.get("MaxEntriesReturned") is not None:
                limit = _int_in(view.get("MaxEntriesReturned"), "MaxEntriesReturned", 1, 2**31 - 1)
            if view.get("BasePoint") not in ("Beginning", "End"):
                raise _schema_fault("'BasePoint' must be Beginning or End.")
            from_end = view.get("BasePoint") == "End"
        now = datetime.now(UTC).replace(microsecond=0)
        messages = []
        for name, code in _folder_targets(_child(op, NS_M, "ParentFolderIds"), user):
            if not name:
                messages.append(_error("FindItem", code))
                continue
            # Only a shallow traversal sees items: the mock's mailboxes hold nothing soft-deleted or hidden.
            total = _folder_counts(user, name)[0] if traversal == "Shallow" else 0
            if from_end:
                last = max(total - offset, 0)
                first = 0 if limit is None else max(last - limit, 0)
                next_offset, includes_last = offset + (last - first), first == 0
            else:
                first = min(offset, total)
                last = total if limit is None else min(total, first + limit)
                next_offset, includes_last = last, last >= total
            items = "".join(_item_xml(user, name, i, shape, now) for i in range(first, last))
            messages.append(
                _success(
                    "FindItem",
                    f'<m:RootFolder IndexedPagingOffset="{next_offset}" TotalItemsInView="{total}" '
                    f'IncludesLastItemInRange="{"true" if includes_last else "false"}">'
                    f"<t:Items>{items}</t:Items></m:RootFolder>",
                )
            )
        ctx.note(session_key, "none", "FindItem")
        return _response("FindItem", messages)

    def _get_user_availability(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        addresses = []
        for data in _child(op, NS_M, "MailboxDataArray"):
            if data.tag != _q(NS_T, "MailboxData"):
                raise _schema_fault("'MailboxDataArray' may hold only MailboxData elements.")
            addresses.append(_text(_child(data, NS_T, "Email"), NS_T, "Address"))
        if not 1 <= len(addresses) <= 100:
            raise _schema_fault("'MailboxDataArray' must hold 1 to 100 mailboxes.")
        options = _child(op, NS_T, "FreeBusyViewOptions")
        window = _child(options, NS_T, "TimeWindow")
        start = _datetime(_text(window, NS_T, "StartTime"), "StartTime")
        end = _datetime(_text(window, NS_T, "EndTime"), "EndTime")
        interval_el = options.find(_q(NS_T, "MergedFreeBusyIntervalInMinutes"))
        interval = (
            30
            if interval_el is None
            else _int_in(interval_el.text, "MergedFreeBusyIntervalInMinutes", 5, 1440)
        )
        view_el = options.find(_q(NS_T, "RequestedView"))
        view = "Detailed" if view_el is None else (view_el.text or "").strip()
        if view not in FREE_BUSY_VIEWS:
            raise _schema_fault("'RequestedView' must be one of " + ", ".join(FREE_BUSY_VIEWS) + ".")
        if end <= start:
            problem = "ErrorInvalidTimeInterval"
        elif end - start > timedelta(days=MAX_AVAILABILITY_DAYS):
            problem = "ErrorTimeIntervalTooBig"
        else:
            problem = ""
        answers = []
        for address in addresses:
            target = self.cas.users.canonical(address)
            code = problem or ("" if target else "ErrorMailRecipientNotFound")
            answers.append(
                _free_busy_error(code) if code else _free_busy(target or "", start, end, interval, view)
            )
        ctx.note(session_key, "none", "GetUserAvailability")
        return (
            f'<m:GetUserAvailabilityResponse xmlns:m="{NS_M}" xmlns:t="{NS_T}"><m:FreeBusyResponseArray>'
            f"{''.join(answers)}</m:FreeBusyResponseArray></m:GetUserAvailabilityResponse>"
        )


def _base_shape(op: ET.Element, shape_element: str) -> str:
    shape = _text(_child(op, NS_M, shape_element), NS_T, "BaseShape")
    if shape not in ("IdOnly", "Default", "AllProperties"):
        raise _schema_fault("'BaseShape' must be IdOnly, Default or AllProperties.")
    return shape


def _folder_targets(parent: ET.Element, user: str) -> list[tuple[str | None, str]]:
    """Per folder id: (folder name, '') or (None, the EWS error code). A DistinguishedFolderId that is not
    one of FOLDERS, or any other element, is a schema violation (the whole request fails)."""
    targets: list[tuple[str | None, str]] = []
    for element in parent:
        if element.tag == _q(NS_T, "DistinguishedFolderId"):
            name = element.get("Id", "")
            if name not in FOLDERS:
                raise _schema_fault(f"'{name[:40]}' is not a DistinguishedFolderId this server knows.")
            targets.append((name, ""))
        elif element.tag == _q(NS_T, "FolderId"):
            targets.append(_folder_from_id(user, element.get("Id", "")))
        else:
            raise _schema_fault(f"'{_local(element.tag)[:40]}' is not a folder id.")
    if not targets:
        raise _schema_fault(f"The element '{_local(parent.tag)}' holds no folder id.")
    return targets


def _folder_xml(user: str, name: str, shape: str) -> str:
    display, element = FOLDERS[name]
    ident = f'<t:FolderId Id="{folder_id(user, name)}" ChangeKey="{_change_key(user, name)}"/>'
    if shape == "IdOnly":
        return f"<t:{element}>{ident}</t:{element}>"
    total, unread, children = _folder_counts(user, name)
    unread_xml = (
        "" if element in ("CalendarFolder", "ContactsFolder") else f"<t:UnreadCount>{unread}</t:UnreadCount>"
    )
    return (
        f"<t:{element}>{ident}<t:DisplayName>{escape(display)}</t:DisplayName><t:TotalCount>{total}</t:TotalCount>"
        f"<t:ChildFolderCount>{children}</t:ChildFolderCount>{unread_xml}</t:{element}>"
    )


def _item_xml(user: str, folder: str, index: int, shape: str, now: datetime) -> str:
    """Item `index` of a folder: made up from the user, folder and index, so every CAS shows the same."""
    tag = "CalendarItem" if folder == "calendar" else "Message"
    item = _item_id(user, folder, index)
    ident = f'<t:ItemId Id="{item}" ChangeKey="{_change_key(item)}"/>'
    if shape == "IdOnly":
        return f"<t:{tag}>{ident}</t:{tag}>"
    h = int.from_bytes(_digest(user, folder, str(index), size=4), "little")
    subject = escape(_SUBJECTS[h % len(_SUBJECTS)])
    if tag == "CalendarItem":
        start = (now + timedelta(days=index // 2)).replace(hour=8 + h % 9, minute=0, second=0)
        end = start + timedelta(minutes=30 * (1 + h % 4))
        return (
            f"<t:CalendarItem>{ident}<t:Subject>{subject}</t:Subject><t:HasAttachments>false</t:HasAttachments>"
            f"<t:Start>{_xs_time(start)}</t:Start><t:End>{_xs_time(end)}</t:End>"
            f"<t:LegacyFreeBusyStatus>Busy</t:LegacyFreeBusyStatus><t:Location>Room {h % 40}</t:Location>"
            "<t:CalendarItemType>Single</t:CalendarItemType></t:CalendarItem>"
        )
    sent = _xs_time(now - timedelta(minutes=37 * index + h % 30))
    unread = _folder_counts(user, folder)[1]
    return (
        f"<t:Message>{ident}<t:Subject>{subject}</t:Subject><t:Sensitivity>Normal</t:Sensitivity>"
        f"<t:Size>{2000 + h % 60000}</t:Size><t:DateTimeSent>{sent}</t:DateTimeSent>"
        f"<t:DateTimeCreated>{sent}</t:DateTimeCreated>"
        f"<t:HasAttachments>{'true' if h % 5 == 0 else 'false'}</t:HasAttachments>"
        f"<t:From><t:Mailbox><t:Name>User {1 + (h >> 4) % 500}</t:Name></t:Mailbox></t:From>"
        f"<t:IsRead>{'false' if index < unread else 'true'}</t:IsRead></t:Message>"
    )


FREE_BUSY_VIEWS = ("None", "MergedOnly", "FreeBusy", "FreeBusyMerged", "Detailed", "DetailedMerged")
_BUSY_TYPES = ("Busy", "Tentative", "Busy", "OOF")
_MERGED_CODES = {"Free": 0, "Tentative": 1, "Busy": 2, "OOF": 3}


def _busy_times(user: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime, str]]:
    """Two made-up appointments a working day, the same for a user on every CAS."""
    found = []
    first_day = start.date()
    for day_offset in range((end.date() - first_day).days + 1):
        day = first_day + timedelta(days=day_offset)
        for slot in (0, 1):
            h = int.from_bytes(_digest(user, day.isoformat(), str(slot), size=4), "little")
            if day.weekday() >= 5 or h % 3 == 0:
                continue
            begin = datetime(day.year, day.month, day.day, 8 + 4 * slot + h % 4, tzinfo=UTC)
            finish = begin + timedelta(minutes=30 * (1 + h % 4))
            if begin < end and finish > start:
                found.append((begin, finish, _BUSY_TYPES[(h >> 8) % len(_BUSY_TYPES)]))
    return found


def _local_time(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(timespec="seconds")


def _free_busy(user: str, start: datetime, end: datetime, interval_min: int, view: str) -> str:
    busy = _busy_times(user, start, end)
    parts = [f"<t:FreeBusyViewType>{view}</t:FreeBusyViewType>"]
    if view.endswith("Merged") or view == "MergedOnly":
        step = timedelta(minutes=interval_min)
        slots = [0] * -(-(end - start) // step)
        for begin, finish, kind in busy:
            first = max(int((begin - start) // step), 0)
            last = min(int(-(-(finish - start) // step)), len(slots))
            for i in range(first, last):
                slots[i] = max(slots[i], _MERGED_CODES[kind])
        parts.append(f"<t:MergedFreeBusy>{''.join(map(str, slots))}</t:MergedFreeBusy>")
    if view not in ("None", "MergedOnly"):
        events = "".join(
            f"<t:CalendarEvent><t:StartTime>{_local_time(b)}</t:StartTime><t:EndTime>{_local_time(f)}</t:EndTime>"
            f"<t:BusyType>{kind}</t:BusyType></t:CalendarEvent>"
            for b, f, kind in busy
        )
        parts.append(f"<t:CalendarEventArray>{events}</t:CalendarEventArray>")
    return (
        '<m:FreeBusyResponse><m:ResponseMessage ResponseClass="Success">'
        "<m:ResponseCode>NoError</m:ResponseCode>"
        f"</m:ResponseMessage><m:FreeBusyView>{''.join(parts)}</m:FreeBusyView></m:FreeBusyResponse>"
    )


def _free_busy_error(code: str) -> str:
    return (
        '<m:FreeBusyResponse><m:ResponseMessage ResponseClass="Error">'
        f"<m:MessageText>{escape(ERROR_TEXTS[code])}"
        f"</m:MessageText><m:ResponseCode>{code}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>"
        "</m:ResponseMessage></m:FreeBusyResponse>"
    )
