"""The made-up content of every mailbox that EWS shows: folders, items and free/busy times, with ids
shaped like Exchange's.

All of it is made from the user's name (and the folder, the item's index, the day), never kept: every
CAS of the farm shows a user the same mailbox, as every CAS of a real farm reads the same mailbox
server. So none of it needs affinity; it is here so that the stateless operations (GetFolder, FindItem,
GetUserAvailability) answer something plausible. The state that does need affinity is in
subscriptions.py.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

from mockcas.services.ews.soap import ERROR_TEXTS, b64, unb64, xs_time

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
FREE_BUSY_VIEWS = ("None", "MergedOnly", "FreeBusy", "FreeBusyMerged", "Detailed", "DetailedMerged")
_BUSY_TYPES = ("Busy", "Tentative", "Busy", "OOF")
_MERGED_CODES = {"Free": 0, "Tentative": 1, "Busy": 2, "OOF": 3}


def _digest(*parts: str, size: int = 16) -> bytes:
    return hashlib.sha1("\x00".join(parts).encode()).digest()[:size]


# ---------------------------------------------------------------------------------------------------
# Ids: base64 blobs shaped like Exchange's, so they can be told apart from garbage.

_FOLDER_ID_PREFIX = b"\x00\x03\x24\x00"  # EWS store ids start 'AAMkA'


def folder_id(user: str, folder: str) -> str:
    return b64(_FOLDER_ID_PREFIX + _digest(user) + folder.encode())


def folder_from_id(user: str, value: str) -> tuple[str | None, str]:
    """(folder name, '') for an id of this user's folder, else (None, the EWS error code)."""
    raw = unb64(value) or b""
    if not raw.startswith(_FOLDER_ID_PREFIX) or len(raw) < 21:
        return None, "ErrorInvalidIdMalformed"
    if raw[4:20] != _digest(user):
        return None, "ErrorAccessDenied"
    name = raw[20:].decode("ascii", "replace")
    return (name, "") if name in FOLDERS else (None, "ErrorFolderNotFound")


def is_mailbox_id(user: str, raw: bytes) -> bool:
    """Whether `raw` is the bytes of one of this user's folder or item ids."""
    if raw.startswith(_FOLDER_ID_PREFIX) and raw[4:20] == _digest(user):
        return raw[20:].decode("ascii", "replace") in FOLDERS
    return len(raw) == 24 and raw[:4] == bytes(4) and any(raw[4:20] == _digest(user, f) for f in FOLDERS)


def change_key(*parts: str) -> str:
    return b64(b"\x01\x00\x00\x00\x16\x00\x00\x00" + _digest(*parts, size=12))


def item_id(user: str, folder: str, index: int) -> str:
    return b64(b"\x00\x00\x00\x00" + _digest(user, folder) + index.to_bytes(4, "little"))


# ---------------------------------------------------------------------------------------------------
# Folders and items.


def folder_counts(user: str, folder: str) -> tuple[int, int, int]:
    """(total items, unread items, child folders): made up, the same for a user on every CAS."""
    if folder in ("root", "msgfolderroot"):
        return 0, 0, len(FOLDERS) - 2
    h = int.from_bytes(_digest(user, folder, size=4), "little")
    total = 5 + h % 150
    return total, (h >> 8) % (total // 4 + 1), 0


# The folder properties a client can ask for (FieldURI "folder:<name>"), in the order the EWS schema puts
# them in a folder element; what each base shape includes besides the id.
FOLDER_PROPERTIES = (
    "ParentFolderId",
    "FolderClass",
    "DisplayName",
    "TotalCount",
    "ChildFolderCount",
    "UnreadCount",
)
SHAPE_PROPERTIES = {
    "IdOnly": frozenset(),
    "Default": frozenset({"DisplayName", "TotalCount", "ChildFolderCount", "UnreadCount"}),
    "AllProperties": frozenset(FOLDER_PROPERTIES),
}
_FOLDER_CLASSES = {"calendar": "IPF.Appointment", "contacts": "IPF.Contact", "tasks": "IPF.Task",
                   "notes": "IPF.StickyNote", "journal": "IPF.Journal"}  # fmt: skip


def folder_xml(user: str, name: str, shape: str, additional: frozenset[str] = frozenset()) -> str:
    """A folder element with the properties of its base shape plus the `additional` ones asked for by
    name (GetFolder's AdditionalProperties: exchangelib asks IdOnly plus the fields it reads)."""
    display, element = FOLDERS[name]
    wanted = SHAPE_PROPERTIES[shape] | additional
    total, unread, children = folder_counts(user, name)
    parent = "root" if name == "msgfolderroot" else "msgfolderroot"
    values = {
        "ParentFolderId": ""
        if name == "root"
        else (f'<t:ParentFolderId Id="{folder_id(user, parent)}" ChangeKey="{change_key(user, parent)}"/>'),
        "FolderClass": ""
        if name in ("root", "msgfolderroot")
        else (f"<t:FolderClass>{_FOLDER_CLASSES.get(name, 'IPF.Note')}</t:FolderClass>"),
        "DisplayName": f"<t:DisplayName>{escape(display)}</t:DisplayName>",
        "TotalCount": f"<t:TotalCount>{total}</t:TotalCount>",
        "ChildFolderCount": f"<t:ChildFolderCount>{children}</t:ChildFolderCount>",
        # Calendar and contacts folders have no unread count in the schema.
        "UnreadCount": ""
        if element in ("CalendarFolder", "ContactsFolder")
        else (f"<t:UnreadCount>{unread}</t:UnreadCount>"),
    }
    ident = f'<t:FolderId Id="{folder_id(user, name)}" ChangeKey="{change_key(user, name)}"/>'
    properties = "".join(values[p] for p in FOLDER_PROPERTIES if p in wanted)
    return f"<t:{element}>{ident}{properties}</t:{element}>"


def item_xml(user: str, folder: str, index: int, shape: str, now: datetime) -> str:
    """Item `index` of a folder: made up from the user, folder and index, so every CAS shows the same."""
    tag = "CalendarItem" if folder == "calendar" else "Message"
    item = item_id(user, folder, index)
    ident = f'<t:ItemId Id="{item}" ChangeKey="{change_key(item)}"/>'
    if shape == "IdOnly":
        return f"<t:{tag}>{ident}</t:{tag}>"
    h = int.from_bytes(_digest(user, folder, str(index), size=4), "little")
    subject = escape(_SUBJECTS[h % len(_SUBJECTS)])
    if tag == "CalendarItem":
        start = (now + timedelta(days=index // 2)).replace(hour=8 + h % 9, minute=0, second=0)
        end = start + timedelta(minutes=30 * (1 + h % 4))
        return (
            f"<t:CalendarItem>{ident}<t:Subject>{subject}</t:Subject><t:HasAttachments>false</t:HasAttachments>"
            f"<t:Start>{xs_time(start)}</t:Start><t:End>{xs_time(end)}</t:End>"
            f"<t:LegacyFreeBusyStatus>Busy</t:LegacyFreeBusyStatus><t:Location>Room {h % 40}</t:Location>"
            "<t:CalendarItemType>Single</t:CalendarItemType></t:CalendarItem>"
        )
    sent = xs_time(now - timedelta(minutes=37 * index + h % 30))
    unread = folder_counts(user, folder)[1]
    return (
        f"<t:Message>{ident}<t:Subject>{subject}</t:Subject><t:Sensitivity>Normal</t:Sensitivity>"
        f"<t:Size>{2000 + h % 60000}</t:Size><t:DateTimeSent>{sent}</t:DateTimeSent>"
        f"<t:DateTimeCreated>{sent}</t:DateTimeCreated>"
        f"<t:HasAttachments>{'true' if h % 5 == 0 else 'false'}</t:HasAttachments>"
        f"<t:From><t:Mailbox><t:Name>User {1 + (h >> 4) % 500}</t:Name></t:Mailbox></t:From>"
        f"<t:IsRead>{'false' if index < unread else 'true'}</t:IsRead></t:Message>"
    )


# ---------------------------------------------------------------------------------------------------
# Free/busy.


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


def free_busy(user: str, start: datetime, end: datetime, interval_min: int, view: str) -> str:
    """One mailbox's FreeBusyResponse for a time window, in the requested view (one of FREE_BUSY_VIEWS)."""
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


def free_busy_error(code: str) -> str:
    """A FreeBusyResponse that failed with an EWS error code (of soap.ERROR_TEXTS)."""
    return (
        '<m:FreeBusyResponse><m:ResponseMessage ResponseClass="Error">'
        f"<m:MessageText>{escape(ERROR_TEXTS[code])}"
        f"</m:MessageText><m:ResponseCode>{code}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>"
        "</m:ResponseMessage></m:FreeBusyResponse>"
    )
