"""Outlook 2010 and Outlook 2007 over Outlook Anywhere (RPC over HTTP).

Each holds two virtual connections open (store :6001 and address book :6004), each two HTTP requests
on two sockets (RPC_IN_DATA up, RPC_OUT_DATA down) that must meet on one CAS; RPC calls go up IN and
come back down OUT; keep-alive pings go up IN when it has been idle. Plus Autodiscover first, free/busy
through EWS and the OAB download over plain HTTP.

The two versions differ in what a balancer can key on (DESIGN.md section 4):
- Outlook 2010 makes its own `OutlookSession="{GUID}"` cookie and sends it from its first request, and
  keeps the cookies servers and balancers set (on EWS/OAB and on its RPC channels);
- Outlook 2007 keeps no cookies: only `User-Agent: MSRPC`, Basic `Authorization` and its address.
A virtual connection whose halves the balancer split fails after the CAS's pairing wait (a hard break);
Outlook then opens a new one, as the real client retries.

While the user is idle (its think time) Outlook's timers run: it pings each IN channel once nothing went
up it for the connection time-out the proxy announced (CONN/A3, CONN/C2: 12 minutes by default, 2 with
MinimumConnectionTimeout 120), and it reads OUT all along, so a channel that something closes or resets
under it (a balancer's idle timeout) is found at once. Such a virtual connection was **cut**: Outlook
records what it saw (an event with outcome `cut`, detail `eof` or `reset`, no request id: the CAS's
own rows are the channels' `peer-closed`/`partner-closed`) and opens a new one. A call that fails on a
cut channel is recorded the same way.
"""

from __future__ import annotations

import time
import uuid
from typing import ClassVar
from urllib.parse import urlsplit

from locust import task

from caslab.records import KEEPALIVE_LATE_FIELD, KEEPALIVE_LATE_S, detail_with
from loadgen.eventlog import EventContext
from loadgen.kinds import register
from loadgen.kinds.outlook import OUTLOOK_2007_USER_AGENT, OUTLOOK_2010_USER_AGENT, OutlookHttp
from loadgen.readable import readable
from loadgen.wire.rpchttp import ConnectResult, RpcHttpError, VirtualConnection

RPC_PORTS = (6001, 6004)  # the store (EMSMDB) and the address book (NSPI) endpoints


class OutlookAnywhere(OutlookHttp):
    abstract = True
    sends_outlook_session: ClassVar[bool] = False
    connections: dict[int, tuple[VirtualConnection, str]]  # port -> (connection, the CAS it joined on)

    def on_start(self) -> None:
        self.connections = {}
        if self.sends_outlook_session:
            self.set_cookie("OutlookSession", f'"{{{str(uuid.uuid4()).upper()}}}"')
        self.autodiscover()
        for port in RPC_PORTS:
            self.open(port)

    def on_stop(self) -> None:
        for vc, _server in self.connections.values():
            vc.close()

    def wait_time(self) -> float:
        self.idle(self.think())  # Outlook's timers run while its user thinks (see the module docstring)
        return 0.0

    def idle(self, seconds: float) -> None:
        """`seconds` of an idle user: ping IN when due, take in what comes down OUT, reopen what was cut."""
        end = time.monotonic() + seconds
        while True:
            self.tend()
            now = time.monotonic()
            if now >= end:
                return
            joined = [vc for vc, _server in self.connections.values() if vc.joined]
            due = min([vc.next_keepalive_at() for vc in joined] + [end])
            sockets = [sock for vc in joined for sock in vc.sockets()]
            if sockets:
                readable(sockets, due - now)  # wakes at a ping, a cut, or when due
            else:
                time.sleep(max(0.0, due - now))

    def tend(self) -> None:
        """Each virtual connection: a cut one is recorded and opened again; a live one pings IN if due."""
        connections = list(self.connections.items())
        ready = readable([sock for _port, (vc, _server) in connections for sock in vc.sockets()], 0)
        for port, (vc, _server) in connections:
            overdue_s = vc.overdue_s()  # before the ping: how long IN was silent past due when it went up
            seen = vc.check(ready)
            if seen:
                self.connections.pop(port)
                self._report_cut(port, seen, overdue_s)
                self.open(port)
            elif vc.joined:
                try:
                    vc.keep_alive()
                except RpcHttpError as err:  # the ping found IN broken
                    self.connections.pop(port)
                    if err.cut:
                        self._report_cut(port, err.cut, overdue_s)
                    self.open(port)
            else:
                self.connections.pop(port)

    def _report_cut(self, port: int, seen: str, late_s: float) -> None:
        """A cut virtual connection, found `late_s` after its keep-alive ping was due. Found before that,
        the idle timeout that cut it was shorter than the CAS's keep-alive interval; found later (the
        load generator fell behind), the cut may be the lab's, and the event says so when it is later than
        caslab.records.KEEPALIVE_LATE_S."""
        ctx = self.new_context("rpchttp")
        ctx.request_id = ""  # no request of its own: the CAS's rows are those of the channels
        name, now = f"rpchttp cut :{port}", time.time()
        if late_s > KEEPALIVE_LATE_S:
            seen = detail_with(seen, KEEPALIVE_LATE_FIELD, f"{late_s:.2f}")
        self.report(ctx, name=name, started=now, server="", status=0, outcome="cut", detail=seen)

    def channel_headers(self) -> dict[str, str]:
        cookies = self.cookie_header() if self.keeps_cookies else ""
        return {"Cookie": cookies} if cookies else {}

    def open(self, port: int) -> tuple[VirtualConnection, str] | None:
        base = urlsplit(self.url("rpchttp", "/"))
        tls = self.tls_context() if base.scheme == "https" else None
        self.follow_address()
        vc = VirtualConnection(
            (base.hostname or "", base.port or (443 if tls else 80)),
            source=self.source,
            user=self.username,
            password=self.password,
            rpc_port=port,
            ssl_context=tls,
            tls_sessions=self.tls_sessions,
            headers=self.channel_headers(),
            keep_cookies=self.keeps_cookies,
            run_id=self.plan.run_id,
        )
        out_ctx, in_ctx = self.new_context("rpchttp"), self.new_context("rpchttp")
        result = vc.connect(out_request_id=out_ctx.request_id, in_request_id=in_ctx.request_id)
        self._report_channels(result, out_ctx, in_ctx, port)
        for name, value in vc.cookies.items():  # a balancer cookie from this channel's answer: keep it
            self.set_cookie(name, value)
        if not result.joined:
            return None
        self.connections[port] = (vc, result.out_channel.server)
        return self.connections[port]

    def _report_channels(
        self, result: ConnectResult, out_ctx: EventContext, in_ctx: EventContext, port: int
    ) -> None:
        for ctx, channel in ((out_ctx, result.out_channel), (in_ctx, result.in_channel)):
            self.report(
                ctx,
                name=f"rpchttp {channel.method} :{port}",
                started=result.started,
                server=channel.server,
                status=max(channel.status, 0),
                outcome=result.outcome,
                detail=result.detail,
            )

    @task(8)
    def rpc(self) -> None:
        self.tend()
        port = self.rng.choice(RPC_PORTS)
        opened = self.connections.get(port) or self.open(port)
        if opened is None:
            return
        vc, server = opened
        ctx = self.new_context("rpchttp")
        ctx.request_id = ""  # a call inside a channel: the CAS ledger has a row per channel, not per call
        started = time.time()
        try:
            answer = vc.call(opnum=self.rng.choice((10, 11, 14)), stub=b"\0" * self.rng.randint(16, 512))
        except RpcHttpError as err:  # a channel cut under the call, or no answer in time
            self.connections.pop(port, None)
            self.report(
                ctx,
                name=f"rpchttp call :{port}",
                started=started,
                server="",
                status=0,
                outcome="cut" if err.cut else "transport",
                detail=err.cut or str(err),
            )
            return
        self.report(
            ctx,
            name=f"rpchttp call :{port}",
            started=started,
            server=server,
            status=200,
            outcome="ok",
            length=len(answer),
        )

    @task(1)
    def free_busy_lookup(self) -> None:
        self.free_busy()

    @task(1)
    def offline_address_book(self) -> None:
        self.download_oab()


@register
class Outlook2010(OutlookAnywhere):
    client_kind = "outlook2010-rpchttp"
    user_agent = OUTLOOK_2010_USER_AGENT
    sends_outlook_session = True
    keeps_cookies = True


@register
class Outlook2007(OutlookAnywhere):
    client_kind = "outlook2007-rpchttp"
    user_agent = OUTLOOK_2007_USER_AGENT
    keeps_cookies = False
