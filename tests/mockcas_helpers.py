"""What the mock CAS tests share: a CAS's ledger as its admin port hands it out, and damaged copies of
valid request bodies for the property-based tests of each service's parser."""

from __future__ import annotations

import json
import urllib.request


def ledger(server: str, service: str | None = None) -> list[dict]:
    """The ledger rows of one CAS, oldest first (only `service`'s when given). `server` is the CAS's
    address or the URL of one of its service ports (http://127.0.12.11:8080): the admin port is 8099
    on the same address."""
    host = server.split("//")[-1].split(":")[0]
    with urllib.request.urlopen(f"http://{host}:8099/caslab/ledger?since=0", timeout=5) as r:
        rows = json.loads(r.read())["rows"]
    return [row for row in rows if service is None or row["service"] == service]


def mangle(body: bytes, cuts: list[tuple[int, int, bytes]]) -> bytes:
    """`body` with each (position, length, insert) applied in turn: `length` bytes at `position` (taken
    modulo the body's length + 1) replaced by `insert`."""
    for position, length, insert in cuts:
        at = position % (len(body) + 1)
        body = body[:at] + insert + body[at + length :]
    return body
