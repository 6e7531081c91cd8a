"""A phone on Exchange ActiveSync: Autodiscover (mobilesync), OPTIONS, Provision, FolderSync, a first
Sync, then the Direct Push loop — a Ping that hangs until its heartbeat ends or mail arrives, a Sync
when it did, and the next Ping at once.

A device keeps no cookies (balancer cookies are lost on it) and presents only Basic `Authorization`
and its address. Its keys live in the mailbox, so any CAS serves it; a CAS new to the device is `cold`
(a soft break). Devices of a mobile carrier change address on their population's schedule: each
request connects from the address the device has now.

The heartbeat each Ping asks for adapts as devices adapt it (loadgen.heartbeat): it starts at 9
minutes, grows while Pings get answers, shrinks after one is cut (its connection closed before an
answer: a balancer's idle timeout shorter than the heartbeat), and follows the server's limit after
Status 5. Each Ping's event says what it asked for (detail `heartbeat=540`, seconds of Exchange time),
and a cut Ping's what the device saw (`eof heartbeat=840`): the verifier's heartbeat figures.
"""

from __future__ import annotations

from locust import task

from caslab.records import HEARTBEAT_FIELD
from loadgen.base import CasUser, Response
from loadgen.heartbeat import Heartbeat
from loadgen.kinds import register
from loadgen.wire import autodiscover, eas


@register
class EasDevice(CasUser):
    client_kind = "eas-device"
    user_agent = eas.IPHONE_USER_AGENT  # also on its Autodiscover call
    keeps_cookies = False
    network_timeout = 3600.0  # a Ping hangs for the whole heartbeat
    policy_key = ""
    inbox = ""
    inbox_key = "0"
    failing = False  # the last request got an error or no answer (a cut Ping is no failure to wait on)

    def wait_time(self) -> float:
        # Direct Push: the next Ping goes out as soon as the last one returns (or was cut). After a
        # failure a phone waits before it tries again (a refused connection returns at once: no wait
        # would be a hot loop).
        return self.think() if self.failing else 0.0

    def on_start(self) -> None:
        population = self.plan.populations.index(self.population)
        self.device = eas.Device(
            self.username, self.password, device_id=f"CASLAB{population}D{self.index + 1}"
        )
        self.heartbeat = Heartbeat()
        self.call(
            "POST",
            "autodiscover",
            autodiscover.PATH,
            data=autodiscover.mobilesync_request(self.username),
            headers=autodiscover.HEADERS,
            auth=(self.username, self.password),
            classify=lambda r: autodiscover.classify(r.status_code, r.content),
        )
        self.send(eas.options(self.device))
        self.set_up()

    def send(
        self, request: eas.EasRequest, figures: dict[str, object] | None = None
    ) -> tuple[int, eas.Answer | None, str]:
        """One EAS request: (HTTP status, the parsed answer or None, the event's outcome). A Ping is
        held by the server: its lost connection is a cut. `figures` go into the event's detail."""
        parsed: list[eas.Answer | None] = []
        self.failing = True  # until an answer says otherwise (no answer at all never reaches classify)

        def classify(r: Response) -> tuple[str, str]:
            outcome, detail, answer = eas.read(request, r.status_code, "", r.content or b"")
            parsed.append(answer)
            self.failing = outcome not in ("ok", "cold")
            return outcome, detail

        response = self.call(
            request.method,
            "eas",
            request.path,
            name=f"eas {request.command}",
            data=request.body,
            headers=request.headers,
            classify=classify,
            held=request.command == "Ping",
            figures=figures,
        )
        outcome = self.last_event.outcome
        if outcome == "cut":
            self.failing = False  # the network lost the Ping; the device pings again at once
        return response.status_code, (parsed[0] if parsed else None), outcome

    def set_up(self) -> None:
        """Provision, then find the inbox and start syncing it (what a phone does when added)."""
        self.policy_key = self.inbox = ""
        _, answer, _ = self.send(eas.provision(self.device))
        if not isinstance(answer, eas.ProvisionAnswer) or not answer.ok:
            return
        _, answer, _ = self.send(eas.provision_ack(self.device, answer.policy_key or ""))
        if not isinstance(answer, eas.ProvisionAnswer) or not answer.ok:
            return
        self.policy_key = answer.policy_key or ""
        _, answer, _ = self.send(eas.folder_sync(self.device, self.policy_key))
        if isinstance(answer, eas.FolderSyncAnswer) and answer.inbox:
            self.inbox, self.inbox_key = answer.inbox.server_id, "0"
            self.sync_inbox()

    def sync_inbox(self) -> None:
        for _ in range(5):  # again while the server has more, as a device does
            status, answer, _ = self.send(
                eas.sync(self.device, self.policy_key, [(self.inbox, self.inbox_key)])
            )
            if status == eas.NEEDS_PROVISIONING or not isinstance(answer, eas.SyncAnswer):
                return
            collection = next(iter(answer.collections), None)
            if collection is None or collection.status == 3:  # invalid sync key: start the folder again
                self.inbox_key = "0"
                return
            self.inbox_key = collection.sync_key or self.inbox_key
            if not collection.more_available and self.inbox_key != "0":
                return

    @task
    def direct_push(self) -> None:
        if not self.policy_key or not self.inbox:
            self.set_up()
            return
        asked = self.heartbeat.seconds
        status, answer, outcome = self.send(
            eas.ping(self.device, self.policy_key, asked, [(self.inbox, "Email")]), {HEARTBEAT_FIELD: asked}
        )
        if outcome == "cut":
            self.heartbeat.died()
        elif status == eas.NEEDS_PROVISIONING:
            self.set_up()
        elif isinstance(answer, eas.PingAnswer) and answer.ok:
            self.heartbeat.answered()
            if answer.status == 2:
                self.sync_inbox()
        elif isinstance(answer, eas.PingAnswer) and answer.status == 5 and answer.heartbeat_limit_s:
            self.heartbeat.limited(answer.heartbeat_limit_s)
