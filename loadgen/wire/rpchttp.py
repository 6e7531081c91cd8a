"""A blocking Outlook Anywhere (RPC over HTTP v2) client, for Locust users and tests.

One `VirtualConnection` is what Outlook holds per RPC endpoint: two HTTP requests on two sockets, open at
the same time. `RPC_OUT_DATA` sends the 76-byte CONN/A1 and gets a 200 whose endless body carries PDUs
down (CONN/A3, then CONN/C2 once the server joined both halves, then responses and pings);
`RPC_IN_DATA` declares a 1 GB body and streams PDUs up (CONN/B1, then requests and pings). Both carry
the same virtual-connection cookie; a server can join them only if both reached it. Behind a balancer
that splits them, the CAS closes each half after its pairing wait and `connect()` reports the split.

Blocking on purpose: Locust runs users as greenlets and monkey-patches the stdlib with gevent, which makes
plain sockets cooperative. Only `socket`/`ssl` are used, looked up when a channel opens (never bound at
import), so this works whether it was imported before or after the patching. Each socket is bound to
the user's source address (loadgen.binding).

`connect()` returns a `ConnectResult` (a split is an expected outcome in the lab, not an exception);
`call()` raises `RpcHttpError` when the virtual connection is broken, `RpcFault` when the server faults
the call. Flow-control acknowledgements are not sent (the mock CAS does not enforce windows) and
channels are not recycled: a virtual connection ends when its 1 GB IN body is used up.

Timers, as Outlook keeps them while its user is idle: `keepalive_s` is the connection time-out the
proxy announced (CONN/A3, then CONN/C2), and `keep_alive()` pings IN once nothing went up it for that
long (`next_keepalive_at()` says when). `check()` takes in what came down OUT meanwhile (the server's
pings) without waiting, and finds a channel that something closed or reset under the client: a **cut**
(a balancer's idle timeout, a CAS that went away), after which the virtual connection is closed and
the client opens a new one, as Outlook does. `sockets()` are the channels' sockets, for select().
A call that fails because a channel was cut raises `RpcHttpError` with `cut` set to what the client
saw (`eof` or `reset`).
"""

from __future__ import annotations

import base64
import http.client
import io
import itertools
import secrets
import socket
import ssl
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from caslab import rts
from caslab.vocab import REQUEST_ID_HEADER, RUN_HEADER, SERVER_HEADER, STATE_HEADER
from loadgen.binding import SourceAddress, bound_connection
from loadgen.readable import readable
from loadgen.tls import TlsSessions, close_tls

PROXY_PATH = "/rpc/rpcproxy.dll"
IN_CONTENT_LENGTH = 1 << 30  # what Outlook declares for its IN channel
RECEIVE_WINDOW = 65536  # the client's OUT receive window, announced in CONN/A1
CLIENT_KEEPALIVE_MS = 300_000  # announced in CONN/B1
MAX_HEAD_BYTES = 64 * 1024


class RpcHttpError(Exception):
    """The virtual connection is not open, or broke; `cut` says how, when a channel was closed ("eof")
    or reset ("reset") under it, else it is ""."""

    def __init__(self, message: str, cut: str = "") -> None:
        super().__init__(message)
        self.cut = cut


class _ChannelClosed(ConnectionError):
    """The other side closed a channel's connection (its end of stream)."""


class RpcFault(RpcHttpError):
    """The server answered a call with a fault PDU."""

    def __init__(self, status: int) -> None:
        super().__init__(f"RPC fault {status:#x}")
        self.status = status


@dataclass
class ChannelResult:
    """What one channel's HTTP request got, for the event log."""

    method: str  # RPC_OUT_DATA or RPC_IN_DATA
    request_id: str  # sent as X-CasLab-Request, to match the CAS ledger row
    status: int = -1  # HTTP status of the answer; -1 when none came (a working IN channel never gets one)
    server: str = ""  # X-CasLab-Server; a joined IN channel's is its OUT partner's (they joined there)
    state: str = ""  # X-CasLab-State of the answer


@dataclass
class ConnectResult:
    """The outcome of opening a virtual connection."""

    started: float  # epoch seconds
    latency_ms: float
    outcome: str  # ok | foreign (the halves were split) | error (an HTTP error) | transport
    detail: str
    out_channel: ChannelResult
    in_channel: ChannelResult

    @property
    def joined(self) -> bool:
        return self.outcome == "ok"


class _Channel:
    """One HTTP request held open on its own socket, with what was received but not yet read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        # A TLS socket can hold decrypted bytes the kernel no longer shows as readable (asked once here:
        # a missing attribute on a gevent socket costs a raised AttributeError each time).
        self.tls = hasattr(sock, "pending")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _ChannelClosed("the server closed the channel")
        self.buffer += chunk

    def has_input(self, readable_sockets: Collection[socket.socket]) -> bool:
        """Whether `take_in()` would find something: the socket is among `readable_sockets`, or TLS holds
        decrypted bytes that the socket no longer shows."""
        return self.sock in readable_sockets or (self.tls and self.sock.pending() > 0)

    def take_in(self) -> str:
        """Take in whatever has arrived, without waiting: "" while the connection is open, "eof" once
        the other side closed it, "reset" once it was reset."""
        self.sock.settimeout(0.0)
        try:
            while chunk := self.sock.recv(65536):
                self.buffer += chunk
        except (BlockingIOError, ssl.SSLWantReadError):
            return ""
        except OSError:
            return "reset"
        return "eof"

    def read_exact(self, n: int, deadline: float) -> bytes:
        while len(self.buffer) < n:
            self._fill(deadline)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def read_head(self, deadline: float) -> tuple[int, http.client.HTTPMessage]:
        """The status and headers of the HTTP answer on this channel."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise RpcHttpError("HTTP answer head too long")
            self._fill(deadline)
        head = bytes(self.buffer[: end + 4])
        del self.buffer[: end + 4]
        status_line, _, rest = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise RpcHttpError(f"not an HTTP answer: {status_line[:80]!r}")
        return int(parts[1]), http.client.parse_headers(io.BytesIO(rest))

    def whole_pdu(self) -> bytes | None:
        """The PDU at the head of what was received, if all of it has arrived (it stays there)."""
        if len(self.buffer) < rts.HEADER_LENGTH:
            return None
        length = rts.parse_header(bytes(self.buffer[: rts.HEADER_LENGTH])).frag_length
        return bytes(self.buffer[:length]) if len(self.buffer) >= length else None

    def read_pdu(self, deadline: float) -> rts.Pdu:
        head = self.read_exact(rts.HEADER_LENGTH, deadline)
        length = rts.parse_header(head).frag_length
        return rts.decode_pdu(head + self.read_exact(length - rts.HEADER_LENGTH, deadline))

    def close(self) -> None:
        close_tls(self.sock)  # with close_notify over TLS: the client's session stays resumable


class VirtualConnection:
    """One Outlook Anywhere virtual connection to `address` (the VIP, or one CAS).

    `out_address` sends the OUT channel elsewhere (as DNS round robin does when each channel resolves
    the proxy name on its own); by default both channels go to `address`. `headers` are added to both
    requests (e.g. `Cookie: OutlookSession="{GUID}"`, or a `User-Agent` other than MSRPC). With
    `keep_cookies`, cookies the OUT channel's answer sets (a balancer's own, say) go on the IN request,
    which is sent after that answer, and stay in `cookies` for the client to keep. A `run_id` goes on
    both requests as X-CasLab-Run (the lab's run the client belongs to)."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        source: SourceAddress,
        user: str,
        password: str,
        rpc_server: str = "outlook.caslab.test",
        rpc_port: int = 6001,
        host_name: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        tls_sessions: TlsSessions | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        out_address: tuple[str, int] | None = None,
        keep_cookies: bool = False,
        run_id: str = "",
    ) -> None:
        self.address = address
        self.out_address = out_address or address
        self.source = source
        self.rpc_target = f"{rpc_server}:{rpc_port}"
        self.host_name = host_name or address[0]
        self.ssl_context = ssl_context
        self.tls_sessions = tls_sessions or TlsSessions(resumes=False)
        self.timeout = timeout
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {
            "Host": self.host_name,
            "Accept": "application/rpc",
            "User-Agent": "MSRPC",
            "Cache-Control": "no-cache",
            "Connection": "Keep-Alive",
            "Pragma": "No-cache",
            "Authorization": f"Basic {credentials}",
        }
        if run_id:
            self._headers[RUN_HEADER] = run_id
        for name, value in (headers or {}).items():
            self._headers = {k: v for k, v in self._headers.items() if k.lower() != name.lower()}
            self._headers[name] = value
        self.keep_cookies = keep_cookies
        self.cookies: dict[str, str] = {}  # set by the server or balancer on this connection's answers
        self.vc_cookie = rts.new_cookie()
        self.joined = False
        self.keepalive_s = 0.0  # how often the server wants a ping on IN (from CONN/A3)
        self.pings_received = 0  # Ping PDUs the server sent down OUT
        self._out: _Channel | None = None
        self._in: _Channel | None = None
        self._in_sent = 0
        self._last_in_send = 0.0
        self._call_ids = itertools.count(1)

    @property
    def session_key(self) -> str:
        """The virtual-connection cookie as the CAS ledger records it."""
        return rts.cookie_text(self.vc_cookie)

    # -- opening --------------------------------------------------------------------------------------
    def _open(self, address: tuple[str, int]) -> _Channel:
        sock = bound_connection(address, self.source, self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # PDUs are small: no Nagle delay
            if self.ssl_context is not None:
                sock = self.tls_sessions.wrap(self.ssl_context, sock, address, self.host_name)
        except OSError:
            sock.close()
            raise
        return _Channel(sock)

    def _request_head(self, method: str, content_length: int, request_id: str) -> bytes:
        lines = [f"{method} {PROXY_PATH}?{self.rpc_target} HTTP/1.1"]
        headers = {**self._headers, "Content-Length": str(content_length), REQUEST_ID_HEADER: request_id}
        if self.cookies:  # kept cookies replace those of the same name the caller gave
            pairs = (c.strip().partition("=") for c in headers.get("Cookie", "").split(";") if c.strip())
            merged = {name: value for name, _, value in pairs} | self.cookies
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in merged.items())
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def connect(
        self, *, out_request_id: str | None = None, in_request_id: str | None = None
    ) -> ConnectResult:
        """Open both channels and wait until the server joins them (CONN/C2 on OUT)."""
        if self._out is not None:
            raise RpcHttpError("this virtual connection was opened already")
        started, t0 = time.time(), time.perf_counter()
        deadline = time.monotonic() + self.timeout
        out = ChannelResult("RPC_OUT_DATA", out_request_id or secrets.token_hex(8))
        in_ = ChannelResult("RPC_IN_DATA", in_request_id or secrets.token_hex(8))

        def result(outcome: str, detail: str = "") -> ConnectResult:
            if outcome != "ok":
                self.close()
            return ConnectResult(started, (time.perf_counter() - t0) * 1000, outcome, detail, out, in_)

        try:
            self._out = self._open(self.out_address)
            a1 = rts.conn_a1(self.vc_cookie, rts.new_cookie(), RECEIVE_WINDOW)
            self._out.send(self._request_head(out.method, len(a1), out.request_id) + a1)
            status, head = self._out.read_head(deadline)
            self.tls_sessions.keep(self.out_address, self._out.sock)  # the IN channel resumes it
            _record(out, status, head)
            if self.keep_cookies:
                for set_cookie in head.get_all("Set-Cookie") or []:
                    name, _, value = set_cookie.partition(";")[0].partition("=")
                    self.cookies[name.strip()] = value.strip()
            if out.status != 200:
                return result("error", f"{out.method}: http {out.status}")
            self.keepalive_s = rts.parse_conn_a3(self._out.read_pdu(deadline)) / 1000
            self._in = self._open(self.address)
            b1 = rts.conn_b1(
                self.vc_cookie, rts.new_cookie(), rts.new_cookie(), IN_CONTENT_LENGTH, CLIENT_KEEPALIVE_MS
            )
            self._in.send(self._request_head(in_.method, IN_CONTENT_LENGTH, in_.request_id) + b1)
            self._in_sent, self._last_in_send = len(b1), time.monotonic()
        except (OSError, rts.RtsError, RpcHttpError) as err:
            return result("transport", _describe(err))
        try:
            self.keepalive_s = rts.parse_conn_c2(self._read_out(deadline)).connection_timeout_ms / 1000
        except (OSError, rts.RtsError, RpcHttpError) as err:
            # Not joined. The CAS that holds the IN half answers it once its pairing wait is over.
            try:
                _record(in_, *self._in.read_head(deadline))
            except (OSError, RpcHttpError):
                return result("transport", f"no CONN/C2: {_describe(err)}")
            if in_.state == "foreign":
                return result("foreign", "channel-split")
            return result("error", f"{in_.method}: http {in_.status}")
        in_.server = out.server
        self.joined = True
        return result("ok")

    # -- using ----------------------------------------------------------------------------------------
    def _read_out(self, deadline: float) -> rts.Pdu:
        """The next PDU down OUT that is not a keep-alive ping."""
        while True:
            pdu = self._out.read_pdu(deadline)  # type: ignore[union-attr]
            if not rts.is_ping(pdu):
                return pdu
            self.pings_received += 1

    def _send_in(self, data: bytes) -> None:
        if not self.joined:
            raise RpcHttpError("the virtual connection is not open")
        if self._in_sent + len(data) > IN_CONTENT_LENGTH:
            raise RpcHttpError("the IN channel's declared body is used up (channels are not recycled)")
        try:
            self._in.send(data)  # type: ignore[union-attr]
        except OSError as err:
            self.close()
            raise RpcHttpError(f"IN channel: {_describe(err)}", _cut(err)) from err
        self._in_sent += len(data)
        self._last_in_send = time.monotonic()

    def call(self, opnum: int, stub: bytes = b"", *, timeout: float | None = None) -> bytes:
        """One RPC: the request goes up IN (fragmented as Windows does), the response comes down OUT."""
        call_id = next(self._call_ids)
        self._send_in(b"".join(rts.encode_pdu(p) for p in rts.request_fragments(call_id, opnum, stub)))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        answer = bytearray()
        try:
            while True:
                pdu = self._read_out(deadline)
                if isinstance(pdu, rts.FaultPdu) and pdu.call_id == call_id:
                    raise RpcFault(pdu.status)
                if not isinstance(pdu, rts.ResponsePdu) or pdu.call_id != call_id:
                    raise RpcHttpError(f"unexpected {type(pdu).__name__} while waiting for call {call_id}")
                answer += pdu.stub
                if pdu.pfc_flags & rts.Pfc.LAST_FRAG:
                    return bytes(answer)
        except RpcFault:
            raise
        except (OSError, rts.RtsError, RpcHttpError) as err:
            self.close()
            raise RpcHttpError(f"OUT channel: {_describe(err)}", _cut(err)) from err

    def ping(self) -> None:
        """Send a Ping RTS PDU up IN (what the client does when its connection time-out timer fires)."""
        self._send_in(rts.ping())

    def keep_alive(self) -> bool:
        """Ping IN if nothing went up it for the server's connection time-out; True if it pinged."""
        if self.joined and time.monotonic() >= self.next_keepalive_at():
            self.ping()
            return True
        return False

    def next_keepalive_at(self) -> float:
        """When (time.monotonic()) the next keep-alive ping is due on IN."""
        return self._last_in_send + self.keepalive_s

    def overdue_s(self) -> float:
        """How long past due the next keep-alive ping is now (0 when it is not due yet): IN has been
        silent that much longer than the server asked for."""
        return max(0.0, time.monotonic() - self.next_keepalive_at()) if self.joined else 0.0

    def sockets(self) -> list[socket.socket]:
        """The open channels' sockets (to wait on with select(): the server's pings, or a cut)."""
        return [c.sock for c in (self._out, self._in) if c is not None and self.joined]

    def check(self, ready: Collection[socket.socket] | None = None) -> str:
        """Take in the pings that came down OUT and look for a cut, without waiting: "" while the virtual
        connection is open (or was never joined), else what the client saw on the channel that was
        closed ("eof") or reset ("reset"), and the virtual connection is closed. `ready`: the sockets a
        caller found readable with one poll for all its connections; None: this one's are polled."""
        out, in_ = self._out, self._in
        if not self.joined or out is None or in_ is None:
            return ""
        # Outlook checks before and after every request: a poll is much cheaper than a receive that
        # finds nothing on each channel (a raised BlockingIOError under gevent).
        if ready is None:
            ready = readable([out.sock, in_.sock], 0)
        seen = ""
        for channel in (out, in_):
            if not seen and channel.has_input(ready):
                seen = channel.take_in()
        # Pings are taken off; anything else (a response) is left for call() or receive().
        while (raw := out.whole_pdu()) is not None and rts.is_ping(rts.decode_pdu(raw)):
            del out.buffer[: len(raw)]
            self.pings_received += 1
        if seen:
            self.close()
        return seen

    def receive(self, timeout: float | None = None) -> rts.Pdu:
        """The next PDU down OUT, pings included (they are also counted in `pings_received`)."""
        if self._out is None:
            raise RpcHttpError("the virtual connection is not open")
        try:
            pdu = self._out.read_pdu(time.monotonic() + (self.timeout if timeout is None else timeout))
        except (OSError, rts.RtsError, RpcHttpError) as err:
            self.close()
            raise RpcHttpError(f"OUT channel: {_describe(err)}") from err
        if rts.is_ping(pdu):
            self.pings_received += 1
        return pdu

    def close(self) -> None:
        """Close both channels (the server then ends the virtual connection)."""
        self.joined = False
        for channel in (self._in, self._out):
            if channel is not None:
                channel.close()

    def __enter__(self) -> VirtualConnection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _record(channel: ChannelResult, status: int, headers: http.client.HTTPMessage) -> None:
    channel.status = status
    channel.server = headers.get(SERVER_HEADER, "")
    channel.state = headers.get(STATE_HEADER, "")


def _cut(err: BaseException) -> str:
    """What a failure says about a channel: closed by the other side ("eof"), reset ("reset"), or
    neither ("": a time-out, a protocol error)."""
    if isinstance(err, _ChannelClosed):
        return "eof"
    if isinstance(err, ConnectionError):
        return "reset"
    return ""


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
