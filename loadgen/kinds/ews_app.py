"""A mail application on EWS: one pull subscription polled with GetEvents, and some stateless calls.

The subscription lives on the CAS that took the Subscribe; a poll that reaches another CAS gets
`ErrorSubscriptionNotFound` (a hard break) and the app subscribes again. Whether it keeps the
`exchangecookie` (and balancer cookies) is the population's `keeps_cookies` (EWS Managed API apps keep
one CookieContainer per ExchangeService; scripts often keep none).
"""

from __future__ import annotations

from locust import task

from loadgen.base import CasUser, Response
from loadgen.kinds import register
from loadgen.wire import ews


@register
class EwsApp(CasUser):
    client_kind = "ews-app"
    user_agent = "ExchangeServicesClient/14.03.0032.000"  # the EWS Managed API 1.2 names itself so

    def on_start(self) -> None:
        self.keeps_cookies = self.population.keeps_cookies
        self.poller = ews.PullPoller(timeout_minutes=30)

    def ews(self, body: bytes, name: str) -> ews.EwsAnswer | None:
        answers: list[ews.EwsAnswer | None] = []

        def classify(r: Response) -> tuple[str, str]:
            outcome, detail, answer = ews.read(r.status_code, r.content)
            answers.append(answer)
            return outcome, detail

        self.call(
            "POST",
            "ews",
            ews.PATH,
            name=name,
            data=body,
            headers=ews.HEADERS,
            auth=(self.username, self.password),
            classify=classify,
        )
        return answers[0] if answers else None  # none: no answer came

    @task(6)
    def poll(self) -> None:
        name = "ews GetEvents" if self.poller.subscription_id else "ews Subscribe"
        self.poller.update(self.ews(self.poller.next_body(), name))

    @task(1)
    def find_items(self) -> None:
        # Ids only, as sync apps list a folder (they fetch the items they lack with GetItem).
        self.ews(ews.find_item("inbox", max_entries=20, shape="IdOnly"), "ews FindItem")
