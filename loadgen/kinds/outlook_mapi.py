"""Outlook on the intranet: MAPI to the RPC Client Access service and NSPI to the Address Book, both
plain TCP, so the only thing a balancer can key on is the source address (DESIGN.md section 4).

Outlook opens several connections per session and expects all of them, and its Address Book binds, to
reach the one CAS that holds its session. A context handle from another CAS is refused
(`context-handle-unknown`, a hard break): Outlook then logs on again. An Address Book bind on a CAS
without the user's session is served after a referral (a soft break). EWS (free/busy) and the OAB go
over HTTP; cookies are kept for EWS only.

Its connections stay open for the whole session and idle between bursts, as Outlook's do: the first
carries the mailbox's operations (and a ping after 5 idle minutes), the others stand for the further
connections Outlook holds (other stores, notifications) and carry only their `connect`; the Address
Book's carries the name look-ups. Nothing but TCP keep-alives (the CAS's, after its KeepAliveTime)
crosses an idle connection, so a balancer whose idle timeout is shorter closes it: Outlook finds the
connection dead (it watches every connection while its user is idle, and checks one before it uses it),
records a **cut** (outcome `cut`, detail `eof` or `reset`) and opens it again, presenting its handle
(MAPI) or binding (Address Book). It says goodbye on each connection when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from locust import task

from loadgen.kinds import register
from loadgen.kinds.outlook import OUTLOOK_2010_USER_AGENT, OutlookHttp
from loadgen.readable import readable
from loadgen.wire.mapi import AddressBookConnection, Exchange, LineConnection, MapiConnection

CONNECTIONS_PER_SESSION = 3  # Outlook 2010 typically holds several RPC connections per mailbox
KEEPALIVE_S = 300  # Outlook's background traffic keeps its session alive (Exchange time)


@register
class OutlookMapi(OutlookHttp):
    client_kind = "outlook-mapi"
    user_agent = OUTLOOK_2010_USER_AGENT
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
            service, name = self._what(connection)
            if connection.connected:
                self.exchange(service, f"{name} bye", lambda rid, c=connection: c.goodbye(rid=rid))

    def wait_time(self) -> float:
        self.idle(self.think())  # Outlook watches its connections while its user thinks
        return 0.0

    def idle(self, seconds: float) -> None:
        """`seconds` of an idle user, its open connections watched: one cut under it is reopened."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            sockets = [c.fileno() for c in [*self.mapi, self.ab] if c.connected]
            if not sockets:
                time.sleep(left)
                return
            if readable(sockets, left) and not self.tend():
                time.sleep(left)  # bytes nobody asked for, not a cut: no use watching them all the time
                return

    def tend(self) -> int:
        """Every open connection checked: one found cut is recorded and opened again. How many were."""
        cuts = 0
        connections = [*self.mapi, self.ab]
        ready = readable([c.fileno() for c in connections if c.connected], 0)  # one poll for all of them
        for connection in connections:
            found = connection.check(ready)
            if found is not None:
                cuts += 1
                service, name = self._what(connection)
                self.exchange(service, f"{name} cut", lambda _rid, f=found: f, request_id="")
                self.reopen(connection)
        return cuts

    def reopen(self, connection: LineConnection) -> None:
        """A new connection in place of a cut one: MAPI presents the session's handle, the Address Book
        binds again."""
        if connection is self.ab:
            self.exchange(
                "addressbook", "ab bind", lambda rid: self.ab.bind(self.username, self.password, rid=rid)
            )
        elif self.handle and isinstance(connection, MapiConnection):
            self.exchange("mapi", "mapi connect", lambda rid: connection.connect(self.handle, rid=rid))

    def _what(self, connection: LineConnection) -> tuple[str, str]:
        return ("addressbook", "ab") if connection is self.ab else ("mapi", "mapi")

    def exchange(
        self, service: str, name: str, run: Callable[[str], Exchange | None], request_id: str | None = None
    ) -> Exchange | None:
        """One MAPI or Address Book exchange (`run` takes the request id), reported like any request.
        `request_id` "" for a cut found without a request (the CAS's row has none either)."""
        ctx = self.new_context(service)
        if request_id is not None:
            ctx.request_id = request_id
        result = run(ctx.request_id)
        if result is None:
            return None
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
        self.handle = result.reply.get("handle", "") if result is not None and result.ok else ""
        if not self.handle:
            return
        for connection in self.mapi[1:]:
            self.exchange("mapi", "mapi connect", lambda rid, c=connection: c.connect(self.handle, rid=rid))
        self.exchange(
            "addressbook", "ab bind", lambda rid: self.ab.bind(self.username, self.password, rid=rid)
        )

    @task(8)
    def rop(self) -> None:
        self.tend()
        if not self.handle:
            self.logon()
            return
        first = self.mapi[0]
        result = self.exchange("mapi", "mapi rop", lambda rid: first.rop(self.handle, "x" * 64, rid=rid))
        if result is None:
            return
        if result.outcome == "cut":  # the connection was cut under the request: open it again
            self.reopen(first)
        elif result.outcome not in ("ok", "cold", "transport"):
            self.handle = ""  # the CAS does not know (or no longer has) this session: Outlook logs on again

    def keep_alive(self) -> None:
        if self.handle and time.monotonic() - self.last_mapi > KEEPALIVE_S / self.plan.time_scale:
            first = self.mapi[0]
            result = self.exchange("mapi", "mapi ping", lambda rid: first.ping(self.handle, rid=rid))
            if result is not None and result.outcome == "cut":
                self.reopen(first)

    @task(2)
    def resolve_names(self) -> None:
        self.tend()
        self.keep_alive()
        names = [f"user{self.rng.randint(1, 50)}" for _ in range(2)]
        result = self.exchange("addressbook", "ab resolve", lambda rid: self.ab.resolve(names, rid=rid))
        if result is not None and result.outcome not in ("ok", "cold"):
            self.exchange(
                "addressbook", "ab bind", lambda rid: self.ab.bind(self.username, self.password, rid=rid)
            )

    @task(1)
    def free_busy_lookup(self) -> None:
        self.tend()
        self.keep_alive()
        self.free_busy()

    @task(1)
    def offline_address_book(self) -> None:
        self.tend()
        self.keep_alive()
        self.download_oab()
