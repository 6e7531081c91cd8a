"""Exchange ActiveSync (EAS) on the mock CAS: `OPTIONS` and `POST /Microsoft-Server-ActiveSync` with WBXML
bodies ([MS-ASHTTP], [MS-ASCMD], [MS-ASPROV]); commands Provision, FolderSync, Sync and Ping.

Where state lives decides what a balancer can break (DESIGN.md section 3):
- In the mailbox, so valid on every CAS of the farm: the policy key and the sync keys. The policy key is
  a decimal 32-bit number, as MS-ASPROV asks, made from an HMAC with the farm key over (phase, user,
  device), so any CAS can recompute and check it. A sync key is a token sealed with the farm key
  (`self.cas.farm_sealer`) holding the device's watermark; at most 64 characters, the schema's limit.
- On this CAS only: a warm cache per device (its authentication and its mailbox notification
  subscription). A device's first request on a CAS is served but pays `eas_cold_cost_ms`; it is recorded
  `new` if the device brings no mailbox state (no policy key yet: a device starting out) and `cold` if it
  does (it was served elsewhere before: the soft break). Later requests are `own`. Entries age out
  after twice the longest heartbeat without a request. The cache also keeps the device's last Ping
  parameters, which a device may leave out of later Pings *(assumed to be per CAS)*.

The mailbox itself is synthesized, identically on every CAS: a fixed folder hierarchy, and an Inbox that
receives one new message every `MAIL_INTERVAL_S` (time-scaled), at a phase of its own per user. Message k
of a user is the same everywhere, so a sync key's watermark (the last message number the device has) is
all the state a Sync needs. A Ping waits until its heartbeat ends (Status 1) or a message arrives in a
watched folder (Status 2). A Ping asking for a heartbeat outside the CAS's MinHeartbeatInterval ..
MaxHeartbeatInterval (`eas_heartbeat_min_s`, `eas_heartbeat_max_s`; 60..3540 s by default) gets Status
5 and the limit it broke in `HeartbeatInterval`, as Exchange 2010 answers ([MS-ASCMD] 2.2.3.162.8).

The ledger row of a Ping says the heartbeat it asked for: detail `Ping heartbeat=540` (seconds of
Exchange time; caslab.records.HEARTBEAT_FIELD). A Ping whose connection the other side closed before
the CAS answered (a balancer's idle timeout, a device that gave up) is recorded with status 499 and
detail `peer-closed heartbeat=540`: the CAS's side of a cut. The CAS finds that out when the Ping's
answer is due (its heartbeat ended, mail came, or the CAS is closing), as a server finds a dead
connection when it writes to it.

Bad input gets the protocol's own answer and a ledger row with state `invalid`: 400 for missing query
parameters, an unsupported protocol version or a broken body, 501 for an unknown command (MS-ASHTTP),
401 for missing or wrong credentials, 449 when the policy key is missing or not the device's final key,
and the command's Status code for a bad sync key (Sync 3, FolderSync 9) or bad Ping parameters.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from caslab import wbxml
from caslab.records import HEARTBEAT_FIELD, PEER_CLOSED, detail_with
from caslab.wbxml import E, Element, WbxmlError
from mockcas import iis
from mockcas.services import HttpService, RequestContext, register

if TYPE_CHECKING:
    from mockcas.cas import Cas

PATHS = ("/microsoft-server-activesync", "/microsoft-server-activesync/")
PROTOCOL_VERSIONS = ("2.0", "2.1", "2.5", "12.0", "12.1", "14.0", "14.1")
SERVER_VERSION = "14.1"  # Exchange 2010 SP1
WBXML_TYPE = "application/vnd.ms-sync.wbxml"
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"
MAX_PING_FOLDERS = 300
CACHE_IDLE_HEARTBEATS = 2  # a device idle this many longest heartbeats is forgotten by the CAS
MAIL_INTERVAL_S = 600.0  # one new Inbox message per user every 10 minutes (Exchange time)
INITIAL_ITEMS = 5  # messages already in the Inbox when a device first syncs it
SYNC_STATE_ITEMS = 30 * 24 * 3600 // int(MAIL_INTERVAL_S)  # a watermark older than 30 days is stale
DEFAULT_WINDOW, MAX_WINDOW = 100, 512
_EPOCH = 1_704_067_200  # 2024-01-01 UTC: message numbers count from here, keeping sync keys short

# The folder hierarchy of every mailbox: (ServerId, display name, FolderHierarchy Type, Ping/Sync class).
FOLDERS: tuple[tuple[str, str, int, str], ...] = (
    ("1", "Calendar", 8, "Calendar"),
    ("2", "Contacts", 9, "Contacts"),
    ("3", "Deleted Items", 4, "Email"),
    ("4", "Drafts", 3, "Email"),
    ("5", "Inbox", 2, "Email"),
    ("6", "Notes", 10, "Notes"),
    ("7", "Outbox", 6, "Email"),
    ("8", "Sent Items", 5, "Email"),
    ("9", "Tasks", 7, "Tasks"),
)
FOLDER_IDS = frozenset(f[0] for f in FOLDERS)
INBOX_ID = "5"
HIERARCHY_VERSION = 1  # the hierarchy never changes, so one FolderSync key serves every device

# The "Default" mobile device mailbox policy of Exchange 2010 (no device password), in MS-ASPROV order.
POLICY_SETTINGS: tuple[tuple[str, str], ...] = (
    ("DevicePasswordEnabled", "0"),
    ("AlphanumericDevicePasswordRequired", "0"),
    ("PasswordRecoveryEnabled", "0"),
    ("RequireStorageCardEncryption", "0"),
    ("AttachmentsEnabled", "1"),
    ("MinDevicePasswordLength", "4"),
    ("MaxInactivityTimeDeviceLock", "900"),
    ("MaxDevicePasswordFailedAttempts", "8"),
    ("AllowSimpleDevicePassword", "1"),
    ("DevicePasswordExpiration", "0"),
    ("DevicePasswordHistory", "0"),
    ("AllowStorageCard", "1"),
    ("AllowCamera", "1"),
    ("RequireDeviceEncryption", "0"),
    ("AllowUnsignedApplications", "1"),
    ("AllowUnsignedInstallationPackages", "1"),
    ("MinDevicePasswordComplexCharacters", "3"),
    ("AllowWiFi", "1"),
    ("AllowTextMessaging", "1"),
    ("AllowPOPIMAPEmail", "1"),
    ("AllowBluetooth", "2"),
    ("AllowIrDA", "1"),
    ("RequireManualSyncWhenRoaming", "0"),
    ("AllowDesktopSync", "1"),
    ("MaxCalendarAgeFilter", "0"),
    ("AllowHTMLEmail", "1"),
    ("MaxEmailAgeFilter", "0"),
    ("MaxEmailBodyTruncationSize", "-1"),
    ("MaxEmailHTMLBodyTruncationSize", "-1"),
    ("RequireSignedSMIMEMessages", "0"),
    ("RequireEncryptedSMIMEMessages", "0"),
    ("RequireSignedSMIMEAlgorithm", "0"),
    ("RequireEncryptionSMIMEAlgorithm", "0"),
    ("AllowSMIMEEncryptionAlgorithmNegotiation", "2"),
    ("AllowSMIMESoftCerts", "1"),
    ("AllowBrowser", "1"),
    ("AllowConsumerEmail", "1"),
    ("AllowRemoteDesktop", "1"),
    ("AllowInternetSharing", "1"),
)


@dataclass(frozen=True)
class PingParams:
    heartbeat_s: int
    folders: tuple[str, ...]  # folder ServerIds


@dataclass
class DeviceCache:
    """What this CAS keeps warm for one device."""

    last_seen: float  # time.monotonic() of the device's last request here
    ping: PingParams | None = None


@dataclass(frozen=True)
class EasRequest:
    """One authenticated POST whose query parameters checked out."""

    command: str
    user: str  # canonical, from the Authorization header
    device_id: str
    http: web.BaseRequest  # the request itself (a held Ping asks it whether its client is still there)


class Answer(Exception):
    """Raised inside a command handler to answer at once: the response and what the ledger says."""

    def __init__(self, response: web.Response, detail: str, state: str = "invalid") -> None:
        super().__init__(detail)
        self.response, self.detail, self.state = response, detail, state


@register
class ActiveSync(HttpService):
    id = "eas"

    def __init__(self, cas: Cas) -> None:
        super().__init__(cas)
        self._devices: OrderedDict[tuple[str, str], DeviceCache] = OrderedDict()  # oldest use first
        self._closing = asyncio.Event()
        self._commands = {
            "Provision": self._provision,
            "FolderSync": self._folder_sync,
            "Sync": self._sync,
            "Ping": self._ping,
        }

    async def close(self) -> None:
        self._closing.set()

    def refusal(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse | None:
        if ctx.path not in PATHS:
            ctx.note("", "invalid", "no such path")
            return iis.not_found()
        user = self.cas.users.check_basic(request.headers.get(hdrs.AUTHORIZATION))
        if user is None:
            ctx.note(request.query.get("DeviceId", "")[:64], "invalid", "unauthorized")
            return iis.unauthorized(self.cas.config.vip_host)
        ctx.user = user
        return None

    async def handle(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        refused = self.refusal(request, ctx)
        if refused is not None:
            return refused
        user = ctx.user
        if request.method == "OPTIONS":
            ctx.note("", "none", "OPTIONS")
            return self._options()
        if request.method != "POST":
            ctx.note("", "invalid", f"method {request.method}")
            return web.Response(status=501, text="501 - Not Implemented")
        try:
            eas = self._parse_request(request, user)
            state = await self._warm_up(eas, request.headers.get("X-MS-PolicyKey", ""))
            ctx.note(eas.device_id, state, eas.command)
            tree = await self._read_body(request)
            if eas.command != "Provision" and not self._is_final_policy_key(eas, request):
                raise Answer(
                    web.Response(status=449, text="449 - Retry With Provisioning"), "not provisioned"
                )
            return await self._commands[eas.command](eas, tree, ctx)
        except Answer as answer:
            ctx.note(request.query.get("DeviceId", "")[:64], answer.state, answer.detail)
            return answer.response

    # --- the HTTP layer (MS-ASHTTP) ---

    def _options(self) -> web.Response:
        return web.Response(
            headers={
                "Allow": "OPTIONS,POST",
                "Public": "OPTIONS,POST",
                "Cache-Control": "private",
                "MS-Server-ActiveSync": SERVER_VERSION,
                "MS-ASProtocolVersions": ",".join(PROTOCOL_VERSIONS),
                "MS-ASProtocolCommands": ",".join(self._commands),
            }
        )

    def _parse_request(self, request: web.BaseRequest, user: str) -> EasRequest:
        query = request.query
        missing = [name for name in ("Cmd", "User", "DeviceId", "DeviceType") if not query.get(name)]
        if missing:
            raise Answer(_bad_request(), f"missing query parameter {', '.join(missing)}")
        device_id = query["DeviceId"]
        if len(device_id) > 32 or not device_id.isascii() or not device_id.isalnum():
            raise Answer(_bad_request(), "DeviceId is not 1-32 letters and digits")
        command = query["Cmd"]
        if command not in self._commands:
            raise Answer(web.Response(status=501, text="501 - Not Implemented"), f"Cmd={command[:40]}")
        version = request.headers.get("MS-ASProtocolVersion", "")
        if version not in PROTOCOL_VERSIONS:
            raise Answer(_bad_request(), f"MS-ASProtocolVersion {version[:20]!r} not supported")
        return EasRequest(command, user, device_id, request)

    async def _read_body(self, request: web.BaseRequest) -> Element | None:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Answer(iis.entity_too_large(), "body too large") from None
        if not body:
            return None
        try:
            return wbxml.decode(body)
        except WbxmlError as err:
            raise Answer(_bad_request(), f"broken WBXML: {err}") from None

    async def _warm_up(self, eas: EasRequest, policy_key_header: str) -> str:
        """'own' if this CAS has the device warm, else warm it up (paying the cost): 'cold' when the
        device brings mailbox state (a policy key) from earlier work elsewhere, 'new' when it does not."""
        now = time.monotonic()
        cutoff = now - self.cas.scaled(CACHE_IDLE_HEARTBEATS * self.cas.config.eas_heartbeat_max_s)
        while self._devices and next(iter(self._devices.values())).last_seen < cutoff:
            self._devices.popitem(last=False)
        key = (eas.user, eas.device_id)
        entry = self._devices.get(key)
        if entry is not None:
            entry.last_seen = now
            self._devices.move_to_end(key)
            return "own"
        self._devices[key] = DeviceCache(last_seen=now)
        await asyncio.sleep(self.cas.config.eas_cold_cost_ms / 1000)
        return "cold" if policy_key_header not in ("", "0") else "new"

    # --- Provision (MS-ASPROV) ---

    def policy_key(self, phase: str, user: str, device_id: str) -> str:
        """The temporary ('temporary') or final ('final') policy key of a device: a decimal 32-bit number
        that every CAS of the farm computes alike and no other farm can guess."""
        digest = hmac.new(self.cas.config.farm_key, f"{phase}\0{user}\0{device_id}".encode(), hashlib.sha256)
        return str(int.from_bytes(digest.digest()[:4], "big") or 1)  # 0 means "no key" on the wire

    def _is_final_policy_key(self, eas: EasRequest, request: web.BaseRequest) -> bool:
        given = request.headers.get("X-MS-PolicyKey", "")
        final = self.policy_key("final", eas.user, eas.device_id)
        # compare_digest takes ASCII strings only (it raises on others); a policy key is decimal digits.
        return given.isascii() and hmac.compare_digest(given, final)

    async def _provision(self, eas: EasRequest, tree: Element | None, ctx: RequestContext) -> web.Response:
        policy = None if tree is None else tree.find("Provision:Policies/Provision:Policy")
        if tree is None or tree.tag != "Provision:Provision" or policy is None:
            raise Answer(_wbxml(E("Provision:Provision", E("Provision:Status", "2"))), "Provision: no Policy")
        reply: list[Element] = []
        if tree.find("Settings:DeviceInformation") is not None:  # 14.1 devices describe themselves here
            reply.append(E("Settings:DeviceInformation", E("Settings:Status", "1")))
        policy_type = policy.findtext("Provision:PolicyType") or ""
        if policy_type != POLICY_TYPE:
            raise Answer(_provision_reply(reply, policy_type, "3"), f"Provision: policy type {policy_type!r}")
        acknowledged = policy.findtext("Provision:PolicyKey")
        if acknowledged is None:  # phase 1: hand out the policy and a temporary key
            temporary = self.policy_key("temporary", eas.user, eas.device_id)
            document = E("Provision:EASProvisionDoc", *(E(f"Provision:{n}", v) for n, v in POLICY_SETTINGS))
            return _provision_reply(reply, policy_type, "1", temporary, E("Provision:Data", document))
        # Phase 2: the device acknowledges with the temporary key and gets the final one (again, if it
        # acknowledges twice: the final key is a pure function of the device).
        if acknowledged not in (
            self.policy_key("temporary", eas.user, eas.device_id),
            self.policy_key("final", eas.user, eas.device_id),
        ):
            raise Answer(_provision_reply(reply, policy_type, "5"), "Provision: unknown policy key")
        return _provision_reply(reply, policy_type, "1", self.policy_key("final", eas.user, eas.device_id))

    # --- FolderSync (MS-ASCMD 2.2.1.5) ---

    async def _folder_sync(self, eas: EasRequest, tree: Element | None, ctx: RequestContext) -> web.Response:
        sync_key = None
        if tree is not None and tree.tag == "FolderHierarchy:FolderSync":
            sync_key = tree.findtext("FolderHierarchy:SyncKey")
        if sync_key is None:
            raise Answer(_folder_sync_status("10"), "FolderSync: no SyncKey")
        adds = []
        if sync_key == "0":  # a new partnership: the whole hierarchy
            adds = [
                E(
                    "FolderHierarchy:Add",
                    E("FolderHierarchy:ServerId", server_id),
                    E("FolderHierarchy:ParentId", "0"),
                    E("FolderHierarchy:DisplayName", name),
                    E("FolderHierarchy:Type", str(folder_type)),
                )
                for server_id, name, folder_type, _ in FOLDERS
            ]
        elif self.cas.farm_sealer.unseal(sync_key) != {"h": HIERARCHY_VERSION}:
            raise Answer(_folder_sync_status("9"), "FolderSync: invalid sync key")
        return _wbxml(
            E(
                "FolderHierarchy:FolderSync",
                E("FolderHierarchy:Status", "1"),
                E("FolderHierarchy:SyncKey", self.cas.farm_sealer.seal({"h": HIERARCHY_VERSION})),
                E("FolderHierarchy:Changes", E("FolderHierarchy:Count", str(len(adds))), *adds),
            )
        )

    # --- Sync (MS-ASCMD 2.2.1.21) ---

    async def _sync(self, eas: EasRequest, tree: Element | None, ctx: RequestContext) -> web.Response:
        if tree is None:  # an empty Sync repeats the last one, which this mock does not keep
            raise Answer(_wbxml(E("AirSync:Sync", E("AirSync:Status", "13"))), "Sync: empty request")
        collections = tree.findall("AirSync:Collections/AirSync:Collection")
        if tree.tag != "AirSync:Sync" or not collections:
            raise Answer(_wbxml(E("AirSync:Sync", E("AirSync:Status", "4"))), "Sync: no Collection")
        window = _window_size(tree.findtext("AirSync:WindowSize"))
        replies, problems = [], []
        for collection in collections:
            reply, problem = self._sync_collection(eas.user, collection, window)
            replies.append(reply)
            if problem:
                problems.append(problem)
        response = _wbxml(E("AirSync:Sync", E("AirSync:Collections", *replies)))
        if problems:
            raise Answer(response, "Sync: " + "; ".join(problems))
        return response

    def _sync_collection(self, user: str, collection: Element, window: int) -> tuple[Element, str]:
        """The reply for one collection, and what was wrong with it ("" if nothing)."""
        sync_key = collection.findtext("AirSync:SyncKey")
        collection_id = collection.findtext("AirSync:CollectionId")
        if sync_key is None or collection_id is None:
            return _collection_status(sync_key, collection_id, "4"), "collection without SyncKey/CollectionId"
        if collection_id not in FOLDER_IDS:
            return _collection_status(sync_key, collection_id, "8"), f"no collection {collection_id[:20]!r}"
        newest = self.newest_message(user)
        if sync_key == "0":  # a new partnership: the next Sync brings what is already in the folder
            new_key = self._item_sync_key(newest - INITIAL_ITEMS if collection_id == INBOX_ID else newest)
            return _collection_status(new_key, collection_id, "1"), ""
        watermark = self._watermark(sync_key, newest)
        if watermark is None:
            return _collection_status(sync_key, collection_id, "3"), "invalid or stale sync key"
        if collection_id == INBOX_ID:
            last = min(newest, watermark + _window_size(collection.findtext("AirSync:WindowSize"), window))
        else:  # nothing else ever changes; the key still moves on, so it never goes stale
            last = newest
        children = [
            E("AirSync:SyncKey", self._item_sync_key(last)),
            E("AirSync:CollectionId", collection_id),
            E("AirSync:Status", "1"),
        ]
        if last > watermark and collection_id == INBOX_ID:
            messages = (self._message(user, n) for n in range(watermark + 1, last + 1))
            children.append(E("AirSync:Commands", *messages))
        if last < newest:
            children.append(E("AirSync:MoreAvailable"))
        client_adds = collection.findall("AirSync:Commands/AirSync:Add")
        if client_adds:  # acknowledge what the device created; its changes and deletions need no answer
            children.append(
                E("AirSync:Responses", *(_client_add_reply(collection_id, a) for a in client_adds))
            )
        return E("AirSync:Collection", *children), ""

    def _item_sync_key(self, watermark: int) -> str:
        return self.cas.farm_sealer.seal({"w": watermark})

    def _watermark(self, sync_key: str, newest: int) -> int | None:
        """The watermark a sync key holds, or None for a key of another farm, a FolderSync key, garbage,
        a watermark from the future or one older than the mailbox keeps sync state for."""
        data = self.cas.farm_sealer.unseal(sync_key)
        watermark = data.get("w") if isinstance(data, dict) else None
        if type(watermark) is not int or not newest - SYNC_STATE_ITEMS <= watermark <= newest:
            return None
        return watermark

    # --- the synthesized Inbox ---

    def _phase(self, user: str) -> float:
        """Where in the mail interval this user's messages arrive (0..1), so users are not in step."""
        return int.from_bytes(hashlib.sha256(user.encode()).digest()[:4], "big") / 2**32

    def newest_message(self, user: str) -> int:
        """The number of the newest message in the user's Inbox now."""
        interval = self.cas.scaled(MAIL_INTERVAL_S)
        return math.floor((time.time() - _EPOCH) / interval - self._phase(user))

    def message_arrival(self, user: str, number: int) -> float:
        """The wall-clock time message `number` arrives in the user's Inbox."""
        return _EPOCH + (number + self._phase(user)) * self.cas.scaled(MAIL_INTERVAL_S)

    def _message(self, user: str, number: int) -> Element:
        """Message `number` of the user's Inbox, the same on every CAS."""
        sender = f"sender{number % 50 + 1}@caslab.test"
        arrival = datetime.fromtimestamp(self.message_arrival(user, number), UTC)
        body = f"Message {number} for {user}.\r\n\r\n" + "This is a synthesized message body line.\r\n" * 12
        return E(
            "AirSync:Add",
            E("AirSync:ServerId", f"{INBOX_ID}:{number}"),
            E(
                "AirSync:ApplicationData",
                E("Email:To", f'"{user}" <{user}>'),
                E("Email:From", f'"Sender {number % 50 + 1}" <{sender}>'),
                E("Email:Subject", f"Lab message {number}"),
                E("Email:DateReceived", arrival.strftime("%Y-%m-%dT%H:%M:%S.000Z")),
                E("Email:DisplayTo", user),
                E("Email:Importance", "1"),
                E("Email:Read", "0"),
                E(
                    "AirSyncBase:Body",
                    E("AirSyncBase:Type", "1"),
                    E("AirSyncBase:EstimatedDataSize", str(len(body.encode()))),
                    E("AirSyncBase:Data", body),
                ),
                E("Email:MessageClass", "IPM.Note"),
                E("Email:InternetCPID", "65001"),
                E("AirSyncBase:NativeBodyType", "1"),
            ),
        )

    # --- Ping (MS-ASCMD 2.2.1.13) ---

    async def _ping(self, eas: EasRequest, tree: Element | None, ctx: RequestContext) -> web.Response:
        cache = self._devices.get((eas.user, eas.device_id))
        cached = cache.ping if cache is not None else None
        params = self._ping_params(tree, cached)
        if cache is not None:
            cache.ping = params
        asked = detail_with("Ping", HEARTBEAT_FIELD, params.heartbeat_s)
        ctx.note(ctx.session_key, ctx.state, asked)
        heartbeat_ends = time.time() + self.cas.scaled(params.heartbeat_s)
        wake_at = heartbeat_ends
        if INBOX_ID in params.folders:
            next_message = self.message_arrival(eas.user, self.newest_message(eas.user) + 1)
            wake_at = min(wake_at, next_message)
        try:
            await asyncio.wait_for(self._closing.wait(), timeout=max(0.0, wake_at - time.time()))
        except TimeoutError:
            closing = False
        else:
            closing = True
        if _peer_closed(eas.http):
            cut = detail_with(PEER_CLOSED, HEARTBEAT_FIELD, params.heartbeat_s)
            ctx.note(ctx.session_key, ctx.state, cut)
            return web.Response(status=499)  # never sent: the ledger's status for a request nobody waits for
        if closing:
            raise Answer(
                web.Response(status=503, text="503 - Service Unavailable"), "Ping: CAS stopping", ctx.state
            )
        if wake_at < heartbeat_ends:
            folders = E("Ping:Folders", E("Ping:Folder", INBOX_ID))
            return _wbxml(E("Ping:Ping", E("Ping:Status", "2"), folders))
        return _wbxml(E("Ping:Ping", E("Ping:Status", "1")))

    def _ping_params(self, tree: Element | None, cached: PingParams | None) -> PingParams:
        """The heartbeat and folders of a Ping; left-out parts come from the device's previous Ping."""
        if tree is not None and tree.tag != "Ping:Ping":
            raise Answer(_ping_status("4"), "Ping: not a Ping")
        heartbeat_text = None if tree is None else tree.findtext("Ping:HeartbeatInterval")
        folders = (
            ()
            if tree is None
            else tuple(f.findtext("Ping:Id") or "" for f in tree.findall("Ping:Folders/Ping:Folder"))
        )
        if cached is None and (heartbeat_text is None or not folders):
            raise Answer(_ping_status("3"), "Ping: parameters missing and none cached")
        if heartbeat_text is None:
            heartbeat = cached.heartbeat_s  # type: ignore[union-attr]
        elif heartbeat_text.isascii() and heartbeat_text.isdigit() and len(heartbeat_text) < 10:
            heartbeat = int(heartbeat_text)
        else:
            raise Answer(_ping_status("4"), "Ping: HeartbeatInterval not a number")
        low, high = self.cas.config.eas_heartbeat_min_s, self.cas.config.eas_heartbeat_max_s
        if not low <= heartbeat <= high:
            limit = math.ceil(low) if heartbeat < low else math.floor(high)
            reply = E("Ping:Ping", E("Ping:Status", "5"), E("Ping:HeartbeatInterval", str(limit)))
            raise Answer(_wbxml(reply), f"Ping: heartbeat {heartbeat} s out of range")
        folders = folders or cached.folders  # type: ignore[union-attr]
        if len(folders) > MAX_PING_FOLDERS:
            reply = E("Ping:Ping", E("Ping:Status", "6"), E("Ping:MaxFolders", str(MAX_PING_FOLDERS)))
            raise Answer(_wbxml(reply), f"Ping: {len(folders)} folders")
        if not FOLDER_IDS.issuperset(folders):
            raise Answer(_ping_status("7"), "Ping: unknown folder (hierarchy sync required)")
        return PingParams(heartbeat, folders)


def _peer_closed(request: web.BaseRequest) -> bool:
    """Whether the other side closed the request's connection (aiohttp drops a closed transport)."""
    return request.transport is None or request.transport.is_closing()


# --- response builders ---


def _bad_request() -> web.Response:
    return web.Response(status=400, text="400 - Bad Request")


def _wbxml(tree: Element) -> web.Response:
    return web.Response(
        body=wbxml.encode(tree), content_type=WBXML_TYPE, headers={"MS-Server-ActiveSync": SERVER_VERSION}
    )


def _provision_reply(
    before: list[Element], policy_type: str, status: str, key: str | None = None, data: Element | None = None
) -> web.Response:
    policy = [E("Provision:PolicyType", policy_type), E("Provision:Status", status)]
    if key is not None:
        policy.append(E("Provision:PolicyKey", key))
    if data is not None:
        policy.append(data)
    policies = E("Provision:Policies", E("Provision:Policy", *policy))
    return _wbxml(E("Provision:Provision", *before, E("Provision:Status", "1"), policies))


def _folder_sync_status(status: str) -> web.Response:
    return _wbxml(E("FolderHierarchy:FolderSync", E("FolderHierarchy:Status", status)))


def _ping_status(status: str) -> web.Response:
    return _wbxml(E("Ping:Ping", E("Ping:Status", status)))


def _collection_status(sync_key: str | None, collection_id: str | None, status: str) -> Element:
    children = [E("AirSync:SyncKey", sync_key)] if sync_key is not None else []
    if collection_id is not None:
        children.append(E("AirSync:CollectionId", collection_id))
    return E("AirSync:Collection", *children, E("AirSync:Status", status))


def _window_size(text: str | None, default: int = DEFAULT_WINDOW) -> int:
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 6:
        return default
    return min(max(int(text), 1), MAX_WINDOW)


def _client_add_reply(collection_id: str, add: Element) -> Element:
    client_id = add.findtext("AirSync:ClientId") or ""
    server_id = f"{collection_id}:c{hashlib.sha256(client_id.encode()).hexdigest()[:12]}"
    return E(
        "AirSync:Add",
        E("AirSync:ClientId", client_id),
        E("AirSync:ServerId", server_id),
        E("AirSync:Status", "1"),
    )
