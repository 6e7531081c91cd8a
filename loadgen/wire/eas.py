"""Exchange ActiveSync as a device speaks it: pure helpers (no I/O) for the eas-device client kind.

Every request is `POST /Microsoft-Server-ActiveSync?Cmd=..&User=..&DeviceId=..&DeviceType=..` with Basic
`Authorization`, `MS-ASProtocolVersion`, a WBXML body and, once provisioned, `X-MS-PolicyKey`
([MS-ASHTTP]). A device's life on Exchange 2010:
1. `options(device)`: which protocol versions and commands the server has;
2. `provision(device)` -> a temporary policy key; `provision_ack(device, temporary)` -> the final key,
   which every later request carries. HTTP 449 on any later request means: provision again;
3. `folder_sync(device, key)` -> the folder hierarchy and a FolderSync key;
4. `sync(device, key, [(folder, "0")])` -> a sync key per folder; then `sync(...)` with those keys ->
   new messages, again while the answer says `more_available`;
5. `ping(device, key, heartbeat_s, folders)` hangs until the heartbeat ends (Status 1) or a watched
   folder changes (Status 2: Sync the folders it names), then the device pings again.
`parse(command, body)` reads any answer; `classify(...)` says ok, cold (served, but the CAS had to warm
up for this device, which was served elsewhere before: the soft break of EAS) or error.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from caslab.wbxml import E, Element, WbxmlError, decode, encode

PATH = "/Microsoft-Server-ActiveSync"
WBXML_TYPE = "application/vnd.ms-sync.wbxml"
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"
NEEDS_PROVISIONING = 449
PING_OK = (1, 2)  # 1: heartbeat ended without changes, 2: changes
# FolderHierarchy Type -> the class a Ping names the folder with ([MS-ASCMD] 2.2.3.186.3).
FOLDER_CLASSES = {
    2: "Email", 3: "Email", 4: "Email", 5: "Email", 6: "Email", 12: "Email",
    7: "Tasks", 15: "Tasks", 8: "Calendar", 13: "Calendar", 9: "Contacts", 14: "Contacts",
    10: "Notes", 17: "Notes",
}  # fmt: skip
INBOX_TYPE = 2


# An iPhone 4S on iOS 6.1 (what its ActiveSync requests and IIS logs name it).
IPHONE_USER_AGENT = "Apple-iPhone4C1/1002.329"


@dataclass(frozen=True)
class Device:
    """One phone of one user. `device_id` is 1-32 letters and digits, unique per device."""

    user: str
    password: str
    device_id: str
    device_type: str = "iPhone"
    protocol_version: str = "14.1"
    user_agent: str = IPHONE_USER_AGENT
    model: str = "iPhone"

    def __post_init__(self) -> None:
        if not (0 < len(self.device_id) <= 32 and self.device_id.isascii() and self.device_id.isalnum()):
            raise ValueError(f"DeviceId must be 1-32 letters and digits, not {self.device_id!r}")

    @property
    def authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()


@dataclass(frozen=True)
class EasRequest:
    """One request ready to send: `path` includes the query and is relative to the VIP's base URL."""

    command: str  # "OPTIONS" for the OPTIONS request, else the Cmd
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


# --- requests ------------------------------------------------------------------------------------


def options(device: Device) -> EasRequest:
    headers = {"Authorization": device.authorization, "User-Agent": device.user_agent}
    return EasRequest("OPTIONS", "OPTIONS", PATH, headers)


def provision(device: Device) -> EasRequest:
    """Phase 1: ask for the policy. A 14.1 device describes itself in the same request."""
    content: list[Element] = []
    if device.protocol_version == "14.1":
        about = E(
            "Settings:Set",
            E("Settings:Model", device.model),
            E("Settings:FriendlyName", f"{device.model} {device.device_id[-4:]}"),
            E("Settings:OS", device.device_type),
            E("Settings:UserAgent", device.user_agent),
        )
        content.append(E("Settings:DeviceInformation", about))
    policy = E("Provision:Policy", E("Provision:PolicyType", POLICY_TYPE))
    return _post(device, "Provision", E("Provision:Provision", *content, E("Provision:Policies", policy)))


def provision_ack(device: Device, temporary_key: str) -> EasRequest:
    """Phase 2: say the policy is applied (Status 1), quoting the temporary key, to get the final key."""
    policy = E(
        "Provision:Policy",
        E("Provision:PolicyType", POLICY_TYPE),
        E("Provision:PolicyKey", temporary_key),
        E("Provision:Status", "1"),
    )
    tree = E("Provision:Provision", E("Provision:Policies", policy))
    return _post(device, "Provision", tree, policy_key=temporary_key)


def folder_sync(device: Device, policy_key: str, sync_key: str = "0") -> EasRequest:
    tree = E("FolderHierarchy:FolderSync", E("FolderHierarchy:SyncKey", sync_key))
    return _post(device, "FolderSync", tree, policy_key=policy_key)


def sync(
    device: Device, policy_key: str, collections: Sequence[tuple[str, str]], window_size: int = 25
) -> EasRequest:
    """Sync the folders given as (folder ServerId, sync key); key "0" starts a folder's partnership."""
    items = []
    for collection_id, sync_key in collections:
        parts = [E("AirSync:SyncKey", sync_key), E("AirSync:CollectionId", collection_id)]
        if sync_key != "0":  # a first Sync cannot ask for changes ([MS-ASCMD] 2.2.3.84)
            parts.append(E("AirSync:GetChanges"))
            parts.append(E("AirSync:WindowSize", str(window_size)))
            preference = E(
                "AirSyncBase:BodyPreference",
                E("AirSyncBase:Type", "1"),
                E("AirSyncBase:TruncationSize", "32768"),
            )
            parts.append(E("AirSync:Options", E("AirSync:FilterType", "3"), preference))
        items.append(E("AirSync:Collection", *parts))
    tree = E("AirSync:Sync", E("AirSync:Collections", *items))
    return _post(device, "Sync", tree, policy_key=policy_key)


def ping(device: Device, policy_key: str, heartbeat_s: int, folders: Sequence[tuple[str, str]]) -> EasRequest:
    """Watch the folders given as (ServerId, class), e.g. ("5", "Email"), for up to `heartbeat_s`."""
    watched = (E("Ping:Folder", E("Ping:Id", fid), E("Ping:Class", cls)) for fid, cls in folders)
    tree = E("Ping:Ping", E("Ping:HeartbeatInterval", str(heartbeat_s)), E("Ping:Folders", *watched))
    return _post(device, "Ping", tree, policy_key=policy_key)


def _post(device: Device, command: str, tree: Element, policy_key: str | None = None) -> EasRequest:
    query = urlencode(
        {"Cmd": command, "User": device.user, "DeviceId": device.device_id, "DeviceType": device.device_type}
    )
    headers = {
        "Authorization": device.authorization,
        "MS-ASProtocolVersion": device.protocol_version,
        "Content-Type": WBXML_TYPE,
        "User-Agent": device.user_agent,
        "Accept-Language": "en-us",
    }
    if policy_key is not None:
        headers["X-MS-PolicyKey"] = policy_key
    return EasRequest(command, "POST", f"{PATH}?{query}", headers, encode(tree))


# --- answers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProvisionAnswer:
    status: int  # of the Provision command
    policy_status: int | None  # of the policy (1 = ok, 3 = unknown type, 5 = unknown key...)
    policy_key: str | None

    @property
    def ok(self) -> bool:
        return self.status == 1 and self.policy_status == 1 and bool(self.policy_key)

    @property
    def problem(self) -> str:
        if self.status != 1:
            return f"Provision status {self.status}"
        return "" if self.ok else f"Provision policy status {self.policy_status}"


@dataclass(frozen=True)
class Folder:
    server_id: str
    parent_id: str
    name: str
    type: int

    @property
    def sync_class(self) -> str | None:
        return FOLDER_CLASSES.get(self.type)


@dataclass(frozen=True)
class FolderSyncAnswer:
    status: int  # 1 ok, 9 invalid sync key (start again with "0")
    sync_key: str | None
    folders: tuple[Folder, ...]  # the folders added since the sync key sent

    @property
    def ok(self) -> bool:
        return self.status == 1

    @property
    def problem(self) -> str:
        return "" if self.ok else f"FolderSync status {self.status}"

    @property
    def inbox(self) -> Folder | None:
        return next((f for f in self.folders if f.type == INBOX_TYPE), None)


@dataclass(frozen=True)
class CollectionAnswer:
    collection_id: str | None
    sync_key: str | None
    status: int  # 1 ok, 3 invalid sync key (start the folder again with "0"), 8 no such folder
    added: tuple[str, ...]  # ServerIds of the items the server added
    more_available: bool


@dataclass(frozen=True)
class SyncAnswer:
    status: int | None  # a whole-request error (4 protocol error, 13 empty request), else None
    collections: tuple[CollectionAnswer, ...]

    @property
    def ok(self) -> bool:
        return self.status is None and all(c.status == 1 for c in self.collections)

    @property
    def problem(self) -> str:
        if self.status is not None:
            return f"Sync status {self.status}"
        bad = [f"{c.collection_id}: {c.status}" for c in self.collections if c.status != 1]
        return f"Sync collection status {', '.join(bad)}" if bad else ""


@dataclass(frozen=True)
class PingAnswer:
    status: int
    changed: tuple[str, ...]  # folder ServerIds with changes (Status 2)
    heartbeat_limit_s: int | None  # the allowed minimum or maximum (Status 5)

    @property
    def ok(self) -> bool:
        return self.status in PING_OK

    @property
    def problem(self) -> str:
        return "" if self.ok else f"Ping status {self.status}"


Answer = ProvisionAnswer | FolderSyncAnswer | SyncAnswer | PingAnswer


def parse_provision(body: bytes) -> ProvisionAnswer:
    tree = _root(body, "Provision:Provision")
    policy = tree.find("Provision:Policies/Provision:Policy")
    policy_status = None if policy is None else _int(policy.findtext("Provision:Status"))
    policy_key = None if policy is None else policy.findtext("Provision:PolicyKey")
    return ProvisionAnswer(_status(tree, "Provision:Status"), policy_status, policy_key)


def parse_folder_sync(body: bytes) -> FolderSyncAnswer:
    tree = _root(body, "FolderHierarchy:FolderSync")
    folders = tuple(
        Folder(
            server_id=add.findtext("FolderHierarchy:ServerId") or "",
            parent_id=add.findtext("FolderHierarchy:ParentId") or "",
            name=add.findtext("FolderHierarchy:DisplayName") or "",
            type=_int(add.findtext("FolderHierarchy:Type")) or 0,
        )
        for add in tree.findall("FolderHierarchy:Changes/FolderHierarchy:Add")
    )
    return FolderSyncAnswer(
        _status(tree, "FolderHierarchy:Status"), tree.findtext("FolderHierarchy:SyncKey"), folders
    )


def parse_sync(body: bytes) -> SyncAnswer:
    tree = _root(body, "AirSync:Sync")
    collections = tuple(
        CollectionAnswer(
            collection_id=c.findtext("AirSync:CollectionId"),
            sync_key=c.findtext("AirSync:SyncKey"),
            status=_status(c, "AirSync:Status"),
            added=tuple(
                a.findtext("AirSync:ServerId") or "" for a in c.findall("AirSync:Commands/AirSync:Add")
            ),
            more_available=c.find("AirSync:MoreAvailable") is not None,
        )
        for c in tree.findall("AirSync:Collections/AirSync:Collection")
    )
    status = _int(tree.findtext("AirSync:Status"))
    return SyncAnswer(status, collections)


def parse_ping(body: bytes) -> PingAnswer:
    tree = _root(body, "Ping:Ping")
    changed = tuple(f.text for f in tree.findall("Ping:Folders/Ping:Folder") if isinstance(f.text, str))
    return PingAnswer(_status(tree, "Ping:Status"), changed, _int(tree.findtext("Ping:HeartbeatInterval")))


PARSERS = {
    "Provision": parse_provision,
    "FolderSync": parse_folder_sync,
    "Sync": parse_sync,
    "Ping": parse_ping,
}


def parse(command: str, body: bytes) -> Answer:
    """The answer to a `command` request. Raises WbxmlError for a body that is not that answer."""
    return PARSERS[command](body)


def classify(http_status: int, cas_state: str = "", answer: Answer | None = None) -> tuple[str, str]:
    """(outcome, detail) of one answer: 'ok', 'cold' (served, but the CAS said its cache for the device
    was cold: `cas_state` is its X-CasLab-State header) or 'error'. 0 means no answer came."""
    if not http_status:
        return "transport", "no answer"
    if http_status == NEEDS_PROVISIONING:
        return "error", "449 provisioning needed"
    if http_status >= 400:
        return "error", f"http {http_status}"
    if answer is not None and not answer.ok:
        return "error", answer.problem
    if cas_state == "cold":
        return "cold", ""
    return "ok", ""


def read(
    request: EasRequest, http_status: int, cas_state: str, body: bytes
) -> tuple[str, str, Answer | None]:
    """classify() for a request's answer, parsing the body when the request has one: (outcome, detail,
    the parsed answer or None)."""
    if request.command not in PARSERS or http_status != 200:
        return (*classify(http_status, cas_state), None)
    try:
        answer = parse(request.command, body)
    except WbxmlError as err:
        return "error", f"bad answer: {err}", None
    return (*classify(http_status, cas_state, answer), answer)


def _root(body: bytes, tag: str) -> Element:
    tree = decode(body)
    if tree.tag != tag:
        raise WbxmlError(f"expected {tag}, got {tree.tag}")
    return tree


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isascii() and text.isdigit() else None


def _status(tree: Element, tag: str) -> int:
    status = _int(tree.findtext(tag))
    if status is None:
        raise WbxmlError(f"{tree.tag} has no {tag}")
    return status
