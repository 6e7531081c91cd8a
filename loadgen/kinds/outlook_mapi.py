"""Outlook on the intranet: MAPI to the RPC Client Access service and NSPI to the Address Book, both
plain TCP, so the only thing a balancer can key on is the source address (DESIGN.md section 4).

Outlook opens several connections per session and expects all of them, and its Address Book binds, to
reach the one CAS that holds its session. A context handle from another CAS is refused
(`context-handle-unknown`, a hard break): Outlook then logs on again. An Address Book bind on a CAS
without the user's session is served after a referral (a soft break). EWS (free/busy) and the OAB go
over HTTP; cookies are kept for EWS only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from locust import task

from loadgen.kinds import register
from loadgen.kinds.outlook import OutlookHttp
from loadgen.wire.mapi import AddressBookConnection, Exchange, MapiConnection

CONNECTIONS_PER_SESSION = 3  # Outlook 2010 typically holds several RPC connections per mailbox
KEEPALIVE_S = 300  # Outlook's background traffic keeps its session alive (Exchange time)


@register
class OutlookMapi(OutlookHttp):
    client_kind = "outlook-mapi"
    keeps_cookies = True
    handle = ""
    last_mapi = 0.0

    def on_start(self) -> None:
        self.autodiscover()
        tcp = self.plan.endpoints.tcp
        mine = {"source_ip": self.source.ip, "session": self.session, "run_id": self.plan.run_id}
        self.mapi = [MapiConnection(tcp["mapi"], **mine) for _ in range(CONNECTIONS_PER_SESSION)]
        self.ab = AddressBookConnection(tcp["addressbook"], **mine)
        self.logon()

    def on_stop(self) -> None:
        for connection in [*self.mapi, self.ab]:
            connection.close()

    def exchange(self, service: str, name: str, run: Callable[[str], Exchange]) -> Exchange:
        """One MAPI or Address Book exchange (`run` takes the request id), reported like any request."""
        ctx = self.new_context(service)
        result: Exchange = run(ctx.request_id)
        if service == "mapi":
            self.last_mapi = time.monotonic()
        self.report(
            ctx,
            name=name,
            started=result.started,
            server=result.server,
            status=result.status,
            outcome=result.outcome,
            detail=result.detail,
            length=result.length,
        )
        return result

    def logon(self) -> None:
        first = self.mapi[0]
        result = self.exchange(
            "mapi", "mapi logon", lambda rid: first.logon(self.username, self.password, rid=rid)
        )
        self.handle = result.reply.get("handle", "") if result.ok else ""
        if not self.handle:
            return
        for connection in self.mapi[1:]:
            self.exchange("mapi", "mapi connect", lambda rid, c=connection: c.connect(self.handle, rid=rid))
        self.exchange(
            "addressbook", "ab bind", lambda rid: self.ab.bind(self.username, self.password, rid=rid)
        )

    @task(8)
    def rop(self) -> None:
        if not self.handle:
            self.logon()
            return
        connection = self.rng.choice(self.mapi)
        result = self.exchange("mapi", "mapi rop", lambda rid: connection.rop(self.handle, "x" * 64, rid=rid))
        if result.outcome not in ("ok", "cold", "transport"):
            self.handle = ""  # the CAS does not know (or no longer has) this session: Outlook logs on again

    def keep_alive(self) -> None:
        if self.handle and time.monotonic() - self.last_mapi > KEEPALIVE_S / self.plan.time_scale:
            first = self.mapi[0]
            self.exchange("mapi", "mapi ping", lambda rid: first.ping(self.handle, rid=rid))

    @task(2)
    def resolve_names(self) -> None:
        self.keep_alive()
        names = [f"user{self.rng.randint(1, 50)}" for _ in range(2)]
        result = self.exchange("addressbook", "ab resolve", lambda rid: self.ab.resolve(names, rid=rid))
        if result.outcome not in ("ok", "cold"):
            self.exchange(
                "addressbook", "ab bind", lambda rid: self.ab.bind(self.username, self.password, rid=rid)
            )

    @task(1)
    def free_busy_lookup(self) -> None:
        self.keep_alive()
        self.free_busy()

    @task(1)
    def offline_address_book(self) -> None:
        self.keep_alive()
        self.download_oab()
