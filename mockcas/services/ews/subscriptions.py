"""The state of EWS that needs affinity: the pull subscriptions one CAS holds, with their event queues.

In Exchange 2010 a pull subscription lives on the CAS that took the Subscribe, so a GetEvents that the
balancer sends to another CAS finds nothing there (ErrorSubscriptionNotFound): the hard break this lab
looks for. A subscription id names the server that made it (as Exchange 2010's ids carry the CAS's
name), so a CAS can tell an id made elsewhere (foreign) from garbage; and the ids that ended here are
remembered for a while, to tell them apart from both.

A subscription expires when no GetEvents used it for its Timeout (1-1440 minutes, time-scaled). While it
lives, a made-up NewMailEvent is queued every NEW_MAIL_EVERY_S (when the client asked for those), so a
poller sees traffic; a GetEvents names a watermark, which acknowledges the events up to it.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mockcas.services.ews.mailbox import item_id
from mockcas.services.ews.soap import b64, unb64, xs_time

EVENT_TYPES = (
    "CopiedEvent",
    "CreatedEvent",
    "DeletedEvent",
    "ModifiedEvent",
    "MovedEvent",
    "NewMailEvent",
    "FreeBusyChangedEvent",
)
NEW_MAIL_EVERY_S = 120.0  # a made-up mail arrives this often per subscription, in Exchange time (assumed)
MAX_QUEUED_EVENTS = 500  # a subscription nobody drains stops collecting made-up mail here
ENDED_REMEMBERED = 100_000  # ids of expired/unsubscribed subscriptions kept to tell them from foreign ones
SWEEP_EVERY_S = 60.0  # how often, in Exchange time, expired subscriptions are dropped from memory


def subscription_origin(subscription_id: str) -> str | None:
    """The server FQDN an id names (Exchange 2010 ids carry the CAS's name), or None for garbage."""
    raw = unb64(subscription_id)
    if not raw or len(raw) != 1 + raw[0] + 20:
        return None
    try:
        return raw[1 : 1 + raw[0]].decode("ascii")
    except UnicodeDecodeError:
        return None


@dataclass
class Event:
    seq: int
    kind: str
    timestamp: str
    item_id: str
    folder: str


@dataclass
class Subscription:
    id: str
    key: bytes  # 16 random bytes; the first 8 also go into every watermark of this subscription
    user: str
    event_types: frozenset[str]
    folders: tuple[str, ...]
    idle_s: float  # lab time without a GetEvents after which it expires
    mail_every_s: float  # lab time between two made-up NewMailEvents
    last_used: float  # time.monotonic()
    next_mail: float  # when the next made-up NewMailEvent is due (monotonic)
    seq: int = 0  # sequence number of the newest event made
    queue: list[Event] = field(default_factory=list)  # events not yet acknowledged by a watermark

    def watermark(self, seq: int) -> str:
        return b64(b"\x01\x00\x00\x00" + self.key[:8] + seq.to_bytes(8, "little"))

    def watermark_seq(self, watermark: str) -> int | None:
        """The event sequence a watermark of this subscription stands for; None if it is not one."""
        raw = unb64(watermark)
        if not raw or len(raw) != 20 or raw[:12] != b"\x01\x00\x00\x00" + self.key[:8]:
            return None
        seq = int.from_bytes(raw[12:], "little")
        return seq if seq <= self.seq else None

    def pending(self, acknowledged: int) -> list[Event]:
        """What a GetEvents does to the subscription: it is used now (its idle timer restarts), the mail
        due since the last call is queued, the events up to `acknowledged` are dropped. Returns the
        events still queued, oldest first."""
        now = time.monotonic()
        self.last_used = now
        self._queue_new_mail(now)
        self.queue = [e for e in self.queue if e.seq > acknowledged]
        return self.queue

    def _queue_new_mail(self, now: float) -> None:
        """Queue the NewMailEvents due since the last call, as if mail kept arriving in the first folder."""
        if "NewMailEvent" not in self.event_types:
            return
        while self.next_mail <= now and len(self.queue) < MAX_QUEUED_EVENTS:
            self.seq += 1
            arrived = datetime.now(UTC) - timedelta(seconds=now - self.next_mail)
            self.queue.append(
                Event(
                    self.seq,
                    "NewMailEvent",
                    xs_time(arrived),
                    item_id(self.user, self.id, self.seq),
                    self.folders[0],
                )
            )
            self.next_mail += self.mail_every_s
        if self.next_mail <= now:  # the queue is full: mail that arrives now is not reported
            self.next_mail = now + self.mail_every_s


class Subscriptions:
    """The pull subscriptions one CAS holds, and the ids that ended here ("expired" or "unsubscribed")."""

    def __init__(self, server_fqdn: str, scaled: Callable[[float], float]) -> None:
        """`server_fqdn` goes into every id made here; `scaled` turns Exchange seconds into lab seconds
        (the CAS's `scaled`)."""
        self._fqdn = server_fqdn.lower().encode("ascii", "replace")[:255]
        self._scaled = scaled
        self._held: dict[str, Subscription] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()  # id -> how it ended, oldest first
        self._next_sweep = 0.0

    def __contains__(self, subscription_id: object) -> bool:
        """Whether this CAS holds the subscription (in memory: an expired one may be held until a sweep)."""
        return subscription_id in self._held

    def subscribe(
        self, user: str, event_types: frozenset[str], folders: tuple[str, ...], timeout_min: int
    ) -> Subscription:
        """A new subscription for `user`, held here, that expires after `timeout_min` minutes unused."""
        now = time.monotonic()
        self._sweep(now)
        key = secrets.token_bytes(16)
        sub_id = b64(bytes([len(self._fqdn)]) + self._fqdn + (16).to_bytes(4, "little") + key)
        mail_every_s = self._scaled(NEW_MAIL_EVERY_S)
        sub = Subscription(
            id=sub_id,
            key=key,
            user=user,
            event_types=event_types,
            folders=folders,
            idle_s=self._scaled(timeout_min * 60),
            mail_every_s=mail_every_s,
            last_used=now,
            next_mail=now + mail_every_s,
        )
        self._held[sub_id] = sub
        return sub

    def find(self, subscription_id: str) -> tuple[Subscription | None, str]:
        """(the subscription, "own") when this CAS holds it alive; else (None, why not): "expired" or
        "unsubscribed" when it ended here, "foreign" when another server made it (subscription_origin
        names it), "garbage" when it is no subscription id at all."""
        now = time.monotonic()
        self._sweep(now)
        sub = self._held.get(subscription_id)
        if sub is not None and now - sub.last_used > sub.idle_s:
            self.end(subscription_id, "expired")
            sub = None
        if sub is not None:
            return sub, "own"
        ended = self._ended.get(subscription_id)
        if ended is not None:
            return None, ended
        return None, "garbage" if subscription_origin(subscription_id) is None else "foreign"

    def end(self, subscription_id: str, how: str) -> None:
        """Forget a subscription, remembering that it ended here and `how` ("expired", "unsubscribed")."""
        self._held.pop(subscription_id, None)
        self._ended[subscription_id] = how
        while len(self._ended) > ENDED_REMEMBERED:
            self._ended.popitem(last=False)

    def _sweep(self, now: float) -> None:
        """Drop expired subscriptions now and then, so idle ones do not pile up in memory."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._scaled(SWEEP_EVERY_S)
        for sub in [s for s in self._held.values() if now - s.last_used > s.idle_s]:
            self.end(sub.id, "expired")
