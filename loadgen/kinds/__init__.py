"""Client kinds (DESIGN.md section 4): the contract a kind keeps, and the registry that finds it by name.

A client kind is one client program with its own wire habits (a browser, Outlook 2007/2010 over
RPC/HTTP, intranet Outlook over MAPI, an ActiveSync phone, an EWS application). A kind is a Locust user:

- subclass `loadgen.base.CasUser`, set `client_kind` (a name of `caslab.vocab.CLIENT_KINDS`) and
  `keeps_cookies` (False: the jar is emptied before every request, as a phone loses balancer cookies),
  decorate it with `@register`, and write its flow as Locust tasks (`on_start`, `@task`, `wait_time`);
- make every HTTP request with `self.call(method, service, path, classify=...)`: it connects from the
  user's source address (following a mobile device's address changes), tags the request with an id for
  reconciliation, and logs one client event with the outcome `classify` reads from the answer, in the
  protocol's own terms (`foreign` when the CAS did not know the client's state: a logoff, a lost
  subscription, a split channel pair);
- exchanges that do not go through Locust's HTTP client (RPC/HTTP channels on raw sockets, MAPI over
  TCP) bind their sockets to `self.source.ip` and log with `self.report(...)`, one event per exchange;
- keep the client's state (cookies, keys, channels) on the user instance: one Locust user is one client
  of one person, with its own connections and jar; nothing is shared between users but the plan.

What a kind may assume: `plan` (the run's LoadPlan: endpoints, time scale, seed), `population` (its
PopulationPlan) and `fixed_count` are set on the class by `loadgen.plan.user_classes`; `self.username`,
`self.password`, `self.session` (the client's session id), `self.rng` (seeded per session) and
`self.think()` (a think time, scaled by the plan's time_scale) are ready in `on_start`. Protocol timers
are Exchange time: divide them by `plan.time_scale`.

Every module of this package is imported the first time a kind is looked up (caslab.registry: a name
outside the vocabulary, or a name registered twice, raises), so adding a kind is adding a module.
Modules may hold shared bases that are not kinds themselves (`outlook.py`).
"""

from __future__ import annotations

from caslab.registry import Registry
from caslab.vocab import CLIENT_KINDS
from loadgen.base import CasUser

KINDS: Registry[type[CasUser]] = Registry("client kind", CLIENT_KINDS, __name__, lambda c: c.client_kind)
register = KINDS.register
