"""Intranet MAPI (RPC Client Access) as a TCP service, on the JSON line protocol of lines.py.

The balancer sees only TCP, so what must be faithful is the connection pattern (Outlook opens several
connections per session, to two ports, and keeps them alive) and the state those connections rely on: a
context handle only the CAS that made it accepts.

Ops (port `mapi_port`, default 59531)
  logon    user, password -> handle, user   starts a session on this CAS (ledger new); the context
                                            handle is sealed with this CAS's server key
  connect  handle -> user                   a further connection of the session presents its handle
  rop      handle, payload (optional) -> bytes   a remote operation on the session (EcDoRpcExt2's role);
                                            the reply gives the payload's size in bytes
  ping     handle (optional)                keep-alive; with a handle it also keeps the session alive
  logoff   handle                           ends the session
  bye                                       the client closes this connection on purpose (lines.py)
An op with a handle is own when this CAS holds the session, foreign (404 context-handle-unknown) when
another CAS made the handle, expired (410) when the session saw no op for `SESSION_IDLE_S` (divided by
the run's time_scale). A user has as many sessions as Outlook instances logged on.

An Outlook session: connection 1 logs on, connection 2 presents the handle (-> sent, <- received):
  1 -> {"op":"logon","user":"user1","password":"caslab","rid":"r1","session":"s1"}
  1 <- {"server":"CAS01","status":0,"state":"new","rid":"r1","handle":"Tkja...","user":"user1@caslab.test"}
  2 -> {"op":"connect","handle":"Tkja...","rid":"r2","session":"s1"}
  2 <- {"server":"CAS02","status":404,"state":"foreign","rid":"r2","error":"context-handle-unknown",...}
(the balancer sent connection 2 to another CAS: the session is split, a hard break).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mockcas.services import register
from mockcas.services.lines import Answer, JsonLineService, ProtocolError, Request

if TYPE_CHECKING:
    from mockcas.cas import Cas

# How long a MAPI session lives without an op, in real Exchange seconds (assumed: Outlook pings far more
# often, so only a client that vanished without logging off reaches it).
SESSION_IDLE_S = 30 * 60


@dataclass
class MapiSession:
    user: str
    last_seen: float  # time.monotonic() of the session's last op


@register
class MapiService(JsonLineService):
    id = "mapi"
    port_attr = "mapi_port"

    def __init__(self, cas: Cas) -> None:
        super().__init__(cas)
        self.ops |= {
            "logon": self.logon,
            "connect": self.connect,
            "rop": self.rop,
            "ping": self.ping,
            "logoff": self.logoff,
        }
        self._sessions: dict[str, MapiSession] = {}  # session id -> session
        self._by_user: dict[str, set[str]] = {}  # user -> ids of their sessions on this CAS
        self._next_sweep = 0.0

    def has_session(self, user: str) -> bool:
        """Whether `user` has a live MAPI session on this CAS (the Address Book's referral test)."""
        now = time.monotonic()
        return any(self._alive(self._sessions[sid], now) for sid in self._by_user.get(user, ()))

    def _alive(self, session: MapiSession, now: float) -> bool:
        return now - session.last_seen <= self.cas.scaled(SESSION_IDLE_S)

    def _drop(self, sid: str) -> None:
        session = self._sessions.pop(sid, None)
        if session is not None:
            sids = self._by_user[session.user]
            sids.discard(sid)
            if not sids:
                del self._by_user[session.user]

    def _sweep(self, now: float) -> None:
        """Forget sessions that idled out, a few times per idle period, so abandoned ones don't pile up."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.cas.scaled(SESSION_IDLE_S) / 4
        for sid in [sid for sid, s in self._sessions.items() if not self._alive(s, now)]:
            self._drop(sid)

    def _session(self, request: Request) -> tuple[str, MapiSession]:
        """The session the request's handle names, touched; or the error a wrong handle gets."""
        verdict, data = self.cas.server_sealer.open(request.text("handle"))
        if verdict != "own":
            raise ProtocolError(
                404, "context-handle-unknown", "this server did not make the context handle", state="foreign"
            )
        if not isinstance(data, dict) or not isinstance(data.get("mapi"), str):
            raise ProtocolError(400, "bad-request", "the token is not a MAPI context handle")
        sid, user = data["mapi"], str(data.get("u", ""))
        session = self._sessions.get(sid)
        now = time.monotonic()
        if session is None or not self._alive(session, now):
            self._drop(sid)
            raise ProtocolError(410, "session-expired", "the session idled out", "expired", session_key=user)
        session.last_seen = now
        return sid, session

    async def logon(self, request: Request) -> Answer:
        user = self.cas.users.check(request.text("user"), request.text("password"))
        if user is None:
            raise ProtocolError(401, "logon-failed", "unknown user or wrong password", state="none")
        now = time.monotonic()
        self._sweep(now)
        sid = secrets.token_hex(8)
        self._sessions[sid] = MapiSession(user, now)
        self._by_user.setdefault(user, set()).add(sid)
        handle = self.cas.server_sealer.seal({"mapi": sid, "u": user})
        return Answer("new", user, {"handle": handle, "user": user})

    async def connect(self, request: Request) -> Answer:
        _sid, session = self._session(request)
        return Answer("own", session.user, {"user": session.user})

    async def rop(self, request: Request) -> Answer:
        _sid, session = self._session(request)
        payload = request.optional_text("payload") or ""
        # surrogatepass: JSON's "\ud800" is a lone surrogate, which strict UTF-8 cannot encode.
        return Answer("own", session.user, {"bytes": len(payload.encode("utf-8", "surrogatepass"))})

    async def ping(self, request: Request) -> Answer:
        if "handle" not in request.fields:
            return Answer("none", "")
        _sid, session = self._session(request)
        return Answer("own", session.user)

    async def logoff(self, request: Request) -> Answer:
        sid, session = self._session(request)
        self._drop(sid)
        return Answer("own", session.user)
