"""WBXML 1.3 (WAP-192) with the Exchange ActiveSync code pages of [MS-ASWBXML]: the body format of EAS.

A document is a tree of `Element`s whose tags are written "CodePage:Name", e.g. "AirSync:Sync", with the
code page names of MS-ASWBXML. `encode` turns a tree into bytes and `decode` turns bytes back into a tree.

ActiveSync uses a small part of WBXML: header 03 01 6A 00 (version 1.3, unknown public id, UTF-8, empty
string table), tags with or without content, SWITCH_PAGE, END, inline strings (STR_I) and OPAQUE data.
No attributes, entities, string-table references, processing instructions or extension tokens, and no
element mixes text with child elements; `decode` rejects all of those, as it rejects unknown pages and
tags. Any malformed input raises `WbxmlError` and nothing else; decoding is a single forward pass, so it
cannot hang, and nesting is capped so a hostile body cannot exhaust the stack or memory.

Only the code pages the mock CAS and its devices use are here: AirSync (0), Contacts (1), Email (2),
FolderHierarchy (7), Ping (13), Provision (14), AirSyncBase (17) and Settings (18). Token values are those
of MS-ASWBXML section 2.1.2.1; a few tags only older protocol versions use are kept so that such devices
still decode. Where two tag names share one token (Provision 0x10), the 14.1 name is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# Global tokens of WAP-192 section 7.1 that ActiveSync uses.
SWITCH_PAGE, END, STR_I, OPAQUE = 0x00, 0x01, 0x03, 0xC3
# The other global tokens: ENTITY, LITERAL*, EXT_*, PI, STR_T. ActiveSync never sends them.
_UNUSED_GLOBALS = frozenset({0x02, 0x04, 0x40, 0x41, 0x42, 0x43, 0x44, 0x80, 0x81, 0x82, 0x83, 0x84})
_UNUSED_GLOBALS |= {0xC0, 0xC1, 0xC2, 0xC4}
_HAS_CONTENT, _HAS_ATTRIBUTES = 0x40, 0x80
_HEADER = bytes([0x03, 0x01, 0x6A, 0x00])  # WBXML 1.3, unknown public id, charset 106 = UTF-8, no table
_UTF8_MIB = 106
MAX_DEPTH = 64  # deeper than any ActiveSync document; bounds the decoder's stack


class WbxmlError(ValueError):
    """The bytes are not a WBXML document this codec understands, or a tree cannot be encoded."""


@dataclass(frozen=True)
class Element:
    """One element. `text` is a str for inline strings, bytes for opaque data, None when the element is
    empty or has children. Frozen, so trees compare by value (a round trip gives an equal tree)."""

    tag: str
    children: tuple[Element, ...] = ()
    text: str | bytes | None = None

    def find(self, path: str) -> Element | None:
        """The first descendant along `path` ("Page:Name/Page:Name..." below this element), or None."""
        return next(self.iterfind(path), None)

    def findall(self, path: str) -> list[Element]:
        return list(self.iterfind(path))

    def iterfind(self, path: str) -> Iterator[Element]:
        first, _, rest = path.partition("/")
        for child in self.children:
            if child.tag == first:
                if rest:
                    yield from child.iterfind(rest)
                else:
                    yield child

    def findtext(self, path: str) -> str | None:
        """The string content of the first element along `path`: "" for an empty element, None if there is
        no such element or it holds opaque data or children."""
        found = self.find(path)
        if found is None or found.children or isinstance(found.text, bytes):
            return None
        return found.text or ""


def E(tag: str, *content: Element | str | bytes) -> Element:  # the usual element-factory name
    """Build an element: E("AirSync:SyncKey", "0"), E("AirSync:Collections", child, child...)."""
    if len(content) == 1 and isinstance(content[0], str | bytes):
        return Element(tag, (), content[0])
    children = tuple(c for c in content if isinstance(c, Element))
    if len(children) != len(content):
        raise WbxmlError(f"{tag}: give either one text or child elements")
    return Element(tag, children)


# MS-ASWBXML section 2.1.2.1: code page number -> (code page name, {token: tag name}).
CODE_PAGES: dict[int, tuple[str, dict[int, str]]] = {
    0: (
        "AirSync",
        {
            0x05: "Sync", 0x06: "Responses", 0x07: "Add", 0x08: "Change", 0x09: "Delete", 0x0A: "Fetch",
            0x0B: "SyncKey", 0x0C: "ClientId", 0x0D: "ServerId", 0x0E: "Status", 0x0F: "Collection",
            0x10: "Class", 0x11: "Version", 0x12: "CollectionId", 0x13: "GetChanges",
            0x14: "MoreAvailable", 0x15: "WindowSize", 0x16: "Commands", 0x17: "Options",
            0x18: "FilterType", 0x19: "Truncation", 0x1A: "RtfTruncation", 0x1B: "Conflict",
            0x1C: "Collections", 0x1D: "ApplicationData", 0x1E: "DeletesAsMoves", 0x1F: "NotifyGUID",
            0x20: "Supported", 0x21: "SoftDelete", 0x22: "MIMESupport", 0x23: "MIMETruncation",
            0x24: "Wait", 0x25: "Limit", 0x26: "Partial", 0x27: "ConversationMode", 0x28: "MaxItems",
            0x29: "HeartbeatInterval",
        },
    ),
    1: (
        "Contacts",
        {
            0x05: "Anniversary", 0x06: "AssistantName", 0x07: "AssistantPhoneNumber", 0x08: "Birthday",
            0x09: "Body", 0x0A: "BodySize", 0x0B: "BodyTruncated", 0x0C: "Business2PhoneNumber",
            0x0D: "BusinessAddressCity", 0x0E: "BusinessAddressCountry",
            0x0F: "BusinessAddressPostalCode", 0x10: "BusinessAddressState",
            0x11: "BusinessAddressStreet", 0x12: "BusinessFaxNumber", 0x13: "BusinessPhoneNumber",
            0x14: "CarPhoneNumber", 0x15: "Categories", 0x16: "Category", 0x17: "Children",
            0x18: "Child", 0x19: "CompanyName", 0x1A: "Department", 0x1B: "Email1Address",
            0x1C: "Email2Address", 0x1D: "Email3Address", 0x1E: "FileAs", 0x1F: "FirstName",
            0x20: "Home2PhoneNumber", 0x21: "HomeAddressCity", 0x22: "HomeAddressCountry",
            0x23: "HomeAddressPostalCode", 0x24: "HomeAddressState", 0x25: "HomeAddressStreet",
            0x26: "HomeFaxNumber", 0x27: "HomePhoneNumber", 0x28: "JobTitle", 0x29: "LastName",
            0x2A: "MiddleName", 0x2B: "MobilePhoneNumber", 0x2C: "OfficeLocation",
            0x2D: "OtherAddressCity", 0x2E: "OtherAddressCountry", 0x2F: "OtherAddressPostalCode",
            0x30: "OtherAddressState", 0x31: "OtherAddressStreet", 0x32: "PagerNumber",
            0x33: "RadioPhoneNumber", 0x34: "Spouse", 0x35: "Suffix", 0x36: "Title", 0x37: "WebPage",
            0x38: "YomiCompanyName", 0x39: "YomiFirstName", 0x3A: "YomiLastName",
            0x3B: "CompressedRTF", 0x3C: "Picture", 0x3D: "Alias", 0x3E: "WeightedRank",
        },
    ),
    2: (
        "Email",
        {
            0x05: "Attachment", 0x06: "Attachments", 0x07: "AttName", 0x08: "AttSize", 0x09: "Att0Id",
            0x0A: "AttMethod", 0x0B: "AttRemoved", 0x0C: "Body", 0x0D: "BodySize",
            0x0E: "BodyTruncated", 0x0F: "DateReceived", 0x10: "DisplayName", 0x11: "DisplayTo",
            0x12: "Importance", 0x13: "MessageClass", 0x14: "Subject", 0x15: "Read", 0x16: "To",
            0x17: "Cc", 0x18: "From", 0x19: "ReplyTo", 0x1A: "AllDayEvent", 0x1B: "Categories",
            0x1C: "Category", 0x1D: "DTStamp", 0x1E: "EndTime", 0x1F: "InstanceType",
            0x20: "BusyStatus", 0x21: "Location", 0x22: "MeetingRequest", 0x23: "Organizer",
            0x24: "RecurrenceId", 0x25: "Reminder", 0x26: "ResponseRequested", 0x27: "Recurrences",
            0x28: "Recurrence", 0x29: "Recurrence_Type", 0x2A: "Recurrence_Until",
            0x2B: "Recurrence_Occurrences", 0x2C: "Recurrence_Interval", 0x2D: "Recurrence_DayOfWeek",
            0x2E: "Recurrence_DayOfMonth", 0x2F: "Recurrence_WeekOfMonth",
            0x30: "Recurrence_MonthOfYear", 0x31: "StartTime", 0x32: "Sensitivity", 0x33: "TimeZone",
            0x34: "GlobalObjId", 0x35: "ThreadTopic", 0x36: "MIMEData", 0x37: "MIMETruncated",
            0x38: "MIMESize", 0x39: "InternetCPID", 0x3A: "Flag", 0x3B: "FlagStatus",
            0x3C: "ContentClass", 0x3D: "FlagType", 0x3E: "CompleteTime",
            0x3F: "DisallowNewTimeProposal",
        },
    ),
    7: (
        "FolderHierarchy",
        {
            0x05: "Folders", 0x06: "Folder", 0x07: "DisplayName", 0x08: "ServerId", 0x09: "ParentId",
            0x0A: "Type", 0x0B: "Response", 0x0C: "Status", 0x0D: "ContentClass", 0x0E: "Changes",
            0x0F: "Add", 0x10: "Delete", 0x11: "Update", 0x12: "SyncKey", 0x13: "FolderCreate",
            0x14: "FolderDelete", 0x15: "FolderUpdate", 0x16: "FolderSync", 0x17: "Count",
        },
    ),
    13: (
        "Ping",
        {
            0x05: "Ping", 0x06: "AutdState", 0x07: "Status", 0x08: "HeartbeatInterval", 0x09: "Folders",
            0x0A: "Folder", 0x0B: "Id", 0x0C: "Class", 0x0D: "MaxFolders",
        },
    ),
    14: (
        "Provision",
        {
            0x05: "Provision", 0x06: "Policies", 0x07: "Policy", 0x08: "PolicyType", 0x09: "PolicyKey",
            0x0A: "Data", 0x0B: "Status", 0x0C: "RemoteWipe", 0x0D: "EASProvisionDoc",
            0x0E: "DevicePasswordEnabled", 0x0F: "AlphanumericDevicePasswordRequired",
            0x10: "RequireStorageCardEncryption", 0x11: "PasswordRecoveryEnabled",
            0x13: "AttachmentsEnabled", 0x14: "MinDevicePasswordLength",
            0x15: "MaxInactivityTimeDeviceLock", 0x16: "MaxDevicePasswordFailedAttempts",
            0x17: "MaxAttachmentSize", 0x18: "AllowSimpleDevicePassword",
            0x19: "DevicePasswordExpiration", 0x1A: "DevicePasswordHistory", 0x1B: "AllowStorageCard",
            0x1C: "AllowCamera", 0x1D: "RequireDeviceEncryption", 0x1E: "AllowUnsignedApplications",
            0x1F: "AllowUnsignedInstallationPackages", 0x20: "MinDevicePasswordComplexCharacters",
            0x21: "AllowWiFi", 0x22: "AllowTextMessaging", 0x23: "AllowPOPIMAPEmail",
            0x24: "AllowBluetooth", 0x25: "AllowIrDA", 0x26: "RequireManualSyncWhenRoaming",
            0x27: "AllowDesktopSync", 0x28: "MaxCalendarAgeFilter", 0x29: "AllowHTMLEmail",
            0x2A: "MaxEmailAgeFilter", 0x2B: "MaxEmailBodyTruncationSize",
            0x2C: "MaxEmailHTMLBodyTruncationSize", 0x2D: "RequireSignedSMIMEMessages",
            0x2E: "RequireEncryptedSMIMEMessages", 0x2F: "RequireSignedSMIMEAlgorithm",
            0x30: "RequireEncryptionSMIMEAlgorithm", 0x31: "AllowSMIMEEncryptionAlgorithmNegotiation",
            0x32: "AllowSMIMESoftCerts", 0x33: "AllowBrowser", 0x34: "AllowConsumerEmail",
            0x35: "AllowRemoteDesktop", 0x36: "AllowInternetSharing",
            0x37: "UnapprovedInROMApplicationList", 0x38: "ApplicationName",
            0x39: "ApprovedApplicationList", 0x3A: "Hash",
        },
    ),
    17: (
        "AirSyncBase",
        {
            0x05: "BodyPreference", 0x06: "Type", 0x07: "TruncationSize", 0x08: "AllOrNone",
            0x0A: "Body", 0x0B: "Data", 0x0C: "EstimatedDataSize", 0x0D: "Truncated",
            0x0E: "Attachments", 0x0F: "Attachment", 0x10: "DisplayName", 0x11: "FileReference",
            0x12: "Method", 0x13: "ContentId", 0x14: "ContentLocation", 0x15: "IsInline",
            0x16: "NativeBodyType", 0x17: "ContentType", 0x18: "Preview", 0x19: "BodyPartPreference",
            0x1A: "BodyPart", 0x1B: "Status",
        },
    ),
    18: (
        "Settings",
        {
            0x05: "Settings", 0x06: "Status", 0x07: "Get", 0x08: "Set", 0x09: "Oof", 0x0A: "OofState",
            0x0B: "StartTime", 0x0C: "EndTime", 0x0D: "OofMessage", 0x0E: "AppliesToInternal",
            0x0F: "AppliesToExternalKnown", 0x10: "AppliesToExternalUnknown", 0x11: "Enabled",
            0x12: "ReplyMessage", 0x13: "BodyType", 0x14: "DevicePassword", 0x15: "Password",
            0x16: "DeviceInformation", 0x17: "Model", 0x18: "IMEI", 0x19: "FriendlyName", 0x1A: "OS",
            0x1B: "OSLanguage", 0x1C: "PhoneNumber", 0x1D: "UserInformation", 0x1E: "EmailAddresses",
            0x1F: "SMTPAddress", 0x20: "UserAgent", 0x21: "EnableOutboundSMS", 0x22: "MobileOperator",
            0x23: "PrimarySmtpAddress", 0x24: "Accounts", 0x25: "Account", 0x26: "AccountId",
            0x27: "AccountName", 0x28: "UserDisplayName", 0x29: "SendDisabled",
            0x2B: "RightsManagementInformation",
        },
    ),
}  # fmt: skip

# "Page:Name" -> (page, token), for the encoder.
TOKENS: dict[str, tuple[int, int]] = {
    f"{page_name}:{tag}": (page, token)
    for page, (page_name, tags) in CODE_PAGES.items()
    for token, tag in tags.items()
}


def encode(root: Element) -> bytes:
    """The WBXML bytes of the tree. Raises WbxmlError for an unknown tag, a string holding NUL (inline
    strings are NUL-terminated) or text that is not valid Unicode, an element with both text and
    children, or nesting deeper than MAX_DEPTH."""
    out = bytearray(_HEADER)
    page = 0
    # An explicit stack of (element, depth) instead of recursion; END is pushed as None.
    stack: list[tuple[Element | None, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if element is None:
            out.append(END)
            continue
        if depth > MAX_DEPTH:
            raise WbxmlError(f"nesting deeper than {MAX_DEPTH}")
        try:
            tag_page, token = TOKENS[element.tag]
        except KeyError:
            raise WbxmlError(f"unknown tag {element.tag!r}") from None
        if element.children and element.text is not None:
            raise WbxmlError(f"{element.tag}: text and child elements together")
        if tag_page != page:
            out += bytes([SWITCH_PAGE, tag_page])
            page = tag_page
        if element.text is None and not element.children:
            out.append(token)
            continue
        out.append(token | _HAS_CONTENT)
        if isinstance(element.text, bytes):
            out.append(OPAQUE)
            out += _mb_uint32(len(element.text))
            out += element.text
            out.append(END)
        elif isinstance(element.text, str):
            if "\0" in element.text:
                raise WbxmlError(f"{element.tag}: inline strings cannot hold NUL")
            try:
                out.append(STR_I)
                out += element.text.encode("utf-8") + b"\0"
            except UnicodeEncodeError as err:
                raise WbxmlError(f"{element.tag}: text is not valid Unicode ({err.reason})") from None
            out.append(END)
        else:
            stack.append((None, depth))
            stack.extend((child, depth + 1) for child in reversed(element.children))
    return bytes(out)


def decode(data: bytes) -> Element:
    """The tree of a WBXML document. Raises WbxmlError (and nothing else) for anything malformed or
    outside what ActiveSync uses."""
    reader = _Reader(data)
    version = reader.byte()
    if version not in (0x01, 0x02, 0x03):  # 1.0 had no charset field; nothing newer than 1.3 exists
        raise WbxmlError(f"unsupported WBXML version byte 0x{version:02x}")
    if reader.mb_uint32() == 0:  # public id given as a string-table index instead
        reader.mb_uint32()
    charset = reader.mb_uint32()
    if charset != _UTF8_MIB:
        raise WbxmlError(f"charset {charset} is not UTF-8 (106)")
    reader.take(reader.mb_uint32())  # the string table: ActiveSync leaves it empty, nothing refers to it

    page = 0
    open_elements: list[_Open] = []
    root: Element | None = None
    data, size = reader.data, len(reader.data)
    while root is None:
        if reader.pos >= size:  # reader.byte() inlined: this loop runs once per token
            raise WbxmlError("truncated document")
        token = data[reader.pos]
        reader.pos += 1
        if token == SWITCH_PAGE:
            page = reader.byte()
            continue
        if token in (END, STR_I, OPAQUE):
            if not open_elements:
                raise WbxmlError(f"token 0x{token:02x} outside the root element")
            current = open_elements[-1]
            if token == STR_I:
                current.add_text(reader.cstring())
            elif token == OPAQUE:
                current.add_text(reader.take(reader.mb_uint32()))
            else:
                finished = open_elements.pop().close()
                if open_elements:
                    open_elements[-1].add_child(finished)
                else:
                    root = finished
            continue
        if token in _UNUSED_GLOBALS:
            raise WbxmlError(f"global token 0x{token:02x} is not used by ActiveSync")
        if token & _HAS_ATTRIBUTES:
            raise WbxmlError("attributes are not used by ActiveSync")
        tag = _tag_name(page, token & 0x3F)
        if token & _HAS_CONTENT:
            if len(open_elements) >= MAX_DEPTH:
                raise WbxmlError(f"nesting deeper than {MAX_DEPTH}")
            open_elements.append(_Open(tag))
        elif open_elements:
            open_elements[-1].add_child(Element(tag))
        else:
            root = Element(tag)
    if not reader.at_end():
        raise WbxmlError("bytes after the root element")
    return root


def _tag_name(page: int, token: int) -> str:
    if page not in CODE_PAGES:
        raise WbxmlError(f"unknown code page {page}")
    page_name, tags = CODE_PAGES[page]
    if token not in tags:
        raise WbxmlError(f"unknown tag 0x{token:02x} in code page {page} ({page_name})")
    return f"{page_name}:{tags[token]}"


def _mb_uint32(value: int) -> bytes:
    """WAP-192's multi-byte unsigned integer: 7 bits a byte, most significant first, high bit = more."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(groups))


class _Open:
    """An element whose END has not been read yet. WBXML may split one text into several tokens, so the
    pieces are collected and joined once, at the end (joining as they come would be quadratic)."""

    __slots__ = ("children", "pieces", "tag")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.children: list[Element] = []
        self.pieces: list[str] | list[bytes] = []

    def add_text(self, piece: str | bytes) -> None:
        if self.children:
            raise WbxmlError(f"{self.tag}: text and child elements together")
        if self.pieces and type(self.pieces[0]) is not type(piece):
            raise WbxmlError(f"{self.tag}: inline string and opaque data together")
        self.pieces.append(piece)  # type: ignore[arg-type]

    def add_child(self, child: Element) -> None:
        if self.pieces:
            raise WbxmlError(f"{self.tag}: text and child elements together")
        self.children.append(child)

    def close(self) -> Element:
        if not self.pieces:
            return Element(self.tag, tuple(self.children))
        joiner = "" if isinstance(self.pieces[0], str) else b""
        return Element(self.tag, (), joiner.join(self.pieces))  # type: ignore[attr-defined]


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise WbxmlError("WBXML input must be bytes")
        self.data = bytes(data)
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos == len(self.data)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise WbxmlError("truncated document")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, count: int) -> bytes:
        if count > len(self.data) - self.pos:
            raise WbxmlError("truncated document")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def mb_uint32(self) -> int:
        value = 0
        for _ in range(5):
            octet = self.byte()
            value = (value << 7) | (octet & 0x7F)
            if not octet & 0x80:
                if value > 0xFFFFFFFF:
                    raise WbxmlError("multi-byte integer above 32 bits")
                return value
        raise WbxmlError("multi-byte integer longer than 5 bytes")

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise WbxmlError("truncated document (unterminated string)")
        raw = self.data[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WbxmlError("inline string is not UTF-8") from None
