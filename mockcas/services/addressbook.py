"""The Address Book service (NSPI) as a TCP service, speaking the line protocol of lines.py.

Exchange 2010's Address Book service checks where the user's mailbox is served and refers Outlook to
that CAS (RFR), which costs extra round trips when the bind reached another one. The lab stands for it
with the user's MAPI session: a bind on a CAS that holds one is `own`; a bind on a CAS that does not is
served after a referral round trip (`ab_referral_cost_ms`), says `"referred": true` and is `cold` in
the ledger: a soft break, the cost of sending the two ports of one Outlook to different CAS.

Ops (port `ab_port`, default 59532); the bind belongs to the connection, as NSPI's binding does:
  bind     user, password -> user, referred   NspiBind; own, or cold after a referral
  resolve  names (a list of 1 to 100 strings) -> resolved   NspiResolveNames after a bind: for each name
                                              the user's address, or null; 409 not-bound before a bind
  ping     keep-alive (own when the connection is bound, else none)
  bye      the client closes this connection on purpose (lines.py)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mockcas.services import register
from mockcas.services.lines import Answer, JsonLineService, ProtocolError, Request

if TYPE_CHECKING:
    from mockcas.cas import Cas

MAX_NAMES = 100


@register
class AddressBookService(JsonLineService):
    id = "addressbook"
    port_attr = "ab_port"

    def __init__(self, cas: Cas) -> None:
        super().__init__(cas)
        self.ops |= {"bind": self.bind, "resolve": self.resolve, "ping": self.ping}

    async def bind(self, request: Request) -> Answer:
        user = self.cas.users.check(request.text("user"), request.text("password"))
        if user is None:
            raise ProtocolError(401, "logon-failed", "unknown user or wrong password", state="none")
        request.conn.bound_user = user
        if self.cas.tcp_services["mapi"].has_session(user):
            return Answer("own", user, {"user": user, "referred": False})
        await asyncio.sleep(self.cas.config.ab_referral_cost_ms / 1000)
        return Answer("cold", user, {"user": user, "referred": True})

    async def resolve(self, request: Request) -> Answer:
        user = request.conn.bound_user
        if not user:
            raise ProtocolError(409, "not-bound", "bind on this connection first")
        names = request.fields.get("names")
        if (
            not isinstance(names, list)
            or not 1 <= len(names) <= MAX_NAMES
            or not all(isinstance(n, str) for n in names)
        ):
            raise ProtocolError(
                400, "bad-request", f"names must be a list of 1 to {MAX_NAMES} strings", session_key=user
            )
        return Answer("own", user, {"resolved": [self.cas.users.canonical(n) for n in names]})

    async def ping(self, request: Request) -> Answer:
        user = request.conn.bound_user
        return Answer("own" if user else "none", user)
