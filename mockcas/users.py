"""The farm's users: user1..userN@caslab.test, one password for all (both configurable)."""

from __future__ import annotations

import base64
import binascii
import re

# At most 9 significant digits: a longer number is no user of any farm, and int() refuses numbers of
# more than 4,300 digits with an error (which a long user name in a Basic header would otherwise raise).
_USER = re.compile(r"^(?:[^\\]+\\)?user0*(\d{1,9})(?:@(.+))?$", re.IGNORECASE)


class Users:
    def __init__(self, count: int, password: str, domain: str) -> None:
        self.count, self.password, self.domain = count, password, domain.lower()

    def canonical(self, username: str) -> str | None:
        """'user7@caslab.test' for 'user7', 'CASLAB\\user7' or 'User7@caslab.test'; None if no such user."""
        m = _USER.match(username.strip())
        if not m or not 1 <= int(m.group(1)) <= self.count:
            return None
        if m.group(2) and m.group(2).lower() != self.domain:
            return None
        return f"user{int(m.group(1))}@{self.domain}"

    def check(self, username: str, password: str) -> str | None:
        """The canonical user when the credentials are right, else None (Exchange fails the same way
        for an unknown user and a wrong password)."""
        user = self.canonical(username)
        return user if user and password == self.password else None

    def check_basic(self, authorization: str | None) -> str | None:
        """The canonical user for a good `Authorization: Basic ...` header, else None."""
        creds = parse_basic(authorization)
        return self.check(*creds) if creds else None


def parse_basic(authorization: str | None) -> tuple[str, str] | None:
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        text = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None
