"""Drives caslab's client kinds in a process of their own, for tests/test_loadgen.py.

Locust monkey-patches the whole process with gevent when it is imported, so the tests never import it
(or loadgen.base, loadgen.kinds, loadgen.runner); they run this script instead:

    python tests/loadgen_driver.py walk --host URL --events CSV --kinds browser,ews-app [--rounds 2]
        [--time-scale 240] [--kind-seconds 30] [--run-id ID]
    python tests/loadgen_driver.py run --scenario TOML --host URL --events CSV --seconds 6
    python tests/loadgen_driver.py idle --host URL --events CSV --kind outlook-mapi --seconds 3
        [--time-scale 240]

`walk` is one user of each kind, one kind after another (so no two kinds' requests interleave at a
round-robin balancer): its `on_start`, then every task of the kind in order, `--rounds` times, then
`on_stop`. Locust picks tasks at random, so a short Locust run may never reach a rare task (Options,
the OAB download); walking them makes every flow happen in every test. A kind still walking after
`--kind-seconds` is stopped the way Locust stops a user (its greenlet killed, `on_stop` run).

`run` is the lab's library mode (loadgen.runner.run_load) on the populations of a scenario file.

`idle` is one user of a kind that keeps timers while its user thinks (the Outlook kinds): its
`on_start`, then `idle(seconds)` (what it does between tasks), then `on_stop`.

Both print one JSON line: the plan's start time (epoch seconds); for `walk` the request names each
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

from lab.loadplan import plan_from_scenario
from lab.scenario import load_scenario
from loadgen.addresses import AddressPlan
from loadgen.eventlog import EventLog
from loadgen.plan import Endpoints, LoadPlan, PopulationPlan, user_classes


def walk(args: argparse.Namespace) -> dict:
    kinds = args.kinds.split(",")
    population = PopulationPlan(
        name="walk",
        addresses=AddressPlan(0, "direct", users=1, source_ips=1),
        clients=dict.fromkeys(kinds, 1),
    )
    plan = LoadPlan(
        [population], Endpoints.from_url(args.host), time_scale=args.time_scale, run_id=args.run_id
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
        user.idle(args.seconds)
        user.on_stop()
    finally:
        log.close()
    return {"start_time": plan.start_time, "events": log.written}


def run(args: argparse.Namespace) -> dict:
    from loadgen.runner import run_load

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
    p.set_defaults(func=walk)
    p = commands.add_parser("idle")
    p.add_argument("--host", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--time-scale", type=float, default=240)
    p.set_defaults(func=idle)
    p = commands.add_parser("run")
    p.add_argument("--scenario", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--ramp", type=float, default=0.0)
    p.set_defaults(func=run)
    args = parser.parse_args()
    print(json.dumps(args.func(args)))


if __name__ == "__main__":
    main()
