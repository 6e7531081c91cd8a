"""The contract of a mock CAS protocol service: one module per service in this package, registered by name.

A service is one protocol of an Exchange 2010 CAS (the names of `caslab.vocab.SERVICES`). It is either
an HTTP service (`HttpService`: the CAS routes requests of its virtual directories to it) or a TCP
service (`TcpService`: the CAS hands it every connection to its port). Both are narrow, in the way of
httpx's `BaseTransport`: the methods below are all the CAS calls, and their docstrings say what a
service must do and what it may assume. The TCP services (MAPI, Address Book) share one line protocol;
its base, `JsonLineService`, lives in `mockcas.services.lines` beside this contract.

What every service may assume:
- one instance per CAS, made when the CAS is made, called on that CAS's one event loop; state kept on
  the instance is this CAS's alone (what a balancer must respect);
- `self.cas` gives the shared parts of its CAS: `config`, `name`, the users (`users.check`,
  `users.check_basic`), the keys (`server_sealer` signs state only this CAS accepts, `farm_sealer`
  mailbox state any CAS accepts), `scaled(seconds)` for protocol timers, `record(...)` for ledger rows.

What every service must do:
- answer bad input with the protocol's own error, never an exception (one that escapes is a bug: the
  CAS answers 500, or the line protocol's server-error, and writes a ledger row with detail "bug");
- say for every request what server state it used, for the ledger (`caslab.records.LEDGER_STATES`);
- note a request it holds open (a Ping, an RPC/HTTP channel) whose connection the other side closed
  before the answer with detail `caslab.records.PEER_CLOSED`: the CAS's side of a cut (DESIGN.md 13);
- end in `close()` whatever it holds open (hanging requests, channels, connections).

Services read each other's state only within one CAS and only along two documented paths: OWA and ECP
share the CAS's forms logon (`mockcas.fba.forms_auth(cas)`), as the two applications of one IIS site
do; and the Address Book asks `self.cas.tcp_services["mapi"].has_session(user)` (`TcpService.has_session`).
No service imports another service's module.

Adding a service is adding a module (or a package whose `__init__` imports its service) here, with
`@register` on its class: the registries import every module of this package when a CAS first asks for
its services (caslab.registry: a name outside the vocabulary, or registered twice, raises).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar, TypeVar

from aiohttp import web
from multidict import istr

from caslab import vocab
from caslab.registry import Registry

if TYPE_CHECKING:
    from mockcas.cas import Cas


class RequestContext:
    """What the CAS knows about one HTTP request while a service handles it: the service id, the path in
    lower case, when it arrived, what the service noted for the request's ledger row, and the user its
    credentials proved (set by a service that checks Basic credentials in `refusal`, or by OWA and ECP
    from the forms logon; the IIS log writes it as cs-username)."""

    __slots__ = ("detail", "path", "recorded", "service", "session_key", "started", "state", "user")

    def __init__(self, service: str, path: str, started: float) -> None:
        self.service = service
        self.path = path
        self.started = started  # epoch seconds: the ledger row's ts
        self.session_key = ""
        self.state = "none"
        self.detail = ""
        self.user = ""
        self.recorded = False  # the ledger row is written already

    def note(self, session_key: str, state: str, detail: str = "") -> None:
        """Say which server state this request used, for the ledger (a later note replaces an earlier
        one). `session_key` is what the state is keyed on (a logon, device, subscription, channel...);
        `detail` a few words for people reading the ledger."""
        self.session_key, self.state, self.detail = session_key, state, detail


class HttpService:
    """One HTTP service of one CAS. Subclass it, set `id` (one of `caslab.vocab.HTTP_SERVICES`), implement
    `handle`, decorate the class with `@register`."""

    id: ClassVar[str]

    def __init__(self, cas: Cas) -> None:
        self.cas = cas

    async def handle(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        """Answer one request of this service and note its ledger state with `ctx.note(...)`.

        The service may assume: the request's path, in any case, is one of
        `caslab.vocab.SERVICE_PATHS[self.id]` or lies below one (`/owa`, `/OWA/...`, never `/owanext`),
        and `ctx.path` is that path in lower case (IIS matches case-insensitively); the balancers' health
        URL is answered by the CAS itself while its health switch is not "up"; a returned response will
        carry `X-CasLab-Server` and `X-CasLab-State` (from the latest note) without the service's help.

        The service must: return the response, or start it with `self.prepare` (never the response's own
        `prepare`, which would leave out the CAS's headers), stream it, and return it; note the request's
        state before the response starts (a request that notes nothing is recorded as "none"); answer
        bad input with the protocol's own error and a note (mostly state "invalid").
        The CAS writes the ledger row, with the response's status, when the response is done. An
        exception that escapes becomes a bare 500 with detail "bug", with two exceptions: an aiohttp
        `HTTPException`, which aiohttp answers itself, and a `ConnectionError` while reading the request
        (the peer went away mid-body), which the CAS records as 499 `peer-closed` for the service.
        """
        raise NotImplementedError

    def refusal(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse | None:
        """The answer this service gives `request` when it turns the request away on its request line and
        headers alone, before reading any of its body: IIS's 401 for missing or wrong credentials, the
        forms logon's answer to a request without a logon, or the service's own answer to a request its
        headers rule out; noted in `ctx` as `handle` notes it. None when the service takes the request;
        a service that checks Basic credentials then leaves the user in `ctx.user`.

        Why: a client that sends `Expect: 100-continue` waits for `100 Continue` before it sends the body,
        and IIS authenticates a request before it lets it on, so a wrong password gets its 401 instead
        of 100. For such a request the CAS asks `refusal` first and sends `100 Continue` only when it
        is None; otherwise the refusal is the answer, and the connection closes (the client never sent
        the body).

        Whatever `refusal` turns away, `handle` must turn away with the same answer (the simplest way:
        `handle` starts with `refusal`); `handle` may refuse more once it has read the body. The default
        refuses nothing: for a service that takes anyone, or whose credentials come in the body.
        """
        return None

    async def prepare(
        self, request: web.BaseRequest, response: web.StreamResponse, ctx: RequestContext
    ) -> None:
        """Start a response the service streams (its status line and headers go out now), with the
        headers every answer of the CAS carries; the request's state must be noted by then."""
        add_cas_headers(response, self.cas.name, ctx)
        await response.prepare(request)

    async def close(self) -> None:
        """End anything this service keeps open (hanging requests, timers): the CAS is stopping, or the
        lab wants the rows of open requests written (`POST /caslab/close`)."""


# The lab's header names as multidict's istr, which aiohttp's header maps take without case-folding them
# first (aiohttp's own `hdrs` names are istr for that reason): every request reads or sets them all.
SERVER_HEADER, STATE_HEADER = istr(vocab.SERVER_HEADER), istr(vocab.STATE_HEADER)
REQUEST_ID_HEADER, RUN_HEADER = istr(vocab.REQUEST_ID_HEADER), istr(vocab.RUN_HEADER)


def add_cas_headers(response: web.StreamResponse, server: str, ctx: RequestContext) -> None:
    """The headers every HTTP answer of a CAS carries, added before it starts: `X-CasLab-Server` names the
    CAS (clients and tests see who answered through the balancer), `X-CasLab-State` the ledger state
    noted for the request."""
    response.headers[SERVER_HEADER] = server
    response.headers[STATE_HEADER] = ctx.state


class TcpService:
    """One TCP service of one CAS, on its own port. Subclass it (or `mockcas.services.lines
    .JsonLineService`, which speaks the lab's line protocol), set `id` (one of
    `caslab.vocab.TCP_SERVICES`) and `port_attr` (the `CasConfig` field with its port), decorate the
    class with `@register`."""

    id: ClassVar[str]
    port_attr: ClassVar[str]

    def __init__(self, cas: Cas) -> None:
        self.cas = cas

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection until either side ends it, then close `writer`.

        The service must write the ledger rows of the connection's exchanges itself, with
        `self.cas.ledger.record(...)` (there is no HTTP layer to do it), one row per request the client sent,
        before the reply leaves, so a client holding a reply can find its row; and one row with detail
        `caslab.records.PEER_CLOSED` for a connection that carried requests and that the other side
        closed without the protocol's goodbye (a cut, DESIGN.md section 13)."""
        raise NotImplementedError

    def has_session(self, user: str) -> bool:
        """Whether `user` has a live session with this service on this CAS. Another service of the same
        CAS may ask (the Address Book asks MAPI); a service without sessions answers False."""
        return False

    async def close(self) -> None:
        """End the connections this service keeps open: the CAS is stopping."""


HTTP_SERVICES: Registry[type[HttpService]] = Registry(
    "HTTP service", vocab.HTTP_SERVICES, __name__, lambda c: c.id
)
TCP_SERVICES: Registry[type[TcpService]] = Registry(
    "TCP service", vocab.TCP_SERVICES, __name__, lambda c: c.id
)


_S = TypeVar("_S", type[HttpService], type[TcpService])


def register(cls: _S) -> _S:
    """Class decorator: make a service known to every CAS under its `id`."""
    registry = HTTP_SERVICES if issubclass(cls, HttpService) else TCP_SERVICES
    return registry.register(cls)  # type: ignore[return-value]
