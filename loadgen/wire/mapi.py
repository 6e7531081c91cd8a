"""A blocking client for the mock CAS's MAPI and Address Book ports (the JSON line protocol documented in
mockcas/services/lines.py), for Locust users and tests.

Blocking on purpose: Locust runs users as greenlets and monkey-patches the stdlib with gevent, which
makes a plain socket cooperative. This module looks `socket.socket` up when it connects, never at
import, so it is cooperative whether it was imported before or after the patching.

Each exchange returns an `Exchange` holding what a Locust request event and the run's event log need
(the answering server, outcome, latency, reply size); failures are returned, not raised, so a user
can report them like any other exchange.

Connections stay open between exchanges, as Outlook's do. One that something else closed meanwhile (a
balancer's idle timeout, a CAS that went away) is a **cut**: `check()` finds it without sending
anything (the connection is readable and at its end, or reset), and a request sent on a connection
that was open before and gets no reply for that reason is a cut too (outcome `cut`, detail `eof` or
`reset`). Either way the connection is closed, and the next call opens a new one. A client that closes
a connection on purpose says goodbye (`goodbye()`, the protocol's `bye`), so the CAS can tell.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from loadgen.readable import readable

MAX_LINE_BYTES = 64 * 1024  # the server's limit (mockcas.services.lines.MAX_LINE_BYTES)


@dataclass(frozen=True)
class Exchange:
    """One request and its reply (or the lack of one)."""

    op: str
    rid: str
    started: float  # epoch seconds when the exchange began (Locust's start_time)
    latency_ms: float  # connecting (when this exchange had to) + sending + the reply
    server: str  # the CAS that answered; "" when none did
    status: int  # the protocol's status (0 = ok); -1 when no reply arrived
    outcome: str  # ok | cold | foreign | error | transport | cut (DESIGN.md section 7)
    detail: str  # the error's name, or what went wrong on the wire (a cut's: eof or reset)
    length: int  # bytes of the reply line
    reply: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "cold")


def outcome_of(reply: dict[str, Any]) -> str:
    """ok or cold for a success; foreign for another CAS's handle (a hard break); error otherwise."""
    if reply.get("status") == 0:
        return "cold" if reply.get("state") == "cold" else "ok"
    return "foreign" if reply.get("state") == "foreign" else "error"


class LineConnection:
    """One TCP connection to a MAPI or Address Book port. It connects on first use, from `source_ip`
    when given, and again on the next call after any failure (as Outlook reconnects); every request
    carries the client's `session` id and, when given, the lab's `run_id` (the line's `run`)."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        source_ip: str | None = None,
        session: str = "",
        run_id: str = "",
        timeout: float = 10.0,
    ) -> None:
        self.address = address
        self.source_ip = source_ip
        self.session = session
        self.run_id = run_id
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._replies: Any = None  # the socket's buffered reader

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def fileno(self) -> int:
        """The socket's descriptor, for select() over several connections (-1 when not connected)."""
        return self._sock.fileno() if self._sock is not None else -1

    def check(self, ready: Collection[int] | None = None) -> Exchange | None:
        """A cut exchange (op "", no request id) if the open connection was closed or reset by the other
        side, which also closes it here; None if it is open and well (or not open at all). Sends nothing.
        `ready`: the descriptors a caller found readable with one poll for all its connections (a poll
        per connection costs more than the rest of a check); None: this connection is polled."""
        if self._sock is None:
            return None
        started = time.time()
        try:
            if ready is None:
                ready = readable([self.fileno()], 0)
            if self.fileno() not in ready:
                return None
            data = self._sock.recv(1, socket.MSG_PEEK)  # readable: this does not block
        except ConnectionError:
            seen = "reset"
        except OSError:
            return None
        else:
            if data:  # bytes nobody asked for: not a cut (the protocol sends none)
                return None
            seen = "eof"
        self.close()
        return Exchange("", "", started, 0.0, "", -1, "cut", seen, 0)

    def goodbye(self, *, rid: str | None = None) -> Exchange | None:
        """Say goodbye and close the connection, as a client that leaves on purpose; the exchange, or
        the cut found instead (None when it was not open)."""
        if self._sock is None:
            return None
        result = self.check() or self.call("bye", rid=rid)
        self.close()
        return result

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.source_ip:
                # Pick the local port at connect(), not bind(): many clients behind one address
                # (a NAT-ed tenant, a Citrix farm) would otherwise run out of ports early.
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.source_ip, 0))
            sock.settimeout(self.timeout)
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        self._sock, self._replies = sock, sock.makefile("rb")

    def call(self, op: str, *, rid: str | None = None, **fields: Any) -> Exchange:
        """Send one request and read its reply."""
        rid = rid or secrets.token_hex(8)
        request = {"op": op, "rid": rid, **fields}
        if self.session:
            request["session"] = self.session
        if self.run_id:
            request["run"] = self.run_id
        line = json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        started, t0 = time.time(), time.perf_counter()
        reused = self._sock is not None  # open before this call: its end now is a cut

        def failed(detail: str, outcome: str = "transport") -> Exchange:
            self.close()
            ms = (time.perf_counter() - t0) * 1000
            return Exchange(op, rid, started, ms, "", -1, outcome, detail, 0)

        try:
            if self._sock is None:
                self._connect()
            self._sock.sendall(line)
            raw = self._replies.readline(MAX_LINE_BYTES + 1)
        except ConnectionError as err:
            return failed("reset", "cut") if reused else failed(f"{type(err).__name__}: {err}")
        except OSError as err:
            return failed(f"{type(err).__name__}: {err}")
        if not raw:
            return failed("eof", "cut") if reused else failed("no reply (connection closed)")
        if not raw.endswith(b"\n"):
            return failed("no complete reply line (connection closed)")
        try:
            reply = json.loads(raw)
            server, status = reply["server"], reply["status"]
        except (ValueError, TypeError, KeyError):
            return failed("reply is not a protocol line")
        latency_ms = (time.perf_counter() - t0) * 1000
        return Exchange(
            op,
            rid,
            started,
            latency_ms,
            server,
            status,
            outcome_of(reply),
            reply.get("error", ""),
            len(raw),
            reply,
        )

    def close(self) -> None:
        """Close the connection without a goodbye (after a failure; see goodbye())."""
        if self._sock is not None:
            self._replies.close()
            self._sock.close()
            self._sock = self._replies = None

    def __enter__(self) -> LineConnection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.goodbye()


class MapiConnection(LineConnection):
    """A connection to the RPC Client Access port. Outlook opens several per session: the first logs on
    and gets the context handle, the others `connect` with it."""

    def logon(self, user: str, password: str, *, rid: str | None = None) -> Exchange:
        """Start a session; the reply's `handle` is the context handle for every later op."""
        return self.call("logon", rid=rid, user=user, password=password)

    def connect(self, handle: str, *, rid: str | None = None) -> Exchange:
        return self.call("connect", rid=rid, handle=handle)

    def rop(self, handle: str, payload: str = "", *, rid: str | None = None) -> Exchange:
        return self.call("rop", rid=rid, handle=handle, payload=payload)

    def ping(self, handle: str | None = None, *, rid: str | None = None) -> Exchange:
        return self.call("ping", rid=rid, **({"handle": handle} if handle else {}))

    def logoff(self, handle: str, *, rid: str | None = None) -> Exchange:
        return self.call("logoff", rid=rid, handle=handle)


class AddressBookConnection(LineConnection):
    """A connection to the Address Book port: bind once, then resolve names."""

    def bind(self, user: str, password: str, *, rid: str | None = None) -> Exchange:
        """Outcome cold when the CAS had to refer the bind (it holds no MAPI session of the user)."""
        return self.call("bind", rid=rid, user=user, password=password)

    def resolve(self, names: list[str], *, rid: str | None = None) -> Exchange:
        return self.call("resolve", rid=rid, names=names)

    def ping(self, *, rid: str | None = None) -> Exchange:
        return self.call("ping", rid=rid)
