"""Sealed tokens: state a CAS hands to the client and accepts back only when its own key signed it.

Exchange 2010 encrypts the forms-logon cookie with keys made on each CAS, so only the issuing CAS can
read it; mailbox state (EAS policy and sync keys) is good on every CAS. A `Sealer` stands for one such
key, but signs rather than encrypts: `seal` turns a small dict into a URL-safe token (an HMAC-SHA256 tag
and the dict as JSON, in base64) that anyone can decode and read, and only the key's holder can make.
What a balancer test needs is which CAS accepts a token, not secrecy from the client. `unseal` returns
the dict, or None for a token signed with another key, tampered with or malformed; it never raises on
bad input. A token does not expire: how long the state it names lives is the business of whoever keeps
that state (the logon, the MAPI session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

_MAC_BYTES = 16


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, data: dict[str, Any]) -> str:
        body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")

    def unseal(self, token: str | None) -> dict[str, Any] | None:
        return self.open(token)[1]

    def open(self, token: str | None) -> tuple[str, dict[str, Any] | None]:
        """('own', data) for a token this key made; ('foreign', None) for any other (another server's,
        tampered, malformed)."""
        if not token or len(token) > 8192:
            return "foreign", None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return "foreign", None
        mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(mac) < _MAC_BYTES:
            return "foreign", None
        if not hmac.compare_digest(mac, hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]):
            return "foreign", None
        return "own", json.loads(body)  # the tag is good: this key sealed the body, so it is our JSON
