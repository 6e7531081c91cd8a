"""caslab's client kinds under Locust's own command line: web UI, headless, and master/worker.

    CASLAB_SCENARIO=quickstart locust -f lab/locustfile.py --host https://127.0.1.1:8443
    CASLAB_SCENARIO=my.toml locust -f lab/locustfile.py --headless -u 50 -r 10 -t 1m --host ...
    # across machines: --master --expect-workers N on one, --worker --master-host ... on N others
    # (same scenario; N must be the real number of workers: they number their users by it)

Settings (environment, because Locust imports this file before it parses its own options):
- CASLAB_SCENARIO: a scenario file or bundled name (default quickstart): its populations become user
  classes, one per population and client kind, with the scenario's user counts as `fixed_count`.
- CASLAB_EVENTS: where this process writes its client event log (default caslab-events-<pid>.csv).
  A worker adds its process id (events.csv -> events-<pid>.csv); the master writes none.
- CASLAB_CA: the lab's CA certificate (a run folder's ca.pem) that HTTPS clients verify the VIP
  against; without it they verify nothing (and say so).
--host sets where every HTTP service is reached (the VIP); MAPI and Address Book use its host name.
Without --host the scenario's default VIP is used. Clients bind their populations' 127.x source
addresses, which reach the VIP only where it is an address of this network namespace (the local lab,
or a worker in the balancer's namespace); where it is not (a swarm's worker, another machine), they
connect from this process's own address instead, and say so (loadgen.addresses.OwnAddress).
The lab (`caslab run`) drives these same classes as a library (loadgen/runner.py).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from lab.loadplan import endpoints_for_vip, plan_from_scenario
from lab.model import Vip
from lab.scenario import load_scenario
from loadgen.addresses import OwnAddress
from loadgen.eventlog import EventLog
from loadgen.plan import Endpoints, user_classes

scenario = load_scenario(os.environ.get("CASLAB_SCENARIO", "quickstart"))
endpoints = endpoints_for_vip(Vip(), scenario.farm.tls != "none", scenario.balancer.topology)
plan = plan_from_scenario(scenario, endpoints)
if os.environ.get("CASLAB_CA"):
    plan.ca_pem = Path(os.environ["CASLAB_CA"]).read_text()
globals().update({cls.__name__: cls for cls in user_classes(plan)})  # Locust collects module-level users


log = logging.getLogger(__name__)


def is_own_address(host: str) -> bool:
    """Whether `host` is an address of this network namespace (one a socket here can bind to)."""
    try:
        with socket.socket() as sock:
            sock.bind((socket.gethostbyname(host), 0))
    except OSError:
        return False
    return True


def connect_from_own_address(environment: Environment) -> None:
    """Make every user class's population take this process's own address (OwnAddress)."""
    for user_class in environment.user_classes:
        addresses = replace(user_class.population.addresses, space=OwnAddress())
        user_class.population = replace(user_class.population, addresses=addresses)


def events_path(runner: object) -> Path:
    """CASLAB_EVENTS, made per process for a worker (several share one environment under --processes)."""
    path = Path(os.environ.get("CASLAB_EVENTS", f"caslab-events-{os.getpid()}.csv"))
    if isinstance(runner, WorkerRunner) and "CASLAB_EVENTS" in os.environ:
        path = path.with_name(f"{path.stem}-{os.getpid()}{path.suffix}")
    return path


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: object) -> None:
    if isinstance(environment.runner, MasterRunner):
        return  # the master runs no users: its workers log the requests
    log = EventLog(events_path(environment.runner))
    environment.events.request.add_listener(log.on_request)
    # `quit` comes after Locust stopped the users (`quitting` may come before, on Ctrl-C).
    environment.events.quit.add_listener(lambda **_kw: log.close())


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kwargs: object) -> None:
    # Here, not at init: a worker learns the host from the master when the test starts.
    if environment.host:
        plan.endpoints = Endpoints.from_url(environment.host)
    vip_hosts = {urlsplit(url).hostname or "" for url in plan.endpoints.base_urls.values()}
    vip_hosts |= {host for host, _ in plan.endpoints.tcp.values()}
    if not isinstance(environment.runner, MasterRunner) and not all(map(is_own_address, vip_hosts)):
        log.warning(
            "caslab: the VIP (%s) is not an address of this host: clients connect from its own address, "
            "not from their populations' source addresses",
            ", ".join(sorted(vip_hosts)),
        )
        connect_from_own_address(environment)
    plan.start_time = time.time()
