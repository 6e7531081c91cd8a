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
"""

from __future__ import annotations

import ssl
import time
import uuid
from typing import ClassVar
from urllib.parse import urlsplit

from locust import task

from loadgen.eventlog import EventContext
from loadgen.kinds import register
from loadgen.kinds.outlook import OutlookHttp
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

    def channel_headers(self) -> dict[str, str]:
        cookies = self.cookie_header() if self.keeps_cookies else ""
        return {"Cookie": cookies} if cookies else {}

    def open(self, port: int) -> tuple[VirtualConnection, str] | None:
        base = urlsplit(self.url("rpchttp", "/"))
        tls = None
        if base.scheme == "https":
            tls = ssl.create_default_context()
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # the lab's CA is not the point here
        self.follow_address()
        vc = VirtualConnection(
            (base.hostname or "", base.port or (443 if tls else 80)),
            source=self.source,
            user=self.username,
            password=self.password,
            rpc_port=port,
            ssl_context=tls,
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
        for port, (vc, _server) in list(self.connections.items()):
            if not vc.joined:
                self.connections.pop(port)
            else:
                vc.keep_alive()
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
        except RpcHttpError as err:
            self.connections.pop(port, None)
            self.report(
                ctx,
                name=f"rpchttp call :{port}",
                started=started,
                server="",
                status=0,
                outcome="transport",
                detail=str(err),
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
    sends_outlook_session = True
    keeps_cookies = True


@register
class Outlook2007(OutlookAnywhere):
    client_kind = "outlook2007-rpchttp"
    keeps_cookies = False
