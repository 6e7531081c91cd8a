"""Drives loadgen's master/worker pieces in a process of their own, for tests/test_workers.py (Locust
patches the process it is imported in with gevent, so the tests never import it):

    python tests/workers_driver.py dispatch
    python tests/workers_driver.py run --events CSV --seconds 6 [--kill-after 2] [--master-clock-skew 3]
    python tests/workers_driver.py slow-stop --events CSV

`dispatch` splits a small plan (a NAT-ed tenant of 3 addresses, a carrier, direct users) over 3 made-up
workers and prints where loadgen.dispatch.ShareDispatcher puts each user class's users after the
ramp, after a worker is gone, and when each share is pinned to a worker: {"ramp": {worker: {class:
users}}, "rebalanced": ..., "pinned": ..., "owners": {worker: share}, "shares": ...}.

`run` is loadgen.distributed.run_load_on_workers with 2 workers on a small plan whose VIP listens
nowhere (every request is a transport failure, which is all a worker needs to log); `--kill-after S`
kills one worker S seconds in; `--master-clock-skew S` sets the master's clock S seconds ahead of its
workers'. It prints the LoadResult as JSON.

`slow-stop` runs the same plan for 2 s in this process (loadgen.runner.run_load; a worker's self-check
stops the same way) with users whose `on_stop` holds the process 2.5 s without yielding, as stopping
thousands of users does: the self-check must judge the load, not its end. It prints the LoadResult.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

import gevent
from locust.runners import WorkerNode  # patches this process with gevent

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen.addresses import AddressPlan
from loadgen.dispatch import ShareDispatcher
from loadgen.distributed import WorkerProcesses, run_load_on_workers
from loadgen.plan import Endpoints, LoadPlan, PopulationPlan, user_classes
from loadgen.runner import run_load
from loadgen.split import split_users


def small_plan() -> LoadPlan:
    return LoadPlan(
        [
            PopulationPlan(
                "tenant-nat#0", AddressPlan(0, "tenant-nat", 12, 3), {"browser": 12, "eas-device": 6}
            ),
            PopulationPlan(
                "mobile-carrier#1", AddressPlan(1, "mobile-carrier", 4, 2, 5.0), {"eas-device": 4}
            ),
            PopulationPlan("direct#2", AddressPlan(2, "direct", 5, 1), {"browser": 5}),
        ],
        Endpoints.from_url("http://127.0.0.1:9"),  # the discard port: nothing listens
        time_scale=600,
    )


def dispatch(_args: argparse.Namespace) -> dict:
    plan = small_plan()
    shares = split_users(plan, 3)
    classes = user_classes(plan, shares)
    nodes = [WorkerNode(f"host_{i}") for i in range(3)]
    dispatcher = ShareDispatcher(nodes, classes)
    users = sum(c.fixed_count for c in classes)
    dispatcher.new_dispatch(users, spawn_rate=users)
    ramp = list(dispatcher)[-1]
    dispatcher.remove_worker(nodes[0])
    dispatcher.new_dispatch(users, spawn_rate=users)
    rebalanced = list(dispatcher)[-1]
    owners = {"host_0": 2, "host_1": 0, "host_2": 1}  # share -> worker, not in Locust's order
    pinned = ShareDispatcher.pinned(owners)(nodes, classes)
    pinned.new_dispatch(users, spawn_rate=users)
    return {
        "ramp": ramp,
        "rebalanced": rebalanced,
        "pinned": list(pinned)[-1],
        "owners": owners,
        "shares": {c.__name__: c.share for c in classes},
        "numbers": {c.__name__: list(c.numbers) for c in classes},
    }


def run(args: argparse.Namespace) -> dict:
    def on_start(pid: int) -> None:
        if args.kill_after and not started:
            gevent.spawn_later(args.kill_after, os.kill, pid, signal.SIGKILL)
        started.append(pid)

    started: list[int] = []
    if args.master_clock_skew:  # this process's clock only: the workers keep the machine's
        real = time.time
        time.time = lambda: real() + args.master_clock_skew
    workers = WorkerProcesses(2, Path(args.events), on_start)
    result = run_load_on_workers(small_plan(), Path(args.events), args.seconds, 1.0, workers)
    return {"result": dataclasses.asdict(result), "pids": started}


def slow_stop(args: argparse.Namespace) -> dict:
    from gevent.monkey import get_original

    from loadgen.kinds import KINDS

    blocking_sleep = get_original("time", "sleep")  # Locust made time.sleep gevent's, which yields
    stopped: list[object] = []

    def on_stop(user: object) -> None:
        if not stopped:
            blocking_sleep(2.5)  # the first user to stop holds the whole process, hub and all
        stopped.append(user)

    for kind in ("browser", "eas-device"):
        KINDS[kind].on_stop = on_stop
    result = run_load(small_plan(), Path(args.events), 2.0, 0.5)
    return {"result": dataclasses.asdict(result), "stopped": len(stopped)}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dispatch").set_defaults(func=dispatch)
    p = sub.add_parser("run")
    p.add_argument("--events", required=True)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--kill-after", type=float, default=0.0)
    p.add_argument("--master-clock-skew", type=float, default=0.0)
    p.set_defaults(func=run)
    p = sub.add_parser("slow-stop")
    p.add_argument("--events", required=True)
    p.set_defaults(func=slow_stop)
    args = parser.parse_args()
    print(json.dumps(args.func(args)))


if __name__ == "__main__":
    main()
