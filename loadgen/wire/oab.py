"""OAB download as Outlook does it: pure helpers (no I/O) for the Outlook client kinds.

1. `GET manifest_path(oab_url)` (the OAB URL comes from Autodiscover) -> `parse_manifest()` lists the
   files with their size and SHA-1;
2. each file is fetched in ranges, as BITS does: `Download(file)` gives the headers of the next range
   (`Range`, and `If-Range` with the ETag of the first answer) and takes each answer. An answer of 200 to
   a ranged request means the server's copy is not the one the earlier ranges came from: the download
   starts over from that full body (outcome foreign). `Download.verified()` checks the manifest's SHA-1,
   which is how a download stitched from two different copies is caught.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

MANIFEST = "oab.xml"
# Outlook hands the OAB files to the Background Intelligent Transfer Service, which fetches the ranges
# under its own name (BITS 7.5 is Windows 7's).
BITS_USER_AGENT = "Microsoft BITS/7.5"
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def oab_path(oab_url: str) -> str:
    """The path part of Autodiscover's OABUrl, with its trailing slash: '/OAB/<guid>/'."""
    path = urlsplit(oab_url).path or "/"
    return path if path.endswith("/") else path + "/"


def manifest_path(oab_url: str) -> str:
    return oab_path(oab_url) + MANIFEST


@dataclass(frozen=True)
class OabFile:
    name: str
    kind: str  # Full, Diff or Template
    seq: int
    size: int
    sha1: str  # lower-case hex


def parse_manifest(body: bytes) -> list[OabFile] | None:
    """The files an oab.xml lists; None when the body is not a manifest."""
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, LookupError, ValueError):
        return None
    if root.tag != "OAB":
        return None
    files = []
    for element in root.iterfind("OAL/*"):
        try:
            files.append(
                OabFile(
                    name=(element.text or "").strip(),
                    kind=element.tag,
                    seq=int(element.get("seq", "0")),
                    size=int(element.get("size", "")),
                    sha1=element.get("SHA", "").lower(),
                )
            )
        except ValueError:
            return None
    return files


def content_range(value: str) -> tuple[int, int, int] | None:
    """(first byte, last byte, total size) of a `Content-Range: bytes a-b/n` header."""
    m = _CONTENT_RANGE.match(value.strip())
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


@dataclass
class Download:
    """One file fetched in ranges of `chunk` bytes: `next_headers()`, send, `take(...)`, until `done`."""

    file: OabFile
    chunk: int = 64 * 1024
    etag: str = ""
    data: bytearray = field(default_factory=bytearray)
    restarts: int = 0  # full bodies received for a ranged request (the copy changed under the client)

    @property
    def done(self) -> bool:
        return len(self.data) >= self.file.size

    def next_headers(self) -> dict[str, str]:
        start = len(self.data)
        headers = {"Range": f"bytes={start}-{min(start + self.chunk, self.file.size) - 1}"}
        if self.etag:
            headers["If-Range"] = self.etag
        return headers

    def take(self, status: int, headers: Mapping[str, str], body: bytes) -> tuple[str, str]:
        """Add one answer to the download; returns its (outcome, detail)."""
        if status == 206:
            got = content_range(headers.get("Content-Range", ""))
            if got is None or got[0] != len(self.data) or got[1] - got[0] + 1 != len(body):
                return "error", "unexpected Content-Range"
            self.etag = self.etag or headers.get("ETag", "")
            self.data += body
            return "ok", ""
        if status == 200:
            ranged = bool(self.data) or bool(self.etag)
            self.etag = headers.get("ETag", "")
            self.data = bytearray(body)
            if ranged:
                self.restarts += 1
                return "foreign", "the server's copy differs: whole file sent"
            return "ok", ""
        return "error", f"http {status}"

    def verified(self) -> bool:
        """Whether the bytes are the file the manifest describes (size and SHA-1)."""
        return len(self.data) == self.file.size and hashlib.sha1(self.data).hexdigest() == self.file.sha1


def classify(status: int) -> tuple[str, str]:
    """(outcome, detail) of a plain OAB GET (the manifest, or a whole file)."""
    if status in (200, 206):
        return "ok", ""
    return "error", f"http {status}"
