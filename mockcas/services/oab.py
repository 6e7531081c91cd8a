"""OAB web distribution of the mock CAS: `GET /OAB/<guid>/oab.xml` and the `.lzx` files it lists.

Outlook learns the OAB URL from Autodiscover, reads the manifest `oab.xml` (each file's size and SHA-1)
and downloads the files it needs, often in ranges (BITS). In Exchange 2010 these are static files that
every CAS holds a copy of, so OAB needs no affinity. Here the files are made from the farm key, so every
CAS serves identical bytes and identical ETags, and a download whose ranges come from several CAS still
matches the manifest's SHA-1.

With `config.oab_skew` each CAS holds its own copy, made from the farm key and its name (standing for
CAS whose OAB copies were generated at different moments): same file names, different bytes, SHA-1 and
ETag. A ranged request whose `If-Range` is not this CAS's ETag gets the whole file (200, as HTTP says)
and ledger state `foreign`: the client's earlier ranges came from another copy. A client that ignores
If-Range and stitches ranges from two CAS fails the manifest's SHA-1 check.

The `.lzx` files have the real shape of an OAB version 4 download ([MS-OXOAB]): an LZX file header
(version 3.1) and blocks with their CRC-32, holding a Full Details file (OAB_HDR version 0x20, a
metadata record and one record per address book entry). The blocks are stored uncompressed (block flag
0), which the format allows. Ledger: state `none` (session key: the user) for every plain GET.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from mockcas import iis
from mockcas.services import HttpService, RequestContext, register

if TYPE_CHECKING:
    from mockcas.cas import Cas

OAB_VERSION = 32  # 'ver' in the manifest: OAB version 4 (Unicode)
ENTRIES = 2000  # address book entries in the Full Details file (about 250 KB)
BLOCK_MAX = 32 * 1024  # largest LZX block, as Exchange writes them
TEMPLATE_BYTES = 6 * 1024


def oab_guid(farm_key: bytes) -> str:
    """The OAB's id in its URL (`/OAB/<guid>/`): the same on every CAS of a farm."""
    return str(uuid.UUID(bytes=hashlib.sha256(b"oab\x00" + farm_key).digest()[:16]))


@dataclass(frozen=True)
class OabFile:
    name: str  # lower case, as the CAS matches paths
    kind: str  # manifest element: Full or Template ('' for oab.xml itself)
    body: bytes
    uncompressed_size: int
    content_type: str
    etag: str  # IIS style: "<hex>:0"
    last_modified: str  # HTTP date

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.body).hexdigest()


def _lzx_stored(payload: bytes) -> bytes:
    """An OAB LZX file ([MS-OXOAB] 2.11) whose blocks are stored uncompressed (flags 0)."""
    blocks = [struct.pack("<IIII", 3, 1, BLOCK_MAX, len(payload))]
    for offset in range(0, len(payload), BLOCK_MAX):
        chunk = payload[offset : offset + BLOCK_MAX]
        blocks.append(struct.pack("<IIII", 0, len(chunk), len(chunk), zlib.crc32(chunk)) + chunk)
    return b"".join(blocks)


def _full_details(seed: bytes, domain: str) -> bytes:
    """An OAB v4 Full Details file: OAB_HDR, a metadata record and one record per entry, made up."""
    filler = hashlib.shake_256(b"records\x00" + seed).digest(ENTRIES * 48)
    # Property tags of the records: display name, SMTP address, and a binary blob (PR_ENTRYID-like).
    tags = (0x3001001F, 0x39FE001F, 0x0FFF0102)
    schema = struct.pack("<I", len(tags)) + b"".join(struct.pack("<II", t, 0) for t in tags)
    metadata = schema + schema
    records = []
    for n in range(1, ENTRIES + 1):
        fields = (
            b"\x07"  # presence bits: all three properties present
            + f"User {n}".encode("utf-16-le")
            + b"\x00\x00"
            + f"user{n}@{domain}".encode("utf-16-le")
            + b"\x00\x00"
            + filler[(n - 1) * 48 : n * 48]
        )
        records.append(struct.pack("<I", 4 + len(fields)) + fields)
    serial = zlib.crc32(seed)
    header = struct.pack("<III", OAB_VERSION, serial, ENTRIES)
    return header + struct.pack("<I", 4 + len(metadata)) + metadata + b"".join(records)


def build_files(farm_key: bytes, copy_seed: bytes, domain: str) -> dict[str, OabFile]:
    """The manifest and the files it lists. Names come from the farm key; contents and dates from
    `copy_seed`: the same seed gives the same bytes."""
    digest = hashlib.sha256(b"oal\x00" + farm_key).digest()
    oal = str(uuid.UUID(bytes=digest[:16]))
    seq = 1 + digest[16] % 200  # the OAL data sequence number (generation)
    age = int.from_bytes(hashlib.sha256(b"date\x00" + copy_seed).digest()[:3], "little")
    modified = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=age)
    http_date = format_datetime(modified, usegmt=True)

    def make(name: str, kind: str, body: bytes, size: int, content_type: str) -> OabFile:
        etag = f'"{hashlib.sha1(body).hexdigest()[:15]}:0"'
        return OabFile(name.lower(), kind, body, size, content_type, etag, http_date)

    details = _full_details(copy_seed, domain)
    template = hashlib.shake_256(b"template\x00" + copy_seed).digest(TEMPLATE_BYTES)
    files = [
        make(f"{oal}-data-{seq}.lzx", "Full", _lzx_stored(details), len(details), "application/octet-stream"),
        make(
            f"{oal}-lng0409-1.lzx",
            "Template",
            _lzx_stored(template),
            len(template),
            "application/octet-stream",
        ),
    ]
    template_attrs = ' langid="0409" type="windows"'
    entries = "\r\n".join(
        f'<{f.kind} seq="{seq if f.kind == "Full" else 1}" ver="{OAB_VERSION}" size="{len(f.body)}" '
        f'uncompressedsize="{f.uncompressed_size}" SHA="{f.sha1}"'
        f"{template_attrs if f.kind == 'Template' else ''}>{f.name}</{f.kind}>"
        for f in files
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n<OAB>\r\n'
        f'<OAL id="{oal}" dn="/" name="\\Default Global Address List">\r\n{entries}\r\n</OAL>\r\n</OAB>\r\n'
    ).encode()
    files.append(make("oab.xml", "", manifest, len(manifest), "text/xml"))
    return {f.name: f for f in files}


@register
class OabService(HttpService):
    id = "oab"

    def __init__(self, cas: Cas) -> None:
        super().__init__(cas)
        config = cas.config
        self.guid = oab_guid(config.farm_key)
        copy_seed = config.farm_key + (b"\x00" + cas.name.encode() if config.oab_skew else b"")
        self.files = build_files(config.farm_key, copy_seed, config.domain)

    def refusal(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse | None:
        # The OAB vdir of Exchange 2010 takes no anonymous requests (Outlook downloads as the user).
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
        parts = ctx.path.split("/")  # ['', 'oab', '<guid>', '<file>']
        file = self.files.get(parts[3]) if len(parts) == 4 and parts[2] == self.guid else None
        if file is None:
            ctx.note(user, "invalid", "no such file")
            return iis.not_found()
        if request.method not in ("GET", "HEAD"):
            ctx.note(user, "invalid", f"method {request.method[:20]}")
            return iis.method_not_allowed("GET, HEAD")
        headers = {"ETag": file.etag, "Last-Modified": file.last_modified, "Accept-Ranges": "bytes"}
        size = len(file.body)
        if "Range" not in request.headers:
            ctx.note(user, "none", file.name[-20:])
            return web.Response(body=file.body, headers=headers, content_type=file.content_type)
        if_range = request.headers.get("If-Range")
        if if_range is not None and if_range not in (file.etag, file.last_modified):
            # The client holds part of a copy this CAS does not have: HTTP says send all of it.
            ctx.note(user, "foreign", "If-Range does not match this server's copy")
            return web.Response(body=file.body, headers=headers, content_type=file.content_type)
        try:
            wanted = request.http_range
        except ValueError:  # a Range this server does not parse (e.g. several ranges) is ignored
            ctx.note(user, "none", "Range ignored")
            return web.Response(body=file.body, headers=headers, content_type=file.content_type)
        start = max(size + wanted.start, 0) if wanted.start < 0 else wanted.start
        stop = size if wanted.stop is None else min(wanted.stop, size)
        if start >= size or start >= stop:
            ctx.note(user, "invalid", "range not satisfiable")
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        ctx.note(user, "none", f"bytes {start}-{stop - 1}")
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        return web.Response(
            status=206, body=file.body[start:stop], headers=headers, content_type=file.content_type
        )
