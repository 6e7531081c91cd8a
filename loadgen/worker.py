"""One Locust worker of a caslab run (`caslab worker --master HOST:PORT`; the lab starts N of them on
its own machine for `caslab run --workers N`, see loadgen.distributed).

It connects to the master with Locust's own transport and learns what to run from it, so a worker
needs no scenario of its own:

    master -> worker  caslab-plan    the LoadPlan and its split into shares (loadgen.split)
    worker -> master  caslab-ready   {pid, host}: this worker made the plan's user classes
    (Locust's own spawn, stop and stats messages in between)
    master -> worker  caslab-finish  the users are stopped: close the event log, judge the self-check
    worker -> master  caslab-result  {pid, host, events, result}: its LoadResult and event log's path

Every request of its users goes into its own event log, EVENTS with the process id added
(events.csv -> events-<pid>.csv), which the lab reads with the others. The self-check
(loadgen.selfcheck) runs in each worker, since each is a process of its own that may saturate.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from loadgen.plan import Share

PLAN, READY, FINISH, RESULT = "caslab-plan", "caslab-ready", "caslab-finish", "caslab-result"


def shares_to_wire(shares: list[Share]) -> list[list[list[Any]]]:
    """Shares as Locust's messages carry them (msgpack has no tuple keys)."""
    return [[[population, kind, numbers] for (population, kind), numbers in s.items()] for s in shares]


def shares_from_wire(wire: list[list[list[Any]]]) -> list[Share]:
    return [{(population, kind): list(numbers) for population, kind, numbers in share} for share in wire]


def worker_events_path(events: Path) -> Path:
    """This worker's own event log beside `events`: events.csv -> events-<pid>.csv."""
    return events.with_name(f"{events.stem}-{os.getpid()}{events.suffix}")


def parse_master(text: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port), with a clear error."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--master {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5557")
    return host, int(port)


def run_worker(master_host: str, master_port: int, events: Path) -> int:
    """Serve the master at master_host:master_port until it says quit (or is gone); returns 0."""
    import gevent
    from locust.env import Environment

    from loadgen.container_run import plan_from_json
    from loadgen.eventlog import EventLog
    from loadgen.plan import user_classes
    from loadgen.progress import LoadResult
    from loadgen.runner import judge_saturation, watch

    env = Environment(user_classes=[])
    runner = env.create_worker_runner(master_host, master_port)
    path = worker_events_path(events)
    log = EventLog(path)
    env.events.request.add_listener(log.on_request)
    counts: Counter[str] = Counter()  # a worker's own Locust stats are reset at every report to the master

    def count(exception: BaseException | None = None, **_kw: Any) -> None:
        counts["requests"] += 1
        counts["failures"] += exception is not None

    env.events.request.add_listener(count)
    result = LoadResult(requests=0, failures=0, events=0, users=0)
    stop: list[bool] = []
    me = {"pid": os.getpid(), "host": socket.gethostname()}

    def on_plan(environment: Environment, msg: Any, **_kw: Any) -> None:
        plan = plan_from_json(msg.data["plan"])
        classes = user_classes(plan, shares_from_wire(msg.data["shares"]))
        environment.user_classes = classes
        gevent.spawn(watch, result, stop)
        runner.send_message(READY, me)

    def on_finish(environment: Environment, **_kw: Any) -> None:
        result.users = max(result.users, runner.user_count)
        runner.stop()
        stop.append(True)
        log.close()
        result.requests, result.failures = counts["requests"], counts["failures"]
        result.events = log.written
        result.users = runner.user_count
        judge_saturation(result)
        runner.send_message(RESULT, {**me, "events": str(path), "result": dataclasses.asdict(result)})

    def on_report(client_id: str, data: dict[str, Any]) -> None:
        data["caslab_outcomes"] = dict(log.outcomes)  # hard and soft breaks so far, for the progress line
        result.users = max(result.users, runner.user_count)  # the most it ran (none once stopped)

    # The self-check judges the load, not its end: stopping thousands of users holds the hub for seconds.
    env.events.test_stopping.add_listener(lambda **_kw: stop.append(True))
    runner.register_message(PLAN, on_plan)
    runner.register_message(FINISH, on_finish)
    env.events.report_to_master.add_listener(on_report)
    try:
        runner.greenlet.join()
    finally:
        log.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="caslab worker", description=__doc__.split("\n")[0])
    parser.add_argument("--master", required=True, metavar="HOST:PORT", help="the run's Locust master")
    parser.add_argument(
        "--events",
        type=Path,
        default=Path("events.csv"),
        help="event log; the worker adds its process id (default: events.csv -> events-<pid>.csv)",
    )
    args = parser.parse_args(argv)
    try:
        host, port = parse_master(args.master)
    except ValueError as err:
        parser.error(str(err))
    return run_worker(host, port, args.events)


if __name__ == "__main__":
    sys.exit(main())
