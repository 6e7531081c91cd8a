"""The JSON line protocol that the two TCP services, MAPI (mapi.py) and the Address Book
(addressbook.py), speak, and `JsonLineService`, the TCP service base that speaks it: framing, error
replies and ledger rows live here; a service only fills `self.ops` with its op handlers.

Why a line protocol: the balancer in front sees only TCP, so what must be faithful is the connection
pattern (Outlook opens several connections per session, to two ports, and keeps them alive) and the state
those connections rely on, not MS-OXCRPC's or MS-NSPI's bytes. Hence a small protocol that a person can
type with `nc`.

Framing: one JSON object per line, UTF-8, ended by "\\n"; a line holds at most 64 KiB (`MAX_LINE_BYTES`,
newline included). The client sends a request line and reads one reply line; a connection carries any
number of exchanges, answered in order.

Every request has `op` (a string naming what to do) and may have
  rid      the client's request id (a string of at most 200 characters): echoed in the reply and written
           as the ledger row's request_id, so client events and ledgers can be reconciled;
  session  the client's session id (same limits): written as the ledger row's session_key (else the
           user the state belongs to, when the server knows), so the ledger names sessions the way the
           client's event log does;
  run      the id of the lab run the client belongs to (same limits; what X-CasLab-Run is for HTTP):
           written as the ledger row's run_id;
plus the op's own fields, all strings unless said otherwise.

Every reply has
  server   the CAS that answered (what X-CasLab-Server is for HTTP);
  status   0 when the request succeeded, else an error number; numbers follow HTTP's meanings, so
           "status >= 400 is an error" holds for every service of the lab;
  state    the ledger state of the exchange (what X-CasLab-State is for HTTP): new, own, foreign, cold,
           expired, invalid or none;
  rid      when the request carried one;
  error    when status is not 0: the error's name (also the ledger row's detail), and `message` in words.

  status  error                   when
  400     bad-request             not UTF-8, not JSON, not an object, a field missing or of the wrong type
  400     half-line               the client ended the connection in the middle of a line (then closed)
  401     logon-failed            wrong user or password (Exchange does not say which)
  404     context-handle-unknown  the handle was made by another CAS (ledger state foreign)
  405     unknown-op              no such op on this port
  409     not-bound               an Address Book query before a bind on this connection
  410     session-expired         the handle is this CAS's, but its session idled out (ledger state expired)
  413     line-too-long           the line exceeds MAX_LINE_BYTES; answered at once, the rest of the line
                                  is dropped and the connection goes on
  500     server-error            a bug in the mock (logged with its traceback)
A client that resets the connection in the middle of a line leaves a ledger row with status 499 and
error client-gone. Every request line, half line and oversized line leaves exactly one ledger row;
ending the connection between lines is the normal way to leave and leaves none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mockcas.services import TcpService

if TYPE_CHECKING:
    from mockcas.cas import Cas

log = logging.getLogger("mockcas")

MAX_LINE_BYTES = 64 * 1024
MAX_ID_CHARS = 200
_READ_CHUNK = 64 * 1024


class ProtocolError(Exception):
    """A request that gets an error reply; carries what the reply and the ledger row need."""

    def __init__(self, status: int, error: str, message: str, state: str = "invalid", session_key: str = ""):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.state, self.session_key = state, session_key


@dataclass
class Connection:
    """One client connection to a line-protocol port."""

    client_ip: str
    bound_user: str = ""  # the user an Address Book bind on this connection authenticated


@dataclass
class Request:
    """A parsed request line: its JSON object and the connection it came on."""

    fields: dict[str, Any]
    conn: Connection

    def text(self, name: str) -> str:
        value = self.fields.get(name)
        if not isinstance(value, str):
            raise ProtocolError(400, "bad-request", f"field {name!r} must be a string")
        return value

    def optional_text(self, name: str) -> str | None:
        return self.text(name) if name in self.fields else None


@dataclass
class Answer:
    """A successful exchange: the ledger state, whose state it was, and the reply's own fields."""

    state: str
    session_key: str
    fields: dict[str, Any] = field(default_factory=dict)


Op = Callable[[Request], Awaitable[Answer]]


def decode_object(line: bytes) -> dict[str, Any]:
    """The JSON object on a request line, or ProtocolError."""
    try:
        value = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError(400, "bad-request", "the line is not UTF-8") from None
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise ProtocolError(400, "bad-request", "the line is not JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError(400, "bad-request", "a request is a JSON object")
    return value


def id_field(fields: dict[str, Any], name: str) -> str:
    """The optional `rid`, `session` or `run` of a request ('' when absent)."""
    value = fields.get(name, "")
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS:
        raise ProtocolError(
            400, "bad-request", f"{name} must be a string of {MAX_ID_CHARS} characters or fewer"
        )
    return value


class JsonLineService(TcpService):
    """A TCP service speaking the line protocol: framing, error replies and ledger rows live here;
    a subclass fills `self.ops` with its op handlers."""

    def __init__(self, cas: Cas) -> None:
        super().__init__(cas)
        self.ops: dict[str, Op] = {}
        self._writers: set[asyncio.StreamWriter] = set()

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = Connection(client_ip=peer[0] if peer else "")
        self._writers.add(writer)
        try:
            await self._serve(reader, writer, conn)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):  # a client that reset the connection: closed either way
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Connection
    ) -> None:
        # Our own buffer rather than readline(): it knows whether a reset came in the middle of a line
        # (a request the ledger must show) or between lines (a normal goodbye), and it can drop the rest
        # of an oversized line and go on serving instead of closing on a client that is still sending.
        pending = bytearray()
        skipping = False  # inside a line too long to serve, answered already: dropping it up to its end
        while True:
            end = pending.find(b"\n")
            if skipping:
                if end >= 0:
                    del pending[: end + 1]
                    skipping = False
                    continue
                pending.clear()
            elif 0 <= end < MAX_LINE_BYTES:
                line = bytes(pending[: end + 1])
                del pending[: end + 1]
                if not await self._send(writer, await self._exchange(line, conn, time.time())):
                    return
                continue
            elif end >= 0 or len(pending) >= MAX_LINE_BYTES:
                message = f"a line holds at most {MAX_LINE_BYTES} bytes"
                reply = self._finish(conn, time.time(), status=413, error="line-too-long", message=message)
                if not await self._send(writer, reply):
                    return
                skipping = True
                continue
            try:
                chunk = await reader.read(_READ_CHUNK)
            except OSError:
                if pending:
                    self._finish(conn, time.time(), status=499, error="client-gone", message="reset")
                return
            if not chunk:
                if pending:  # the stream ended inside a line; the client may still read (half-closed)
                    message = "the stream ended mid-line"
                    await self._send(
                        writer,
                        self._finish(conn, time.time(), status=400, error="half-line", message=message),
                    )
                return
            pending += chunk

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, reply: bytes) -> bool:
        try:
            writer.write(reply)
            await writer.drain()
        except OSError:
            return False
        return True

    async def _exchange(self, line: bytes, conn: Connection, t0: float) -> bytes:
        rid = session = run = ""
        try:
            fields = decode_object(line)
            rid = id_field(fields, "rid")
            session = id_field(fields, "session")
            run = id_field(fields, "run")
            op = fields.get("op")
            if not isinstance(op, str):
                raise ProtocolError(400, "bad-request", "field 'op' must be a string")
            handler = self.ops.get(op)
            if handler is None:
                raise ProtocolError(405, "unknown-op", f"{self.id} has no op {op[:50]!r}")
            answer = await handler(Request(fields, conn))
        except ProtocolError as err:
            return self._finish(
                conn,
                t0,
                rid=rid,
                run=run,
                session_key=session or err.session_key,
                state=err.state,
                status=err.status,
                error=err.error,
                message=err.message,
            )
        except Exception:
            log.exception("%s: unhandled error in %s", self.cas.name, self.id)
            return self._finish(
                conn,
                t0,
                rid=rid,
                run=run,
                session_key=session,
                status=500,
                error="server-error",
                message="a bug",
            )
        return self._finish(
            conn,
            t0,
            rid=rid,
            run=run,
            session_key=session or answer.session_key,
            state=answer.state,
            extra=answer.fields,
        )

    def _finish(
        self,
        conn: Connection,
        t0: float,
        *,
        rid: str = "",
        run: str = "",
        session_key: str = "",
        state: str = "invalid",
        status: int = 0,
        error: str = "",
        message: str = "",
        extra: dict[str, Any] | None = None,
    ) -> bytes:
        """Write the exchange's ledger row (before the reply leaves, so a client holding the reply can
        find its row) and return the reply line."""
        self.cas.record(
            ts=t0,
            service=self.id,
            session_key=session_key,
            client_ip=conn.client_ip,
            state=state,
            status=status,
            request_id=rid,
            run_id=run,
            detail=error,
        )
        reply: dict[str, Any] = {"server": self.cas.name, "status": status, "state": state}
        if rid:
            reply["rid"] = rid
        if error:
            reply["error"], reply["message"] = error, message
        reply.update(extra or {})
        return json.dumps(reply, separators=(",", ":")).encode() + b"\n"

    async def close(self) -> None:
        """Close every open connection (their handlers then see the end of the stream and return)."""
        for writer in list(self._writers):
            writer.close()
