"""Sealed tokens: state a CAS hands to the client and can later read back only with the same key.

Exchange 2010 encrypts the forms-logon cookie with keys made on each CAS, so only the issuing CAS can
read it; mailbox state (EAS policy and sync keys) is readable by every CAS. A `Sealer` stands for one
such key: `seal` turns a small dict into an opaque URL-safe token, `unseal` returns the dict, or None
for a token made with another key, tampered with, malformed or expired. It never raises on bad input.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

_MAC_BYTES = 16


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, data: dict[str, Any], ttl_s: float | None = None) -> str:
        payload = {"d": data, "e": None if ttl_s is None else time.time() + ttl_s}
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")

    def unseal(self, token: str | None) -> dict[str, Any] | None:
        return self.open(token)[1]

    def open(self, token: str | None) -> tuple[str, dict[str, Any] | None]:
        """('own', data) for a good token; ('foreign', None) for one this key did not make (another
        server's, tampered, malformed); ('expired', None) for a good one past its lifetime."""
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
        try:
            payload = json.loads(body)
            data, exp = payload["d"], payload["e"]
        except (ValueError, KeyError, TypeError):
            return "foreign", None
        if exp is not None and exp < time.time():
            return "expired", None
        return "own", data
