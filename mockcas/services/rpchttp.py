"""Outlook Anywhere (RPC over HTTP v2, [MS-RPCH]) on the mock CAS: RPC proxy and RPC server in one.

A virtual connection is two HTTP requests that stay open: `RPC_OUT_DATA` (body: the 76-byte CONN/A1;
answered with a 200 whose ~1 GB body streams PDUs down to the client) and `RPC_IN_DATA` (declares a
~1 GB body and streams PDUs up, starting with CONN/B1). Both carry the virtual-connection cookie, and
both must reach the same RPC server to be joined. Behind a balancer that does not keep them together
they reach different CAS: each CAS then holds a half whose partner never comes. After the pairing wait
(`rpc_pairing_wait_s`, real seconds) such a half is closed with an error and recorded `foreign`
(`channel-split`), the hard break a split virtual connection is for Outlook.

Sequence on one CAS:
    OUT: read CONN/A1 -> 200 "Success", stream CONN/A3 -> (wait for IN) -> CONN/C2 -> responses, pings
    IN:  read CONN/B1 -> (wait for OUT) -> read request PDUs; each call's response goes down OUT
The channel that arrives first is the `new` half, its partner the `own` half; the session key of both
is the virtual-connection cookie (as a GUID string).

Keep-alives, time-scaled: the CAS sends a Ping RTS PDU down OUT when OUT was silent for 900 s; CONN/A3
and CONN/C2 announce the connection time-out, 720 s, after which the client pings IN (the value on the
wire is the scaled one, so a lab client pings at lab speed). With the RPC proxy's
MinimumConnectionTimeout set (`rpc_min_connection_timeout_s`, Microsoft's fix for network devices that
drop idle connections after 5 minutes), the proxy and the client use the lower of it and those defaults
on both channels: 120 s makes both ping every 2 minutes (research-timers.md). Pings, Keep-Alive and
FlowControlAck RTS PDUs on IN are taken in silently.
Not modelled: flow control windows (nothing here sends enough to fill one), channel recycling, binds and
RPC-level authentication. A request's stub is echoed back as the response's.

Ledger rows, one per channel, written when the channel ends (state, status, detail):
    joined, then its partner ended    new/own   OUT 200, IN 200 (cut by the CAS)   partner-closed
    joined, then closed by the peer   new/own   499                                 peer-closed
    IN body used up (no recycling)    new/own   200                                 in-stream-ended
    partner never came                foreign   OUT 200 (cut short), IN 503         channel-split
    the CAS closed                    new/own   as above                            cas-closing
    bad input                         invalid   400/403/404/405/411, or 499 if the client left mid-PDU
    no good credentials               none      401                                 unauthenticated
`peer-closed` (`client-gone` in ledgers before it was renamed) is a channel whose TCP connection the
other side closed or reset while the channel was open: the client, or a balancer between (a cut, when
the client did not mean it). Its partner half then ends as `partner-closed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from aiohttp import StreamReader, hdrs, web

from caslab import rts
from caslab.records import CAS_CLOSING, KEEPALIVE_LATE_FIELD, KEEPALIVE_LATE_S, PEER_CLOSED, detail_with
from mockcas import iis
from mockcas.services import HttpService, RequestContext, register

if TYPE_CHECKING:
    from mockcas.cas import Cas

log = logging.getLogger("mockcas.rpchttp")

PROXY_PATH = "/rpc/rpcproxy.dll"
METHODS = ("RPC_IN_DATA", "RPC_OUT_DATA")
# The endpoints the RPC proxy lets through (its ValidPorts): mailbox store, referral (RFR), address book
# (NSPI). Compared as text: the query's port is never parsed as a number (int() would take "²" or 5,000
# digits and raise).
RPC_PORTS = frozenset({"6001", "6002", "6004"})
OUT_CONTENT_LENGTH = 1 << 30  # the streamed OUT body; [MS-RPCH] allows 128 KB..2 GB
IN_CONTENT_LENGTH_RANGE = (128 * 1024, 2 * 1024**3)  # what an IN channel may declare
OUT_KEEPALIVE_S = 900.0  # the CAS pings OUT after this much silence (Exchange time), by default
IN_KEEPALIVE_S = 720.0  # the client must ping IN this often (told in CONN/A3 and CONN/C2), by default
RECEIVE_WINDOW = 65536  # what CONN/C2 announces for the IN channel
MAX_CALL_STUB = 4 * 1024 * 1024  # [MS-RPCE]: a call whose stub is longer gets a fault ...
FAULT_TOO_BIG = 0x5  # ... with this status
# The reason phrase of an IN channel's error answer ([MS-RPCH] 2.1.2.1.3): RPC_S_SERVER_UNAVAILABLE (1722).
UNAVAILABLE_REASON = "RPC Error: 6ba"


class _OutGone(Exception):
    """Writing down the OUT channel failed: its client is gone."""


class _CasClosing(Exception):
    """The CAS closed while a channel was still sending its opening PDU."""


class _Unanswered(web.Response):
    """A channel closed without an HTTP answer; its status is only what the ledger records."""


_Opening = TypeVar("_Opening", rts.ConnA1, rts.ConnB1)


@dataclass
class _VirtualConnection:
    """The halves of one virtual connection that reached this CAS, and what became of them."""

    cookie: bytes
    key: str
    out_response: web.StreamResponse | None = None
    out_ctx: RequestContext | None = None
    out_ready: bool = False  # CONN/A3 is on the wire: CONN/C2 may follow
    in_ctx: RequestContext | None = None  # set once CONN/B1 is read: the IN half is ready at once
    joined: bool = False
    last_out_send: float = field(default_factory=time.monotonic)
    decided: asyncio.Event = field(default_factory=asyncio.Event)  # joined, or ended
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@register
class RpcHttpService(HttpService):
    id = "rpchttp"

    def __init__(self, cas: Cas) -> None:
        super().__init__(cas)
        self._connections: dict[bytes, _VirtualConnection] = {}
        self._closed = asyncio.Event()
        # The connection time-out the proxy announces for IN, and the silence after which it pings OUT
        # (Exchange time): the defaults, or MinimumConnectionTimeout where that is lower.
        minimum = cas.config.rpc_min_connection_timeout_s
        self.in_keepalive_s = IN_KEEPALIVE_S if minimum is None else min(minimum, IN_KEEPALIVE_S)
        self.out_keepalive_s = OUT_KEEPALIVE_S if minimum is None else min(minimum, OUT_KEEPALIVE_S)

    # -- request checks -----------------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        response = self.refusal(request, ctx)
        if response is None and request.method == "RPC_OUT_DATA":
            response = await self._out_channel(request, ctx)
        elif response is None:
            response = await self._in_channel(request, ctx)
        if not response.prepared and not isinstance(response, _Unanswered):
            response.force_close()  # say `Connection: close`: the connection is not reused (below)
            with contextlib.suppress(ConnectionError):
                await self.prepare(request, response, ctx)
                await response.write_eof()
        # An RPC channel's connection is never reused: its body is not read to the end (aiohttp would go
        # on reading and discarding it for its lingering time). What was written still goes out first.
        request.protocol.force_close()
        return response

    def refusal(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse | None:
        """The error answer for a request that cannot open a channel, or None if it can: all of it is
        decided on the request line and headers, as the RPC proxy does before it reads a channel's body
        (so an RPC_IN_DATA that sent `Expect: 100-continue` gets its 401 or 403 instead of 100)."""
        if ctx.path != PROXY_PATH:
            return _fail(ctx, 404, "no such RPC proxy path")
        if self.cas.users.check_basic(request.headers.get(hdrs.AUTHORIZATION)) is None:
            ctx.note("", "none", "unauthenticated")
            return iis.unauthorized(request.host)
        if request.method not in METHODS:
            response = _fail(ctx, 405, f"method {request.method}")
            response.headers["Allow"] = ", ".join(METHODS)
            return response
        server, _, port = request.query_string.rpartition(":")
        if not server or port not in RPC_PORTS:
            return _fail(ctx, 403, f"RPC endpoint {request.query_string[:80]!r} not allowed")
        length = request.content_length
        if length is None:
            return _fail(ctx, 411, "no Content-Length")
        if request.method == "RPC_OUT_DATA" and length != rts.CONN_A1_LENGTH:
            return _fail(ctx, 400, f"OUT channel Content-Length {length}")
        low, high = IN_CONTENT_LENGTH_RANGE
        if request.method == "RPC_IN_DATA" and not low <= length <= high:
            return _fail(ctx, 400, f"IN channel Content-Length {length}")
        if self._closed.is_set():
            ctx.note("", "none", CAS_CLOSING)
            return web.Response(status=503, reason=UNAVAILABLE_REASON)
        return None

    async def _opening(
        self, request: web.BaseRequest, ctx: RequestContext, parse: Callable[[bytes], _Opening]
    ) -> tuple[_Opening | None, web.StreamResponse | None]:
        """The channel's opening PDU (CONN/A1 or CONN/B1) parsed by `parse`, or (None, the error answer)."""
        try:
            first = parse(await self._opening_pdu(request.content))
        except rts.RtsError as err:
            return None, _fail(ctx, 400, f"protocol-error: {err}")
        except (asyncio.IncompleteReadError, TimeoutError):
            return None, _fail(ctx, 400, "protocol-error: opening PDU truncated or missing")
        except ConnectionError:
            ctx.note("", "invalid", PEER_CLOSED)
            return None, _Unanswered(status=499)
        except _CasClosing:
            ctx.note("", "none", CAS_CLOSING)
            return None, web.Response(status=503, reason=UNAVAILABLE_REASON)
        if first.vc_cookie == bytes(rts.COOKIE_LENGTH):
            return None, _fail(ctx, 400, "protocol-error: nil virtual-connection cookie")
        return first, None

    async def _opening_pdu(self, content: StreamReader) -> bytes:
        """The first PDU of a channel's body, within the pairing wait; gives up when the CAS closes."""
        read = asyncio.ensure_future(_read_pdu(content))
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            done, _ = await asyncio.wait(
                {read, closed},
                timeout=self.cas.config.rpc_pairing_wait_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            read.cancel()
            closed.cancel()
        if read in done:
            return read.result()
        if closed in done:
            raise _CasClosing
        raise TimeoutError

    def _register(self, cookie: bytes, ctx: RequestContext, *, out: bool) -> _VirtualConnection | None:
        """Register one half of a virtual connection: `new` if it came first, `own` if its partner is here.
        None if this CAS holds that half already."""
        vc = self._connections.get(cookie)
        if vc is None:
            vc = self._connections[cookie] = _VirtualConnection(cookie, rts.cookie_text(cookie))
        if (vc.out_ctx if out else vc.in_ctx) is not None:
            return None
        partner = vc.in_ctx if out else vc.out_ctx
        ctx.note(vc.key, "own" if partner is not None else "new")
        if out:
            vc.out_ctx = ctx
        else:
            vc.in_ctx = ctx
        return vc

    # -- OUT channel --------------------------------------------------------------------------------
    async def _out_channel(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        a1, refusal = await self._opening(request, ctx, rts.parse_conn_a1)
        if a1 is None:
            return refusal
        vc = self._register(a1.vc_cookie, ctx, out=True)
        if vc is None:
            return _fail(ctx, 400, "protocol-error: a second OUT channel for one virtual connection")
        response = web.StreamResponse(
            status=200, reason="Success", headers={"Content-Type": "application/rpc"}
        )
        response.content_length = OUT_CONTENT_LENGTH  # never sent whole: the stream ends when the VC does
        response.force_close()  # a channel's connection ends with it; say so, so no balancer reuses it
        vc.out_response = response
        try:
            await self.prepare(request, response, ctx)
            await self._send_out(vc, rts.conn_a3(self._ms(self.in_keepalive_s)))
            vc.out_ready = True
            if vc.in_ctx is not None:
                await self._join(vc)
        except (_OutGone, ConnectionError):
            self._finish(vc, out_detail=PEER_CLOSED, in_detail="partner-closed")
        if await self._paired(vc, ctx):
            await self._keep_out_alive(vc)
        return _Unanswered(status=499) if ctx.detail.startswith(PEER_CLOSED) else response

    async def _keep_out_alive(self, vc: _VirtualConnection) -> None:
        """Until the virtual connection ends: ping down OUT whenever it was silent for the keep-alive."""
        interval = self.cas.scaled(self.out_keepalive_s)
        while not vc.ended.is_set():
            idle_for = time.monotonic() - vc.last_out_send
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(vc.ended.wait(), max(0.0, interval - idle_for))
                return
            if time.monotonic() - vc.last_out_send >= interval:
                try:
                    await self._send_out(vc, rts.ping())
                except _OutGone:
                    self._finish(vc, out_detail=PEER_CLOSED, in_detail="partner-closed")

    # -- IN channel ---------------------------------------------------------------------------------
    async def _in_channel(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        b1, refusal = await self._opening(request, ctx, rts.parse_conn_b1)
        if b1 is None:
            return refusal
        vc = self._register(b1.vc_cookie, ctx, out=False)
        if vc is None:
            return _fail(ctx, 400, "protocol-error: a second IN channel for one virtual connection")
        if vc.out_ready:
            try:
                await self._join(vc)
            except _OutGone:
                self._finish(vc, out_detail=PEER_CLOSED, in_detail="partner-closed")
        if not await self._paired(vc, ctx):  # split, or the OUT half went away before the join
            return web.Response(status=503, reason=UNAVAILABLE_REASON, text=ctx.detail)
        pump = asyncio.create_task(self._pump_in(vc, request.content))
        try:
            await vc.ended.wait()
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        if ctx.detail.startswith(PEER_CLOSED):  # also "peer-closed keepalive-late=S" (_cut)
            return _Unanswered(status=499)
        if ctx.state == "invalid":
            return web.Response(status=400, text=ctx.detail)
        # Ended by the CAS (partner gone, CAS closing): the stream is cut, as a proxy tearing it down does.
        return _Unanswered(status=200)

    async def _pump_in(self, vc: _VirtualConnection, content: StreamReader) -> None:
        """Read the IN stream until it ends; answer each complete call down OUT. Always ends `vc`."""
        calls: dict[int, bytearray] = {}
        too_big: set[int] = set()
        try:
            while True:
                try:
                    raw = await _read_pdu(content)
                except asyncio.IncompleteReadError as err:
                    if err.partial:
                        raise rts.RtsError("PDU truncated by the end of the IN stream") from None
                    self._finish(vc, in_detail="in-stream-ended", out_detail="partner-closed")
                    return
                pdu = rts.decode_pdu(raw)
                if isinstance(pdu, rts.RtsPdu):
                    _check_in_rts(pdu)
                elif isinstance(pdu, rts.RequestPdu):
                    await self._on_request(vc, pdu, calls, too_big)
                else:
                    raise rts.RtsError(f"{type(pdu).__name__} on the IN channel")
        except rts.RtsError as err:
            if vc.in_ctx is not None:
                vc.in_ctx.note(vc.key, "invalid", f"protocol-error: {err}")
            self._finish(vc, out_detail="partner-closed")
        except ConnectionError:
            self._finish(vc, in_detail=PEER_CLOSED, out_detail="partner-closed")
        except _OutGone:
            self._finish(vc, out_detail=PEER_CLOSED, in_detail="partner-closed")
        except Exception:  # a bug here must not leave the channel pair hanging
            log.exception("%s: RPC/HTTP IN channel failed", self.cas.name)
            self._finish(vc, in_detail="bug", out_detail="partner-closed")

    async def _on_request(
        self, vc: _VirtualConnection, pdu: rts.RequestPdu, calls: dict[int, bytearray], too_big: set[int]
    ) -> None:
        """Collect one request fragment; when the call is complete, answer it (its stub echoed) on OUT."""
        if pdu.pfc_flags & rts.Pfc.FIRST_FRAG:
            calls[pdu.call_id] = bytearray()
            too_big.discard(pdu.call_id)
        elif pdu.call_id not in calls:
            raise rts.RtsError(f"fragment of call {pdu.call_id} without its first fragment")
        stub = calls[pdu.call_id]
        if pdu.call_id not in too_big:
            stub += pdu.stub
            if len(stub) > MAX_CALL_STUB:
                too_big.add(pdu.call_id)
                stub.clear()
        if not pdu.pfc_flags & rts.Pfc.LAST_FRAG:
            return
        del calls[pdu.call_id]
        if pdu.call_id in too_big:
            too_big.discard(pdu.call_id)
            answer = [rts.FaultPdu(pdu.call_id, FAULT_TOO_BIG, pdu.context_id)]
        else:
            answer = rts.response_fragments(pdu.call_id, bytes(stub), pdu.context_id)
        await self._send_out(vc, b"".join(rts.encode_pdu(p) for p in answer))

    # -- pairing ------------------------------------------------------------------------------------
    async def _join(self, vc: _VirtualConnection) -> None:
        """Both halves are here: tell the client on OUT (CONN/C2)."""
        await self._send_out(vc, rts.conn_c2(RECEIVE_WINDOW, self._ms(self.in_keepalive_s)))
        vc.joined = True
        vc.decided.set()

    async def _paired(self, vc: _VirtualConnection, ctx: RequestContext) -> bool:
        """Wait (real time, not scaled) for the partner; a half left alone is a split, recorded foreign."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(vc.decided.wait(), self.cas.config.rpc_pairing_wait_s)
        if vc.joined and not vc.ended.is_set():
            return True
        if not vc.decided.is_set():
            ctx.note(vc.key, "foreign", "channel-split")
            self._finish(vc, out_detail="partner-closed", in_detail="partner-closed")  # a late partner
        return False

    async def _send_out(self, vc: _VirtualConnection, data: bytes) -> None:
        """Write down OUT; nothing once the virtual connection has ended. _OutGone if the write fails."""
        response = vc.out_response
        if response is None or vc.ended.is_set():
            return
        try:
            await response.write(data)
        except ConnectionError:
            raise _OutGone from None
        vc.last_out_send = time.monotonic()

    def _finish(self, vc: _VirtualConnection, *, out_detail: str = "", in_detail: str = "") -> None:
        """End the virtual connection: both handlers return. A half's detail is kept if it has one."""
        if vc.joined:  # a cut of either half: said with how late OUT's keep-alive was, if it was
            out_detail, in_detail = (
                self._cut(vc) if d == PEER_CLOSED else d for d in (out_detail, in_detail)
            )
        for ctx, detail in ((vc.out_ctx, out_detail), (vc.in_ctx, in_detail)):
            if ctx is not None and detail and not ctx.detail:
                ctx.note(vc.key, ctx.state, detail)
        if self._connections.get(vc.cookie) is vc:
            del self._connections[vc.cookie]
        vc.ended.set()
        vc.decided.set()

    def _cut(self, vc: _VirtualConnection) -> str:
        """The detail of a half of a virtual connection that the other side closed: with how long past
        its keep-alive ping's due time OUT had been silent, when that was more than
        caslab.records.KEEPALIVE_LATE_S. This CAS fell that far behind (its loop blocked), so the idle
        timeout that cut OUT (and the client, closing IN, then the whole virtual connection) may have run
        out for that reason alone; found in time, the cut came within the keep-alive interval."""
        overdue_s = time.monotonic() - vc.last_out_send - self.cas.scaled(self.out_keepalive_s)
        if overdue_s > KEEPALIVE_LATE_S:
            return detail_with(PEER_CLOSED, KEEPALIVE_LATE_FIELD, f"{overdue_s:.2f}")
        return PEER_CLOSED

    def _ms(self, seconds: float) -> int:
        """A keep-alive interval for the wire, in milliseconds of lab time."""
        return max(1, round(self.cas.scaled(seconds) * 1000))

    async def close(self) -> None:
        self._closed.set()
        for vc in list(self._connections.values()):
            self._finish(vc, out_detail=CAS_CLOSING, in_detail=CAS_CLOSING)


def _check_in_rts(pdu: rts.RtsPdu) -> None:
    """RTS PDUs a client may send on an open IN channel: Ping, Keep-Alive, FlowControlAck. All are taken
    in without an answer (the CAS holds no flow-control window to open)."""
    if rts.is_ping(pdu):
        return
    kinds = tuple(c.type for c in pdu.commands)
    if pdu.flags == rts.RtsFlag.OTHER_CMD and kinds in (
        (rts.Cmd.CLIENT_KEEPALIVE,),
        (rts.Cmd.DESTINATION, rts.Cmd.FLOW_CONTROL_ACK),
    ):
        return
    raise rts.RtsError(f"unexpected RTS PDU on the IN channel (flags {pdu.flags:#x})")


async def _read_pdu(content: StreamReader) -> bytes:
    """One whole PDU from a request body: the header says how long it is."""
    head = await content.readexactly(rts.HEADER_LENGTH)
    header = rts.parse_header(head)
    return head + await content.readexactly(header.frag_length - rts.HEADER_LENGTH)


def _fail(ctx: RequestContext, status: int, detail: str) -> web.Response:
    ctx.note(ctx.session_key, "invalid", detail)
    return web.Response(status=status, text=f"{status} - {detail}")
