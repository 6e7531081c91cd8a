"""The sockets of one mock CAS: HTTP and HTTPS service ports, the TCP MAPI and Address Book ports, and
the admin port (never behind the balancer). `CasServer` starts and stops them all; `serve_forever` runs
one CAS until it is signalled (`caslab cas`).

Every HTTP response carries `X-CasLab-Server: <name>` and `X-CasLab-State: <ledger state>` (noted by the
service before it starts the response). The ledger row of an HTTP request is written by
an aiohttp access logger, because aiohttp calls it for every request, including those its parser
rejected before any handler ran (oversized headers, bogus request lines): nothing escapes the ledger.
The same logger writes the request's line in the CAS's IIS log, when it keeps one (mockcas.w3c).

The service ports run aiohttp's low-level server (`web.Server`) with one handler, `dispatch`, rather than
an `Application`: the CAS routes on a path's first segment itself, and an Application's URL dispatcher,
match info and response signals cost about 10 us of the ~75 us the CAS spent on an OWA page
(bench/bench_owa.py). The headers every answer carries are added as it leaves `dispatch`, or by
`HttpService.prepare` for an answer a service streams.

`Expect: 100-continue` is answered after authentication, as IIS does: `dispatch` sends `100 Continue`
only when the service does not refuse the request on its headers (`HttpService.refusal`: a wrong
password gets its 401 and never a 100). Any other expectation gets 417.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.abc import AbstractAccessLogger, AbstractStreamWriter
from aiohttp.http import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from caslab.records import KEEPALIVE_LATE_S, PEER_CLOSED
from caslab.vocab import HEALTH_BODY, HEALTH_PATH, SERVICE_PATHS
from mockcas import iis
from mockcas.cas import Cas
from mockcas.config import CasConfig
from mockcas.services import REQUEST_ID_HEADER, RUN_HEADER, RequestContext, add_cas_headers
from mockcas.users import parse_basic

log = logging.getLogger("mockcas")

_CTX = web.RequestKey("caslab_ctx", RequestContext)

# Every virtual directory is one path segment (`/owa`; tests/test_mockcas_core.py holds them to that),
# so the service of a path is one dict look-up of its first segment: this runs once per request.
_SERVICE_BY_VDIR: dict[str, str] = {vdir: sid for sid, vdirs in SERVICE_PATHS.items() for vdir in vdirs}


def client_ip(request: web.BaseRequest) -> str:
    """The client as the balancer reported it (first X-Forwarded-For entry), else the TCP peer."""
    forwarded = request.headers.get(hdrs.X_FORWARDED_FOR, "")
    first = forwarded.split(",", 1)[0].strip()
    return first or (request.remote or "")


def service_for(path: str) -> str | None:
    """The service whose virtual directory holds `path` (no query): the path is one of its prefixes or
    lies below one, in any case (`/OWA/...`); never a longer name (`/owanext`)."""
    if not path.startswith("/"):
        return None
    return _SERVICE_BY_VDIR.get("/" + path[1:].partition("/")[0].lower())


def _log_iis(cas: Cas, request: web.BaseRequest, ctx: RequestContext, status: int, started: float) -> None:
    """The request's line in the CAS's IIS log (mockcas.w3c), when it keeps one."""
    if cas.w3c is None:
        return
    ended = time.time()
    cas.w3c.write(
        ended=ended,
        server_ip=cas.config.host,
        server_port=cas.config.https_port if request.secure else cas.config.http_port,
        method=request.method,
        target=request.raw_path,
        username=_logged_user(request, ctx, status),
        client_ip=request.remote or "",
        user_agent=request.headers.get(hdrs.USER_AGENT, ""),
        status=status,
        time_taken_ms=round((ended - started) * 1000),
        forwarded_for=request.headers.get(hdrs.X_FORWARDED_FOR, ""),
    )


def _logged_user(request: web.BaseRequest, ctx: RequestContext, status: int) -> str:
    """IIS's cs-username: the user the request authenticated as. A service that checked credentials or
    a forms logon names the user (`ctx.user`); otherwise the name in Basic credentials IIS let through;
    nobody for an anonymous request or a 401."""
    if ctx.user:
        return ctx.user
    credentials = parse_basic(request.headers.get(hdrs.AUTHORIZATION)) if status != 401 else None
    return credentials[0] if credentials else ""


def _ledger_logger_class(cas: Cas) -> type[AbstractAccessLogger]:
    class LedgerAccessLogger(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time_taken: float) -> None:
            ctx = request.get(_CTX)
            if ctx is None:  # rejected by the parser before any handler ran: no IIS line (that is HTTPERR's)
                path = request.path
                ctx = RequestContext(service_for(path) or "unknown", path.lower(), time.time() - time_taken)
                ctx.note("", "invalid", f"http {response.status}")
            elif ctx.recorded:
                return
            else:
                _log_iis(cas, request, ctx, response.status, ctx.started)
            headers = request.headers
            cas.ledger.record(
                ctx.started,
                ctx.service,
                ctx.session_key,
                client_ip(request),
                ctx.state,
                response.status,
                headers.get(REQUEST_ID_HEADER, ""),
                headers.get(RUN_HEADER, ""),
                ctx.detail,
            )

    return LedgerAccessLogger


def _expectation(request: web.BaseRequest) -> str:
    """What an HTTP/1.1 request expects (its Expect header, in lower case): "100-continue" from a client
    that waits for `100 Continue` before it sends the body, "" for none (HTTP/1.0 has no expectations)."""
    expect = request.headers.get(hdrs.EXPECT)
    return expect.lower() if expect and request.version == HttpVersion11 else ""


async def _answer_and_close(
    request: web.BaseRequest, response: web.StreamResponse, server: str, ctx: RequestContext
) -> None:
    """Send `response` with `Connection: close` and close the connection: the client never sent the body,
    and may never (aiohttp would otherwise wait its lingering time for one)."""
    add_cas_headers(response, server, ctx)
    response.force_close()
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()  # after the answer went out: this closes the transport at once


async def _send_continue(request: web.BaseRequest) -> None:
    """`100 Continue`, written as aiohttp's default expect handler writes it."""
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer proper has not started


def build_service_server(cas: Cas) -> web.Server:
    """The aiohttp low-level server behind the service ports (HTTP and HTTPS); made in the CAS's event
    loop. Its access logger writes the ledger row of every request."""
    loop = asyncio.get_running_loop()
    max_body = cas.config.max_body_bytes

    def make_request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # As aiohttp's Application makes its requests, with the CAS's body limit (the server's is 1 MiB).
        return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=max_body)

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        ctx = RequestContext(service_for(path) or "unknown", path.lower(), time.time())
        request[_CTX] = ctx
        try:
            response = await serve(request, ctx)
        except web.HTTPException as answer:  # aiohttp's own answer (a body over the limit): the CAS's too
            add_cas_headers(answer, cas.name, ctx)
            raise
        if not response.prepared:
            add_cas_headers(response, cas.name, ctx)
        return response

    async def serve(request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        sid = ctx.service
        if ctx.path == HEALTH_PATH.lower() and cas.health != "up":
            ctx.note("", "none", f"health {cas.health}")
            status = 503 if cas.health == "down" else 404
            return web.Response(status=status, text=f"{status} - {HEALTH_BODY} is {cas.health}")
        if sid not in cas.http_services:
            ctx.note("", "invalid", "no such virtual directory")
            return iis.not_found()
        expect = _expectation(request)
        if expect and expect != "100-continue":  # 417, as from aiohttp's Application
            ctx.note("", "invalid", "unknown expectation")
            return web.Response(status=417, text=f"Unknown Expect: {request.headers[hdrs.EXPECT]}")
        service = cas.http_services[sid]
        cas.inflight += 1
        cas.peak_inflight = max(cas.peak_inflight, cas.inflight)
        try:
            if expect:
                refused = service.refusal(request, ctx)
                if refused is not None:
                    await _answer_and_close(request, refused, cas.name, ctx)
                    return refused
                await _send_continue(request)
            return await service.handle(request, ctx)
        except asyncio.CancelledError:
            # The CAS is stopping with this request in flight: aiohttp will not log it, so write the row
            # here. (A client that vanishes does not cancel the handler; services see a reset instead.)
            _log_iis(cas, request, ctx, 499, ctx.started)
            cas.ledger.record(
                ts=ctx.started,
                service=sid,
                session_key=ctx.session_key,
                client_ip=client_ip(request),
                state=ctx.state,
                status=499,
                request_id=request.headers.get(REQUEST_ID_HEADER, ""),
                run_id=request.headers.get(RUN_HEADER, ""),
                detail="cancelled",
            )
            ctx.recorded = True
            raise
        except web.HTTPException:
            raise
        except ConnectionError:
            # The peer (a client, or a balancer giving up on it) closed the connection while the service
            # read the request: nobody is there for an answer, and it is no bug of the service's.
            ctx.note(ctx.session_key, ctx.state, PEER_CLOSED)
            return web.Response(status=499)
        except Exception:
            log.exception("%s: unhandled error in %s", cas.name, sid)
            ctx.note(ctx.session_key, "invalid", "bug")
            return web.Response(status=500, text="500 - Internal server error.")
        finally:
            cas.inflight -= 1

    return web.Server(
        dispatch,
        request_factory=make_request,
        access_log_class=_ledger_logger_class(cas),
        access_log=log,
    )


def build_admin_app(cas: Cas) -> web.Application:
    """The admin listener: health, incremental ledger, stats, fault switches, and `POST /caslab/close`
    (end open channels and hanging requests before a stop). Never behind the VIP. Health, stats and
    each ledger page name the run this CAS serves (`run`), and health the CAS's process (`pid`), so a
    lab can prove that the CAS answering on an address is its own."""
    app = web.Application()
    run = cas.config.run_id

    async def health(_request: web.Request) -> web.Response:
        return web.json_response(
            {"server": cas.name, "health": cas.health, "ok": True, "run": run, "pid": os.getpid()}
        )

    async def ledger(request: web.Request) -> web.Response:
        try:
            since = max(int(request.query.get("since", "0")), 0)
        except ValueError:
            return web.json_response({"error": "since must be an integer"}, status=400)
        rows = cas.ledger.since(since)
        return web.json_response({"server": cas.name, "run": run, "next": since + len(rows), "rows": rows})

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(cas.stats())

    async def fault(request: web.Request) -> web.Response:
        value = request.query.get("health", "")
        try:
            cas.set_health(value)
        except ValueError as err:
            return web.json_response({"error": str(err)}, status=400)
        log.info("%s: health %s", cas.name, value)
        return web.json_response({"server": cas.name, "health": cas.health})

    async def close(_request: web.Request) -> web.Response:
        # End hanging requests (Pings, RPC/HTTP channels) so their ledger rows are written while the
        # admin port can still hand them out; the lab calls this before it stops a CAS.
        await cas.close()
        return web.json_response({"server": cas.name, "closed": True})

    app.router.add_get("/caslab/health", health)
    app.router.add_post("/caslab/close", close)
    app.router.add_get("/caslab/ledger", ledger)
    app.router.add_get("/caslab/stats", stats)
    app.router.add_route("*", "/caslab/fault", fault)
    return app


# asyncio gives every TLS connection a read buffer of SSLProtocol.max_size (the socket's bytes go through
# it into OpenSSL), allocated and zeroed when the connection opens and held while it lives: 256 KiB,
# measured as about 280 KB of CAS memory per held RPC/HTTP channel or EAS Ping over HTTPS against 19 KB
# over HTTP (bench/bench_tls.py; CPython issue #109534). The lab's requests are a few KB, so 4 KiB reads
# most in one go: 12 KB less per held connection than 16 KiB (bench/bench_tls_floor.py), for ~15% more
# server CPU on a 30 KB upload, read in 4 KiB pieces (OpenSSL keeps the rest of a record until it comes).
TLS_READ_BUFFER = 4 * 1024


def server_ssl_context(config: CasConfig) -> ssl.SSLContext | None:
    if not config.cert_file:
        return None
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER  # see TLS_READ_BUFFER
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.cert_file, config.key_file)
    return ctx


# The CAS's event loop is watched by a task that sleeps LOOP_TICK_S at a time: a wake-up later than that
# by more than LOOP_LAG_S is a lag, written down with its time. The bound is the clients' for a late
# keep-alive (caslab.records): a CAS that far behind may be what a balancer's idle timer saw. At most
# LOOP_LAGS_KEPT are kept (a CAS that far behind that often has said enough).
LOOP_TICK_S = 0.05
LOOP_LAG_S = KEEPALIVE_LATE_S
LOOP_LAGS_KEPT = 1000


async def watch_loop(cas: Cas) -> None:
    """Write down each time the running event loop woke this task up late (see LOOP_LAG_S)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LOOP_TICK_S
        await asyncio.sleep(LOOP_TICK_S)
        lag = loop.time() - due
        if lag > LOOP_LAG_S and len(cas.loop_lags) < LOOP_LAGS_KEPT:
            cas.loop_lags.append((time.time() - lag, lag))


class CasServer:
    """All listeners of one CAS. `await start()`, then `await stop()`; usable as an async context."""

    def __init__(self, config: CasConfig) -> None:
        self.config = config
        self.cas = Cas(config)
        self._runners: list[web.BaseRunner] = []
        self._tcp_servers: list[asyncio.Server] = []
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.config
        service_runner = web.ServerRunner(build_service_server(self.cas), handle_signals=False)
        admin_runner = web.AppRunner(build_admin_app(self.cas), access_log=None, handle_signals=False)
        for runner in (service_runner, admin_runner):
            await runner.setup()
            self._runners.append(runner)
        await web.TCPSite(service_runner, cfg.host, cfg.http_port, reuse_address=True).start()
        ssl_ctx = server_ssl_context(cfg)
        if ssl_ctx:
            await web.TCPSite(
                service_runner, cfg.host, cfg.https_port, ssl_context=ssl_ctx, reuse_address=True
            ).start()
        for service in self.cas.tcp_services.values():
            port = getattr(cfg, service.port_attr)
            self._tcp_servers.append(
                await asyncio.start_server(service.handle_connection, cfg.host, port, reuse_address=True)
            )
        self._watch = asyncio.create_task(watch_loop(self.cas))
        # The admin port opens last: when /caslab/health answers, every other listener is up.
        await web.TCPSite(admin_runner, cfg.host, cfg.admin_port, reuse_address=True).start()
        log.info("%s: listening on %s (http %s, admin %s)", cfg.name, cfg.host, cfg.http_port, cfg.admin_port)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        await self.cas.close()
        for server in self._tcp_servers:
            server.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self.cas.w3c is not None:
            self.cas.w3c.close()  # after the runners: the last requests' lines are written by now
        for server in self._tcp_servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._runners.clear()
        self._tcp_servers.clear()

    async def __aenter__(self) -> CasServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


async def serve_forever(config: CasConfig) -> None:
    """Run one CAS until SIGTERM or SIGINT."""
    server = CasServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
