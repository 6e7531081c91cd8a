"""The JSON line protocol that the two TCP services, MAPI (mapi.py) and the Address Book
(addressbook.py), speak, and `JsonLineService`, the TCP service base that speaks it: framing, error
replies and ledger rows live here; a service only fills `self.ops` with its op handlers.

Why a line protocol: the balancer in front sees only TCP, so what must be faithful is the connection
pattern (Outlook opens several connections per session, to two ports, and keeps them alive) and the state
those connections rely on, not MS-OXCRPC's or MS-NSPI's bytes. Hence a small protocol that a person can
type with `nc`.

Framing: one JSON object per line, UTF-8, ended by "\\n"; a line holds at most 64 KiB (`MAX_LINE_BYTES`,
newline included). The client sends a request line and reads one reply line; a connection carries any
number of exchanges, answered in order. A client that closes a connection on purpose says goodbye first
(op `bye`, on either port): the CAS answers (ledger detail `goodbye`) and closes the connection. So a
connection that ends without one was cut: by the network (a balancer's idle timeout), or by a client
that died.

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
error peer-closed (client-gone before it was renamed). Every request line, half line and oversized line
leaves exactly one ledger row. A connection that carried a request and then ended between lines without
a `bye` leaves one more: state none, status 499, detail peer-closed, no request id, the session and
run of its last request, `ts` when it was opened (so its latency is the connection's life): the CAS's
side of a cut. (A connection that carried nothing, such as a balancer's health check, leaves none.)

TCP keep-alives: the CAS turns on SO_KEEPALIVE on every connection it accepts, with the idle time of
Windows' KeepAliveTime (`tcp_keepalive_s`, 2 hours by default; time-scaled, at least the kernel's 1 s)
and Windows' probe rhythm (KeepAliveInterval 1 s, 10 probes). The probes are real packets, so a device
that forwards packets sees activity on an idle connection; a proxy that ends TCP itself answers them
in its own kernel and sees none (research-timers.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from caslab.records import PEER_CLOSED
from mockcas.services import TcpService

if TYPE_CHECKING:
    from mockcas.cas import Cas

log = logging.getLogger("mockcas")

MAX_LINE_BYTES = 64 * 1024
MAX_ID_CHARS = 200
_READ_CHUNK = 64 * 1024
GOODBYE_OP = "bye"
# Windows' keep-alive probes after KeepAliveTime: one every KeepAliveInterval (1 s), 10 at most.
KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 1, 10


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
    opened: float = field(default_factory=time.time)
    requests: int = 0  # request lines served
    session: str = ""  # the session and run of its latest request, for the row of a cut
    run: str = ""
    said_goodbye: bool = False


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
    """A successful exchange: the ledger state, whose state it was, the reply's own fields, and a few
    words for the ledger row's detail."""

    state: str
    session_key: str
    fields: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


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
        self.ops: dict[str, Op] = {GOODBYE_OP: self.goodbye}  # a subclass adds its own
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = Connection(client_ip=peer[0] if peer else "")
        self._keep_alive(writer.get_extra_info("socket"))
        self._writers.add(writer)
        try:
            if await self._serve(reader, writer, conn) and conn.requests and not self._closing:
                self._record_cut(conn)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):  # a client that reset the connection: closed either way
                await writer.wait_closed()

    def _keep_alive(self, sock: socket.socket | None) -> None:
        """TCP keep-alives after `tcp_keepalive_s` of silence (scaled), as Windows sends them."""
        if sock is None:
            return
        idle = max(1, round(self.cas.scaled(self.cas.config.tcp_keepalive_s)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)

    def _record_cut(self, conn: Connection) -> None:
        """The row of a connection that ended between lines without a goodbye (see the module docstring)."""
        self.cas.ledger.record(
            ts=conn.opened,
            service=self.id,
            session_key=conn.session or conn.bound_user,
            client_ip=conn.client_ip,
            state="none",
            status=499,
            run_id=conn.run,
            detail=PEER_CLOSED,
        )

    async def goodbye(self, request: Request) -> Answer:
        """The client is about to close this connection on purpose: the CAS answers, then closes it."""
        request.conn.said_goodbye = True
        return Answer("none", request.conn.bound_user, detail="goodbye")

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Connection
    ) -> bool:
        """Serve request lines until the connection ends; True if it ended between lines without a
        goodbye (closed or reset by the other side), False if it ended otherwise."""
        # Our own buffer rather than readline(): it knows whether a reset came in the middle of a line (a
        # request the ledger must show) or between lines (a cut, unless the client said goodbye), and it
        # can drop the rest of an oversized line and go on serving instead of closing on a client that is
        # still sending.
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
                    return True
                if conn.said_goodbye:
                    return False
                continue
            elif end >= 0 or len(pending) >= MAX_LINE_BYTES:
                message = f"a line holds at most {MAX_LINE_BYTES} bytes"
                reply = self._finish(conn, time.time(), status=413, error="line-too-long", message=message)
                if not await self._send(writer, reply):
                    return True
                skipping = True
                continue
            try:
                chunk = await reader.read(_READ_CHUNK)
            except OSError:
                if pending:
                    self._finish(conn, time.time(), status=499, error=PEER_CLOSED, message="reset")
                return not pending
            if not chunk:
                if pending:  # the stream ended inside a line; the client may still read (half-closed)
                    message = "the stream ended mid-line"
                    await self._send(
                        writer,
                        self._finish(conn, time.time(), status=400, error="half-line", message=message),
                    )
                return not pending
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
            conn.session, conn.run = session or conn.session, run or conn.run
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
            detail=answer.detail,
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
        detail: str = "",
    ) -> bytes:
        """Write the exchange's ledger row (before the reply leaves, so a client holding the reply can
        find its row) and return the reply line."""
        conn.requests += 1
        self.cas.ledger.record(
            ts=t0,
            service=self.id,
            session_key=session_key,
            client_ip=conn.client_ip,
            state=state,
            status=status,
            request_id=rid,
            run_id=run,
            detail=error or detail,
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
        self._closing = True
        for writer in list(self._writers):
            writer.close()
