"""Drives caslab's client kinds in a process of their own, for tests/test_loadgen.py.

Locust monkey-patches the whole process with gevent when it is imported, so the tests never import it
(or loadgen.base, loadgen.kinds, loadgen.runner); they run this script instead:

    python tests/loadgen_driver.py walk --host URL --events CSV --kinds browser,ews-app [--rounds 2]
        [--time-scale 240] [--kind-seconds 30] [--run-id ID] [--ca PEM] [--tls-max-version 1.3]
    python tests/loadgen_driver.py run --scenario TOML --host URL --events CSV --seconds 6 [--raise-in KIND]
    python tests/loadgen_driver.py idle --host URL --events CSV --kind outlook-mapi --seconds 3
        [--time-scale 240] [--stall 1.0]
    python tests/loadgen_driver.py tls --host HTTPS-URL --ca PEM --kinds browser,eas-device
        [--tls-max-version 1.2]

`walk` is one user of each kind, one kind after another (so no two kinds' requests interleave at a
round-robin balancer): its `on_start`, then every task of the kind in order, `--rounds` times, then
`on_stop`. Locust picks tasks at random, so a short Locust run may never reach a rare task (Options,
the OAB download); walking them makes every flow happen in every test. A kind still walking after
`--kind-seconds` is stopped the way Locust stops a user (its greenlet killed, `on_stop` run).

`run` is the lab's library mode (loadgen.runner.run_load) on the populations of a scenario file;
`--raise-in KIND` gives that kind a bug (its on_start raises).

`idle` is one user of a kind that keeps timers while its user thinks (the Outlook kinds): its
`on_start`, then `idle(seconds)` (what it does between tasks), then `on_stop`; `--stall S` blocks the
whole process for S seconds halfway (a load generator that fell behind).

`tls` looks at how each kind's users make their TLS connections: two users of each kind, and whether
their connections to the host share one context object (the kind's); one user's first request and a
second one on a new connection (the first closed in between), with each connection's TLS version and
whether it resumed a session; for an Outlook Anywhere kind, its two channels of one virtual connection.

Each prints one JSON line: the plan's start time (epoch seconds); for `walk` the request names each
kind fired (from Locust's request event, "" for requests without a caslab context), for `run` the
LoadResult.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import gevent
from locust.env import Environment  # patches this process with gevent, as Locust's own command line does

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geventhttpclient.url import URL  # after Locust patched ssl with gevent

from lab.loadplan import plan_from_scenario
from lab.scenario import load_scenario
from loadgen.addresses import AddressPlan
from loadgen.eventlog import EventLog
from loadgen.kinds.outlook_rpchttp import OutlookAnywhere
from loadgen.plan import Endpoints, LoadPlan, PopulationPlan, user_classes


def walk(args: argparse.Namespace) -> dict:
    kinds = args.kinds.split(",")
    population = PopulationPlan(
        name="walk",
        addresses=AddressPlan(0, "direct", users=1, source_ips=1),
        clients=dict.fromkeys(kinds, 1),
    )
    plan = LoadPlan(
        [population],
        Endpoints.from_url(args.host),
        time_scale=args.time_scale,
        run_id=args.run_id,
        ca_pem=Path(args.ca).read_text() if args.ca else "",
        tls_max_version=args.tls_max_version,
    )
    env = Environment(user_classes=user_classes(plan))
    log = EventLog(Path(args.events))
    env.events.request.add_listener(log.on_request)
    names: dict[str, list[str]] = {}  # client kind -> the Locust request names it fired, in order

    def note(name: str, context: dict | None = None, **_kw: object) -> None:
        ctx = (context or {}).get("caslab")
        names.setdefault(ctx.client_kind if ctx else "", []).append(name)

    env.events.request.add_listener(note)
    plan.start_time = time.time()

    def walk_one(cls: type) -> None:
        user = cls(env)
        try:
            user.on_start()
            tasks = list(dict.fromkeys(cls.tasks))  # each task once, in the order the kind declares them
            for _ in range(args.rounds):
                for task in tasks:
                    task(user)
        finally:
            user.on_stop()

    try:
        for cls in env.user_classes:
            walker = gevent.spawn(walk_one, cls)
            walker.join(timeout=args.kind_seconds)
            if not walker.dead:
                walker.kill(block=True, timeout=10)
            elif walker.exception is not None:
                raise walker.exception
    finally:
        log.close()
    return {"start_time": plan.start_time, "events": log.written, "names": names}


def idle(args: argparse.Namespace) -> dict:
    population = PopulationPlan(
        name="idle", addresses=AddressPlan(0, "direct", users=1, source_ips=1), clients={args.kind: 1}
    )
    plan = LoadPlan([population], Endpoints.from_url(args.host), time_scale=args.time_scale)
    env = Environment(user_classes=user_classes(plan))
    log = EventLog(Path(args.events))
    env.events.request.add_listener(log.on_request)
    plan.start_time = time.time()
    user = env.user_classes[0](env)
    try:
        user.on_start()
        if args.stall:  # the whole process blocked, as a load generator that fell behind is
            from gevent.monkey import get_original

            user.idle(args.seconds / 2)
            get_original("time", "sleep")(args.stall)
            user.idle(args.seconds / 2)
        else:
            user.idle(args.seconds)
        user.on_stop()
    finally:
        log.close()
    return {"start_time": plan.start_time, "events": log.written}


def tls(args: argparse.Namespace) -> dict:
    kinds = args.kinds.split(",")
    population = PopulationPlan(
        name="tls", addresses=AddressPlan(0, "direct", users=2, source_ips=1), clients=dict.fromkeys(kinds, 2)
    )
    plan = LoadPlan(
        [population],
        Endpoints.from_url(args.host),
        time_scale=240,
        ca_pem=Path(args.ca).read_text(),
        tls_max_version=args.tls_max_version,
    )
    env = Environment(user_classes=user_classes(plan))
    plan.start_time = time.time()
    url = URL(args.host)
    answer: dict[str, dict] = {}
    for cls in env.user_classes:
        first, second = cls(env), cls(env)
        pools = [user.client.client.clientpool.get_client(url)._connection_pool for user in (first, second)]
        facts: dict = {
            "shared_context": pools[0].ssl_context is pools[1].ssl_context is cls.tls_context(),
            "connections": [],
        }
        for _ in range(2):  # a request, then the connection closed: the next request opens a new one
            first.client.get(first.url("owa", "/owa/auth/logon.aspx"), name="tls probe")
            sock = pools[0].get_socket()
            facts["connections"].append({"version": sock.version(), "session_reused": sock.session_reused})
            pools[0].release_socket(sock)
        if isinstance(first, OutlookAnywhere):  # one virtual connection's two channels
            first.on_start()  # opens its virtual connections
            vc, _server = first.connections[6001]
            facts["channels"] = {
                name: {"version": sock.version(), "session_reused": sock.session_reused}
                for name, sock in zip(("out", "in"), vc.sockets(), strict=True)
            }
            first.on_stop()
        answer[cls.client_kind] = facts
    return answer


def run(args: argparse.Namespace) -> dict:
    from loadgen.kinds import KINDS
    from loadgen.runner import run_load

    if args.raise_in:  # a bug of the kind's own: its on_start raises, which stops the user for good
        broken = KINDS[args.raise_in]

        def on_start(self: object) -> None:
            raise RuntimeError("a bug in on_start")

        broken.on_start = on_start
    plan = plan_from_scenario(load_scenario(args.scenario), Endpoints.from_url(args.host))
    result = run_load(plan, Path(args.events), duration_s=args.seconds, ramp_s=args.ramp)
    return {"start_time": plan.start_time, **dataclasses.asdict(result)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("walk")
    p.add_argument("--host", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--kinds", required=True)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--time-scale", type=float, default=240)
    p.add_argument("--kind-seconds", type=float, default=30)
    p.add_argument("--run-id", default="")
    p.add_argument("--ca", default="", help="the CA (PEM) HTTPS clients verify the host against")
    p.add_argument("--tls-max-version", default="1.3", choices=["1.2", "1.3"])
    p.set_defaults(func=walk)
    p = commands.add_parser("tls")
    p.add_argument("--host", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--kinds", required=True)
    p.add_argument("--tls-max-version", default="1.3", choices=["1.2", "1.3"])
    p.set_defaults(func=tls)
    p = commands.add_parser("idle")
    p.add_argument("--host", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--time-scale", type=float, default=240)
    p.add_argument("--stall", type=float, default=0.0, help="halfway, block the process this long")
    p.set_defaults(func=idle)
    p = commands.add_parser("run")
    p.add_argument("--scenario", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--ramp", type=float, default=0.0)
    p.add_argument("--raise-in", default="", help="a client kind whose on_start raises")
    p.set_defaults(func=run)
    args = parser.parse_args()
    print(json.dumps(args.func(args)))


if __name__ == "__main__":
    main()
