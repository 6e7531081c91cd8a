"""The EWS service: `POST /EWS/Exchange.asmx` and its operations, on the SOAP layer (soap.py), the
subscription state (subscriptions.py) and the made-up mailbox content (mailbox.py).

Every request needs Basic credentials (IIS's 401 otherwise) and gets an `exchangecookie` when it came
without one. `GET` gets the service's page, as browsing to Exchange.asmx does; a `POST` holds one SOAP
operation. Every answer notes its ledger state; nothing raises.

Ledger session key: the subscription id for subscription operations, else the client's exchangecookie,
else the user.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from aiohttp import hdrs, web

from mockcas import iis
from mockcas.services import HttpService, RequestContext, register
from mockcas.services.ews.mailbox import (
    FOLDER_PROPERTIES,
    FOLDERS,
    FREE_BUSY_VIEWS,
    change_key,
    folder_counts,
    folder_from_id,
    folder_id,
    folder_xml,
    free_busy,
    free_busy_error,
    is_mailbox_id,
    item_xml,
)
from mockcas.services.ews.soap import (
    MAX_AVAILABILITY_DAYS,
    NS_M,
    NS_T,
    Fault,
    b64,
    child,
    envelope,
    error,
    int_in,
    local,
    operation,
    parse_datetime,
    q,
    response,
    schema_fault,
    success,
    text,
    unb64,
)
from mockcas.services.ews.subscriptions import EVENT_TYPES, Subscription, Subscriptions, subscription_origin

if TYPE_CHECKING:
    from mockcas.cas import Cas

EWS_PATH = "/ews/exchange.asmx"
EXCHANGE_COOKIE = "exchangecookie"
MAX_EVENTS_PER_NOTIFICATION = 50  # the rest waits for the next GetEvents (MoreEvents=true)
SESSION_KEY_CHARS = 128  # client-chosen ids are cut to this in the ledger
SERVICE_PAGE = (
    "<html><head><title>Service</title></head><body><h1>Service</h1>"
    "<p>You have created a service.</p></body></html>"
)

# An operation's handler: (operation element, user, ledger session key, ctx) -> its response element.
Operation = Callable[[ET.Element, str, str, RequestContext], str]


@register
class EwsService(HttpService):
    id = "ews"

    def __init__(self, cas: Cas) -> None:
        super().__init__(cas)
        self.subscriptions = Subscriptions(f"{cas.name}.{cas.config.domain}", cas.scaled)
        self._operations: dict[str, Operation] = {
            q(NS_M, "Subscribe"): self._subscribe,
            q(NS_M, "GetEvents"): self._get_events,
            q(NS_M, "Unsubscribe"): self._unsubscribe,
            q(NS_M, "GetFolder"): self._get_folder,
            q(NS_M, "FindItem"): self._find_item,
            q(NS_M, "GetUserAvailabilityRequest"): self._get_user_availability,
            q(NS_M, "ConvertId"): self._convert_id,
        }

    def refusal(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse | None:
        if ctx.path != EWS_PATH:
            ctx.note("", "invalid", "no such file")
            return iis.not_found()
        user = self.cas.users.check_basic(request.headers.get(hdrs.AUTHORIZATION))
        if user is None:
            ctx.note("", "none", "no valid credentials")
            return iis.unauthorized(self.cas.config.vip_host)
        ctx.user = user
        return None

    async def handle(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        refused = self.refusal(request, ctx)
        if refused is not None:
            return refused
        user = ctx.user
        cookie = request.cookies.get(EXCHANGE_COOKIE, "")
        has_cookie = len(cookie) == 32 and all(c in "0123456789abcdef" for c in cookie)
        session_key = cookie if has_cookie else user
        if request.method in ("GET", "HEAD"):
            ctx.note(session_key, "none", "service page")
            answer = web.Response(text=SERVICE_PAGE, content_type="text/html")
        elif request.method != "POST":
            ctx.note(session_key, "invalid", f"method {request.method[:20]}")
            answer = iis.method_not_allowed("GET, POST")
        else:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                ctx.note(session_key, "invalid", "body too large")
                return iis.entity_too_large()
            status, xml = self._soap(body, user, session_key, ctx)
            answer = web.Response(status=status, body=xml, content_type="text/xml", charset="utf-8")
        if not has_cookie:
            answer.set_cookie(EXCHANGE_COOKIE, secrets.token_hex(16), path="/")
        return answer

    def _soap(self, body: bytes, user: str, session_key: str, ctx: RequestContext) -> tuple[int, bytes]:
        try:
            op = operation(body)
            handler = self._operations.get(op.tag)
            if handler is None:
                raise Fault("ErrorInvalidRequest", f"The request is invalid: '{local(op.tag)[:60]}'.")
            return 200, envelope(handler(op, user, session_key, ctx))
        except Fault as fault:
            ctx.note(session_key, "invalid", fault.code)
            return 500, fault.xml()

    # --- subscriptions -----------------------------------------------------------------------------

    def _subscribe(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        pull = op.find(q(NS_M, "PullSubscriptionRequest"))
        if pull is None:
            if (
                op.find(q(NS_M, "PushSubscriptionRequest")) is None
                and op.find(q(NS_M, "StreamingSubscriptionRequest")) is None
            ):
                raise schema_fault("The element 'Subscribe' has incomplete content.")
            ctx.note(session_key, "invalid", "push and streaming subscriptions are not mocked")
            return response("Subscribe", [error("Subscribe", "ErrorInvalidSubscriptionRequest")])
        if pull.get("SubscribeToAllFolders", "").strip() in ("true", "1"):
            folders: tuple[str, ...] = ("inbox",)
        else:
            targets = _folder_targets(child(pull, NS_T, "FolderIds"), user)
            bad = next((code for name, code in targets if not name), "")
            if bad:
                ctx.note(session_key, "invalid", bad)
                return response("Subscribe", [error("Subscribe", bad)])
            folders = tuple(name for name, _code in targets if name)
        names = [(e.text or "").strip() for e in child(pull, NS_T, "EventTypes")]
        if not names or any(e not in EVENT_TYPES for e in names):
            raise schema_fault("'EventTypes' must list one or more of " + ", ".join(EVENT_TYPES) + ".")
        minutes = int_in(child(pull, NS_T, "Timeout").text, "Timeout", 1, 1440)
        sub = self.subscriptions.subscribe(user, frozenset(names), folders, minutes)
        ctx.note(sub.id, "new", f"Subscribe {minutes} min")
        inner = f"<m:SubscriptionId>{sub.id}</m:SubscriptionId><m:Watermark>{sub.watermark(0)}</m:Watermark>"
        return response("Subscribe", [success("Subscribe", inner)])

    def _held(
        self, sub_id: str, user: str, operation: str, ctx: RequestContext
    ) -> tuple[Subscription | None, str]:
        """The subscription if this CAS holds it for this user; else (None, the error message to send),
        with the ledger noted: expired here, ended by Unsubscribe, made elsewhere (foreign) or garbage."""
        sub, why = self.subscriptions.find(sub_id)
        key = sub_id[:SESSION_KEY_CHARS]
        if sub is not None:
            if sub.user != user:
                ctx.note(key, "invalid", "another user's subscription")
                return None, error(operation, "ErrorSubscriptionAccessDenied")
            return sub, ""
        if why == "expired":
            ctx.note(key, "expired", "subscription expired here")
        elif why == "unsubscribed":
            ctx.note(key, "invalid", "subscription ended by Unsubscribe")
        elif why == "garbage":
            ctx.note(key, "invalid", "not a subscription id")
        else:
            ctx.note(key, "foreign", f"subscription made by {(subscription_origin(sub_id) or '')[:60]}")
        return None, error(operation, "ErrorSubscriptionNotFound")

    def _get_events(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        sub_id, watermark = text(op, NS_M, "SubscriptionId"), text(op, NS_M, "Watermark")
        sub, failed = self._held(sub_id, user, "GetEvents", ctx)
        if sub is None:
            return response("GetEvents", [failed])
        acknowledged = sub.watermark_seq(watermark)
        if acknowledged is None:
            ctx.note(sub.id, "invalid", "watermark of another subscription or malformed")
            return response("GetEvents", [error("GetEvents", "ErrorInvalidWatermark")])
        queued = sub.pending(acknowledged)
        batch = queued[:MAX_EVENTS_PER_NOTIFICATION]
        more = len(queued) > len(batch)
        if batch:
            events = "".join(
                f"<t:{e.kind}><t:Watermark>{sub.watermark(e.seq)}</t:Watermark>"
                f"<t:TimeStamp>{e.timestamp}</t:TimeStamp>"
                f'<t:ItemId Id="{e.item_id}" ChangeKey="{change_key(e.item_id)}"/>'
                f'<t:ParentFolderId Id="{folder_id(user, e.folder)}" '
                f'ChangeKey="{change_key(user, e.folder)}"/>'
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
        return response("GetEvents", [success("GetEvents", inner)])

    def _unsubscribe(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        sub, failed = self._held(text(op, NS_M, "SubscriptionId"), user, "Unsubscribe", ctx)
        if sub is None:
            return response("Unsubscribe", [failed])
        self.subscriptions.end(sub.id, "unsubscribed")
        ctx.note(sub.id, "own", "Unsubscribe")
        return response("Unsubscribe", [success("Unsubscribe")])

    # --- stateless operations ----------------------------------------------------------------------

    def _get_folder(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        shape = _base_shape(op, "FolderShape")
        additional = _additional_folder_properties(child(op, NS_M, "FolderShape"))
        messages = [
            success("GetFolder", f"<m:Folders>{folder_xml(user, name, shape, additional)}</m:Folders>")
            if name
            else error("GetFolder", code)
            for name, code in _folder_targets(child(op, NS_M, "FolderIds"), user)
        ]
        ctx.note(session_key, "none", "GetFolder")
        return response("GetFolder", messages)

    def _find_item(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        traversal = op.get("Traversal", "")
        if traversal not in ("Shallow", "SoftDeleted", "Associated"):
            raise schema_fault("'Traversal' must be Shallow, SoftDeleted or Associated.")
        shape = _base_shape(op, "ItemShape")
        offset, limit, from_end = 0, None, False
        view = op.find(q(NS_M, "IndexedPageItemView"))
        if view is not None:
            offset = int_in(view.get("Offset"), "Offset", 0, 2**31 - 1)
            if view.get("MaxEntriesReturned") is not None:
                limit = int_in(view.get("MaxEntriesReturned"), "MaxEntriesReturned", 1, 2**31 - 1)
            if view.get("BasePoint") not in ("Beginning", "End"):
                raise schema_fault("'BasePoint' must be Beginning or End.")
            from_end = view.get("BasePoint") == "End"
        now = datetime.now(UTC).replace(microsecond=0)
        messages = []
        for name, code in _folder_targets(child(op, NS_M, "ParentFolderIds"), user):
            if not name:
                messages.append(error("FindItem", code))
                continue
            # Only a shallow traversal sees items: the mock's mailboxes hold nothing soft-deleted or hidden.
            total = folder_counts(user, name)[0] if traversal == "Shallow" else 0
            if from_end:
                last = max(total - offset, 0)
                first = 0 if limit is None else max(last - limit, 0)
                next_offset, includes_last = offset + (last - first), first == 0
            else:
                first = min(offset, total)
                last = total if limit is None else min(total, first + limit)
                next_offset, includes_last = last, last >= total
            items = "".join(item_xml(user, name, i, shape, now) for i in range(first, last))
            messages.append(
                success(
                    "FindItem",
                    f'<m:RootFolder IndexedPagingOffset="{next_offset}" TotalItemsInView="{total}" '
                    f'IncludesLastItemInRange="{"true" if includes_last else "false"}">'
                    f"<t:Items>{items}</t:Items></m:RootFolder>",
                )
            )
        ctx.note(session_key, "none", "FindItem")
        return response("FindItem", messages)

    def _get_user_availability(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        addresses = []
        for data in child(op, NS_M, "MailboxDataArray"):
            if data.tag != q(NS_T, "MailboxData"):
                raise schema_fault("'MailboxDataArray' may hold only MailboxData elements.")
            addresses.append(text(child(data, NS_T, "Email"), NS_T, "Address"))
        if not 1 <= len(addresses) <= 100:
            raise schema_fault("'MailboxDataArray' must hold 1 to 100 mailboxes.")
        options = child(op, NS_T, "FreeBusyViewOptions")
        window = child(options, NS_T, "TimeWindow")
        start = parse_datetime(text(window, NS_T, "StartTime"), "StartTime")
        end = parse_datetime(text(window, NS_T, "EndTime"), "EndTime")
        interval_el = options.find(q(NS_T, "MergedFreeBusyIntervalInMinutes"))
        interval = (
            30
            if interval_el is None
            else int_in(interval_el.text, "MergedFreeBusyIntervalInMinutes", 5, 1440)
        )
        view_el = options.find(q(NS_T, "RequestedView"))
        view = "Detailed" if view_el is None else (view_el.text or "").strip()
        if view not in FREE_BUSY_VIEWS:
            raise schema_fault("'RequestedView' must be one of " + ", ".join(FREE_BUSY_VIEWS) + ".")
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
                free_busy_error(code) if code else free_busy(target or "", start, end, interval, view)
            )
        ctx.note(session_key, "none", "GetUserAvailability")
        return (
            f'<m:GetUserAvailabilityResponse xmlns:m="{NS_M}" xmlns:t="{NS_T}"><m:FreeBusyResponseArray>'
            f"{''.join(answers)}</m:FreeBusyResponseArray></m:GetUserAvailabilityResponse>"
        )

    def _convert_id(self, op: ET.Element, user: str, session_key: str, ctx: RequestContext) -> str:
        """ConvertId between id formats. Clients also send it as the smallest request there is, to read
        ServerVersionInfo from its answer (exchangelib guesses the version that way, with the id "DUMMY"):
        an id this mailbox does not know is answered ErrorInvalidIdMalformed, as Exchange does."""
        destination = op.get("DestinationFormat", "")
        if destination not in ID_FORMATS:
            raise schema_fault(f"'{destination[:40]}' is not an id format.")
        messages = []
        for alternate in child(op, NS_M, "SourceIds"):
            raw = _id_bytes(alternate.get("Id", ""), alternate.get("Format", ""))
            if raw is None or not is_mailbox_id(user, raw):
                messages.append(error("ConvertId", "ErrorInvalidIdMalformed"))
                continue
            converted = raw.hex().upper() if destination == "HexEntryId" else b64(raw)
            mailbox = escape(alternate.get("Mailbox", ""), {'"': "&quot;"})
            messages.append(
                success(
                    "ConvertId",
                    f'<m:AlternateId xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                    f'xsi:type="t:AlternateIdType" Format="{destination}" Id="{converted}" '
                    f'Mailbox="{mailbox}"/>',
                )
            )
        ctx.note(session_key, "none", "ConvertId")
        return response("ConvertId", messages)


# The id formats of ConvertId ([MS-OXWSCVTID]); the mock's ids are the same bytes in every format.
ID_FORMATS = ("EwsLegacyId", "EwsId", "EntryId", "HexEntryId", "StoreId", "OwaId")


def _id_bytes(value: str, source_format: str) -> bytes | None:
    """The bytes of an id given in `source_format`, or None when it is not one."""
    if source_format not in ID_FORMATS:
        raise schema_fault(f"'{source_format[:40]}' is not an id format.")
    if source_format == "HexEntryId":
        try:
            return bytes.fromhex(value)
        except ValueError:
            return None
    return unb64(value)


def _additional_folder_properties(shape: ET.Element) -> frozenset[str]:
    """The folder properties named in a FolderShape's AdditionalProperties ("folder:DisplayName" ...);
    properties the mock has not are left out of the answer, not refused."""
    extra = shape.find(q(NS_T, "AdditionalProperties"))
    if extra is None:
        return frozenset()
    names = (uri.get("FieldURI", "") for uri in extra.iter(q(NS_T, "FieldURI")))
    return frozenset(n.removeprefix("folder:") for n in names) & set(FOLDER_PROPERTIES)


def _base_shape(op: ET.Element, shape_element: str) -> str:
    shape = text(child(op, NS_M, shape_element), NS_T, "BaseShape")
    if shape not in ("IdOnly", "Default", "AllProperties"):
        raise schema_fault("'BaseShape' must be IdOnly, Default or AllProperties.")
    return shape


def _folder_targets(parent: ET.Element, user: str) -> list[tuple[str | None, str]]:
    """Per folder id: (folder name, '') or (None, the EWS error code). A DistinguishedFolderId that is not
    one of FOLDERS, or any other element, is a schema violation (the whole request fails)."""
    targets: list[tuple[str | None, str]] = []
    for element in parent:
        if element.tag == q(NS_T, "DistinguishedFolderId"):
            name = element.get("Id", "")
            if name not in FOLDERS:
                raise schema_fault(f"'{name[:40]}' is not a DistinguishedFolderId this server knows.")
            targets.append((name, ""))
        elif element.tag == q(NS_T, "FolderId"):
            targets.append(folder_from_id(user, element.get("Id", "")))
        else:
            raise schema_fault(f"'{local(element.tag)[:40]}' is not a folder id.")
    if not targets:
        raise schema_fault(f"The element '{local(parent.tag)}' holds no folder id.")
    return targets
