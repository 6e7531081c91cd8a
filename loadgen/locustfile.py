"""caslab's client kinds under Locust's own command line: web UI, headless, and master/worker.

    CASLAB_SCENARIO=quickstart locust -f loadgen/locustfile.py --host https://127.0.1.1:8443
    CASLAB_SCENARIO=my.toml locust -f loadgen/locustfile.py --headless -u 50 -r 10 -t 1m --host ...
    # across machines: --master on one, --worker --master-host ... on the others (same scenario)

Settings (environment, because Locust imports this file before it parses its own options):
- CASLAB_SCENARIO: a scenario file or bundled name (default quickstart): its populations become user
  classes, one per population and client kind, with the scenario's user counts as `fixed_count`.
- CASLAB_EVENTS: where this process writes its client event log (default caslab-events-<pid>.csv).
--host sets where every HTTP service is reached (the VIP); MAPI and Address Book use its host name.
Without --host the scenario's default VIP is used. The lab (`caslab run`) drives these same classes as
a library (loadgen/runner.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from locust import events
from locust.env import Environment

from lab.model import Vip
from lab.scenario import load_scenario
from loadgen.eventlog import EventLog
from loadgen.plan import Endpoints, plan_from_scenario, user_classes

scenario = load_scenario(os.environ.get("CASLAB_SCENARIO", "quickstart"))
endpoints = Endpoints.for_vip(Vip(), scenario.farm.tls != "none", scenario.balancer.topology)
plan = plan_from_scenario(scenario, endpoints)
globals().update({cls.__name__: cls for cls in user_classes(plan)})  # Locust collects module-level users


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: object) -> None:
    if environment.host:
        plan.endpoints = Endpoints.from_url(environment.host)
    log = EventLog(Path(os.environ.get("CASLAB_EVENTS", f"caslab-events-{os.getpid()}.csv")))
    environment.events.request.add_listener(log.on_request)
    environment.events.quitting.add_listener(lambda **_kw: log.close())


@events.test_start.add_listener
def _on_test_start(**_kwargs: object) -> None:
    plan.start_time = time.time()
