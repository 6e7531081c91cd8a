"""The base of every caslab client kind: a Locust user that is one client program of one person.

A `CasUser` has its identity (population, user number, user name, session id), its own connections
bound to its source address, and its own cookie jar (FastHttpSession keeps one per user, which we swap
for the same stdlib jar with a cache of its Cookie headers, loadgen/cookies.py; a kind that keeps no
cookies clears it). It makes requests through `call()`, which tags each with a request id
(`X-CasLab-Request`, for reconciliation with the CAS ledgers) and the plan's run id (`X-CasLab-Run`,
when it has one), classifies the answer with the kind's
protocol knowledge and puts an `EventContext` in Locust's request event for the event log.
Kinds that speak TCP or hold raw sockets (MAPI, RPC/HTTP) report through `report()` instead.
Over HTTPS every connection of a user uses its kind's one TLS context (verifying the run's CA) and
resumes the user's TLS session with that host (loadgen/tls.py), as the program it stands for does.

Subclasses set `client_kind` and write Locust tasks; `user_classes()` in loadgen/plan.py makes one
concrete class per (population, client kind) with `plan`, `population` and `fixed_count` filled in.
"""

from __future__ import annotations

import http.cookiejar
import itertools
import os
import random
import time
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

import gevent
from geventhttpclient.response import HTTPConnectionClosed
from locust import FastHttpUser
from locust.contrib.fasthttp import ResponseContextManager
from locust.runners import WorkerRunner

from caslab.records import detail_with
from caslab.vocab import REQUEST_ID_HEADER, RUN_HEADER, SERVER_HEADER, STATE_HEADER
from loadgen.binding import SourceAddress, bind_fast_session, close_fast_session
from loadgen.cookies import CachingCookieJar
from loadgen.eventlog import EventContext
from loadgen.plan import LoadPlan, PopulationPlan
from loadgen.tls import TlsSessions, client_context

_instances = itertools.count(1)
# What a balancer answers itself when it gave up waiting on a held request: a gateway time-out (HAProxy,
# nginx, Traefik), a request time-out (Envoy's stream idle timeout).
BALANCER_TIMEOUTS = (504, 408)

Response = ResponseContextManager  # what Locust's FastHttpSession answers with catch_response
Classifier = Callable[[Response], tuple[str, str]]


def classify_by_status(response: ResponseContextManager) -> tuple[str, str]:
    """ok below 400, error otherwise, transport when no answer came."""
    if not response.status_code:
        return "transport", type(response.error).__name__ if response.error else ""
    if response.status_code >= 400:
        return "error", f"http {response.status_code}"
    return "ok", ""


def held_cut(response: ResponseContextManager) -> str:
    """What ended a request the server holds open on purpose (an EAS Ping) other than the CAS's own answer,
    or "" when the CAS answered or nothing came at all: its connection was closed (`eof`) or reset
    (`reset`) under it, or a balancer gave up waiting and answered itself with its time-out (`http 504`,
    Envoy's `http 408`; no X-CasLab-Server). That is a cut (DESIGN.md section 13)."""
    if response.status_code:
        from_balancer = not response.headers.get(SERVER_HEADER)
        gave_up = from_balancer and response.status_code in BALANCER_TIMEOUTS
        return f"http {response.status_code}" if gave_up else ""
    error = response.error
    if not isinstance(error, HTTPConnectionClosed | ConnectionError):
        return ""  # refused, timed out: the request never was held
    reset = isinstance(error, ConnectionResetError) or isinstance(error.__context__, ConnectionResetError)
    return "reset" if reset else "eof"


def transport_or(classify: Classifier) -> Classifier:
    """`classify`, except that a request that got no answer at all is a transport failure."""

    def wrapped(response: ResponseContextManager) -> tuple[str, str]:
        if not response.status_code:
            return classify_by_status(response)
        return classify(response)

    return wrapped


def worker_slot(environment: Any) -> tuple[int, int]:
    """(number of Locust workers, this process's index among them); (1, 0) when not a worker. A worker
    learns its index from the master and the worker count from the master's --expect-workers (which
    --processes sets), so that must be the real number of workers."""
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        return 1, 0
    workers = getattr(environment.parsed_options, "expect_workers", 1) or 1
    return max(workers, runner.worker_index + 1), max(runner.worker_index, 0)


class CasUser(FastHttpUser):
    abstract = True
    client_kind: ClassVar[str] = ""
    keeps_cookies: ClassVar[bool] = True
    # Whether the program resumes its TLS sessions (every modelled client does: loadgen.tls).
    resumes_tls: ClassVar[bool] = True
    # The program's own User-Agent, sent on every request unless a request names another (as Outlook's
    # RPC/HTTP channels send MSRPC): CAS logs, and balancers keyed on it, see what they see of the real one.
    user_agent: ClassVar[str] = ""
    # Filled in by loadgen.plan.user_classes:
    plan: ClassVar[LoadPlan]
    population: ClassVar[PopulationPlan]
    identities: ClassVar[itertools.count]
    # A share of a plan split over workers (loadgen.split): the user numbers this class runs, and which
    # share it is; None for the whole population (one process, or workers by Locust's own dispatch).
    numbers: ClassVar[tuple[int, ...] | None] = None
    share: ClassVar[int | None] = None
    host = "http://127.0.0.1"  # replaced per request by the plan's endpoints (absolute URLs)
    network_timeout = 60.0
    connection_timeout = 10.0
    last_event: EventContext  # the event of the latest call()

    def __init__(self, environment: Any) -> None:
        # Read by FastHttpUser.__init__: every connection of this kind shares the kind's one TLS
        # context, verifying the run's CA (loadgen.tls); geventhttpclient calls the factory per host.
        self.insecure = not self.plan.ca_pem
        self.ssl_context_factory = self.tls_context
        super().__init__(environment)
        workers, worker = worker_slot(environment)
        # Users 0..n-1 of this client kind (numbers come round again when Locust restarts its users).
        # Worker w of W numbers its users w, w+W, w+2W...: never a number another worker uses. Locust
        # deals a class's users to workers unevenly at times (even a whole class to one worker); such
        # a worker numbers past the population's size, and those users take further addresses of it.
        if self.numbers:  # a share of a split plan: its users, wherever Locust runs them
            self.index = self.numbers[next(self.identities) % len(self.numbers)]
        else:
            self.index = (next(self.identities) % max(1, self.fixed_count)) * workers + worker
        self.username = f"user{self.index + 1}@{self.plan.domain}"
        self.password = self.plan.password
        self.instance = f"{worker}.{os.getpid()}.{next(_instances)}"  # unique per Locust process
        self.session = f"{self.population.name}/{self.client_kind}/{self.index + 1}"
        self.rng = random.Random(f"{self.plan.seed}:{self.session}")
        self.source = SourceAddress(self.population.addresses.address_of(self.index, 0.0))
        self.tls_sessions = TlsSessions(self.resumes_tls)
        bind_fast_session(self.client, self.source, self.tls_sessions)
        # FastHttpSession has no parameter for its jar; the session and its user agent share this one.
        self.client.cookiejar = self.client.client.cookiejar = CachingCookieJar()
        self._request_ids = itertools.count(1)
        self.run_headers = {RUN_HEADER: self.plan.run_id} if self.plan.run_id else {}

    @classmethod
    def tls_context(cls, **_ignored: object) -> Any:
        """This kind's one TLS context in this process (loadgen.tls.client_context)."""
        return client_context(cls.client_kind, cls.plan.ca_pem, cls.plan.tls_max_version)

    # -- identity and addresses -------------------------------------------------------------------
    def url(self, service: str, path: str) -> str:
        return self.plan.endpoints.base_urls[service] + path

    def follow_address(self) -> None:
        """Move to the address the population's plan gives now (mobile devices change address)."""
        if not self.population.addresses.change_every_s:
            return  # a client whose address never changes (every request pays for this check)
        elapsed = time.time() - (self.plan.start_time or time.time())
        ip = self.population.addresses.address_of(self.index, elapsed)
        if ip != self.source.ip:
            self.source.ip = ip
            close_fast_session(self.client)  # the next request connects from the new address

    def new_context(self, service: str) -> EventContext:
        return EventContext(
            population=self.population.name,
            user=self.username,
            client_kind=self.client_kind,
            service=service,
            session=self.session,
            source_ip=self.source.ip,
            request_id=f"{self.instance}-{self.index + 1}-{next(self._request_ids)}",
        )

    def think(self) -> float:
        return self.plan.think_time(self.population.profile, self.rng)

    def wait_time(self) -> float:
        return self.think()

    def run(self) -> None:
        # Locust starts a batch of users (its spawn rate, rounded down) in one instant, once a second. Real
        # clients do not start in lockstep, and a counting balancer would see a pattern they never make:
        # round robin kept every RPC/HTTP channel pair of three Outlooks started together on one CAS.
        gevent.sleep(self.rng.uniform(0.0, 1.0))
        super().run()

    # -- requests ---------------------------------------------------------------------------------
    def call(
        self,
        method: str,
        service: str,
        path: str,
        *,
        name: str | None = None,
        classify: Classifier = classify_by_status,
        headers: dict[str, str] | None = None,
        held: bool = False,
        figures: dict[str, object] | None = None,
        **kwargs: Any,
    ) -> ResponseContextManager:
        """One HTTP request of this client, classified and logged. Returns the response; its event is
        `self.last_event`. `held`: the server holds it open on purpose, so losing its connection is a
        cut (see `held_cut`); `figures` go into the event's detail as name=value words."""
        self.follow_address()
        ctx = self.last_event = self.new_context(service)
        all_headers = {REQUEST_ID_HEADER: ctx.request_id, **self.run_headers, **(headers or {})}
        if self.user_agent and not any(name.lower() == "user-agent" for name in all_headers):
            all_headers["User-Agent"] = self.user_agent
        if not self.keeps_cookies:
            self.client.cookiejar.clear()
        with self.client.request(
            method,
            self.url(service, path),
            name=name or f"{service} {method} {path.split('?')[0]}",
            headers=all_headers,
            catch_response=True,
            allow_redirects=False,
            context={"caslab": ctx},
            **kwargs,
        ) as response:
            if held and (seen := held_cut(response)):
                ctx.outcome, ctx.detail = "cut", seen
            else:
                ctx.outcome, ctx.detail = transport_or(classify)(response)
            if ctx.outcome == "ok" and response.headers.get(STATE_HEADER) == "cold":
                ctx.outcome = "cold"  # served, but the CAS had to warm up for this client (a soft break)
            for name, value in (figures or {}).items():
                ctx.detail = detail_with(ctx.detail, name, value)
            if ctx.outcome in ("ok", "cold"):
                response.success()
            else:
                response.failure(f"{ctx.outcome}: {ctx.detail or response.status_code}")
        return response

    def set_cookie(self, name: str, value: str) -> None:
        """Put a cookie the client makes itself (Outlook's OutlookSession) in its jar, for every VIP host."""
        for base in set(self.plan.endpoints.base_urls.values()):
            host = urlsplit(base).hostname or ""
            self.client.cookiejar.set_cookie(
                http.cookiejar.Cookie(
                    0, name, value, None, False, host, False, False, "/", True, False, None, False,
                    None, None, {},
                )
            )  # fmt: skip

    def cookie_header(self) -> str:
        """The Cookie header a client that keeps cookies sends on a raw socket (RPC/HTTP channels)."""
        return "; ".join(f"{c.name}={c.value}" for c in self.client.cookiejar)

    def report(
        self,
        ctx: EventContext,
        *,
        name: str,
        started: float,
        server: str,
        status: int,
        outcome: str,
        detail: str = "",
        length: int = 0,
        exception: BaseException | None = None,
    ) -> None:
        """Fire Locust's request event for an exchange that did not go through Locust's HTTP client."""
        ctx.server, ctx.status, ctx.outcome, ctx.detail = server, status, outcome, detail
        failed = outcome not in ("ok", "cold")
        self.environment.events.request.fire(
            request_type=ctx.service.upper(),
            name=name,
            response_time=(time.time() - started) * 1000,
            response_length=length,
            response=None,
            context={"caslab": ctx},
            exception=exception or (RuntimeError(f"{outcome}: {detail}") if failed else None),
            start_time=started,
            url=name,
        )
