"""The protocol handlers of the mock CAS, one module per service, registered by name.

Contract for an HTTP service (like an httpx transport: one narrow interface):
- subclass `HttpService`, set `id` (a service id of caslab.vocab.HTTP_SERVICES) and decorate with `@register`;
- the CAS routes every request whose path, in any case, is one of `caslab.vocab.SERVICE_PATHS[id]` or lies
  below one (`/owa`, `/OWA/...`, never `/owanext`) to `await handle(request, ctx)`; `ctx.path` is the
  lower-cased path (IIS matches case-insensitively);
- `handle` returns the response (or streams it and returns it) and calls `ctx.note(session_key, state,
  detail)` when it knows what server state the request used (a later note replaces an earlier one);
  the CAS writes the ledger row, with the response status, when the response is done. A request that
  notes nothing is recorded as state "none";
- bad input gets the protocol's own error (and a note, mostly with state "invalid"), never an exception:
  anything that escapes `handle` becomes a bare 500 and a ledger row with detail "bug" (an aiohttp
  `HTTPException` is the one exception: aiohttp answers it itself);
- state lives on the service instance, so it is this CAS's alone; `self.cas` gives the shared parts
  (config, keys, users, ledger, `scaled` for protocol timers). Two exceptions, both within one CAS:
  OWA and ECP share its forms logon (`mockcas.fba.forms_auth(cas)`), as the two applications of one IIS
  site do, and the Address Book asks its MAPI service whether a user has a session there;
- `close()` ends hanging requests (Pings, RPC channels) when the CAS stops.

A TCP service (MAPI, Address Book) subclasses `TcpService`, sets `id` and `port_attr` (the CasConfig
field with its port), handles one connection in `handle_connection`, and records its own ledger rows
with `self.cas.record(...)`.

Adding a service is adding a module here: the registries import every module of this package when a CAS
first asks for its services (caslab.registry: a name outside the vocabulary, or registered twice, raises).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar, TypeVar

from aiohttp import web

from caslab import vocab
from caslab.registry import Registry

if TYPE_CHECKING:
    from mockcas.cas import Cas


class RequestContext:
    """What the CAS knows about one HTTP request while a service handles it."""

    __slots__ = ("detail", "path", "recorded", "service", "session_key", "state")

    def __init__(self, service: str, path: str) -> None:
        self.service = service
        self.path = path
        self.session_key = ""
        self.state = "none"
        self.detail = ""
        self.recorded = False  # the ledger row is written already

    def note(self, session_key: str, state: str, detail: str = "") -> None:
        """Say which server state this request used, for the ledger."""
        self.session_key, self.state, self.detail = session_key, state, detail


class HttpService:
    """One HTTP service of one CAS (see the module docstring for the contract)."""

    id: ClassVar[str]

    def __init__(self, cas: Cas) -> None:
        self.cas = cas

    async def handle(self, request: web.Request, ctx: RequestContext) -> web.StreamResponse:
        raise NotImplementedError

    async def close(self) -> None:
        """End anything this service keeps open (hanging requests, timers)."""


class TcpService:
    """One TCP service of one CAS, on its own port (see the module docstring)."""

    id: ClassVar[str]
    port_attr: ClassVar[str]

    def __init__(self, cas: Cas) -> None:
        self.cas = cas

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """End anything this service keeps open."""


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
