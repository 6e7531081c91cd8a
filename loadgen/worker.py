"""One Locust worker of a caslab run (`caslab worker --master HOST:PORT`; the lab starts N of them on
its own machine for `caslab run --workers N`, see loadgen.distributed).

It connects to the master with Locust's own transport and learns what to run from it, so a worker
needs no scenario of its own:

    master -> worker  caslab-plan    the LoadPlan and its split into shares (loadgen.split)
    worker -> master  caslab-ready   {pid, host, clock}: this worker made the plan's user classes (clock:
                                     its time.time(), which the master compares with its own)
    (Locust's own spawn, stop and stats messages in between)
    master -> worker  caslab-finish  the users are stopped: close the event log, judge the self-check
    (without --events: the event log's parts, loadgen.shipping)
    worker -> master  caslab-result  {pid, host, events, result[, shipped]}: its LoadResult and the
                                     path of its event log (shipped: how many parts it sent)

Every request of its users goes into its own event log. With `--events EVENTS` (the workers the lab
starts, which share the run folder) that is EVENTS with the host name and process id added
(events.csv -> events-<host>-<pid>.csv: workers in containers all have the same small pid, each its own
host name), which the lab reads with the others. Without it (a worker on another machine) the
log goes to a temporary file that is shipped to the master at the end (loadgen.shipping), which
writes it into the run folder; the result then names that file. The self-check (loadgen.selfcheck)
runs in each worker, since each is a process of its own that may saturate.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from loadgen.plan import Share

PLAN, READY, FINISH, RESULT = "caslab-plan", "caslab-ready", "caslab-finish", "caslab-result"
SHIP_ACK_S = 60.0  # for the master to acknowledge a part of a shipped event log


def shares_to_wire(shares: list[Share]) -> list[list[list[Any]]]:
    """Shares as Locust's messages carry them (msgpack has no tuple keys)."""
    return [[[population, kind, numbers] for (population, kind), numbers in s.items()] for s in shares]


def shares_from_wire(wire: list[list[list[Any]]]) -> list[Share]:
    return [{(population, kind): list(numbers) for population, kind, numbers in share} for share in wire]


def worker_events_path(events: Path) -> Path:
    """This worker's own event log beside `events`: events.csv -> events-<host>-<pid>.csv."""
    return events.with_name(f"{events.stem}-{socket.gethostname()}-{os.getpid()}{events.suffix}")


def parse_host_port(text: str, option: str = "--master") -> tuple[str, int]:
    """HOST:PORT -> (host, port), with an error that names `option`."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or " " in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{option} {text!r}: expected HOST:PORT with a port of 1-65535, e.g. 127.0.0.1:5557")
    return host, int(port)


def run_worker(master_host: str, master_port: int, events: Path | None) -> int:
    """Serve the master at master_host:master_port until it says quit (or is gone); returns 0.
    `events` None: ship the event log to the master (loadgen.shipping) instead of writing it beside."""
    import gevent
    from gevent.event import Event
    from locust.env import Environment

    from loadgen.container_run import plan_from_json
    from loadgen.eventlog import EventLog
    from loadgen.plan import user_classes
    from loadgen.progress import LoadResult
    from loadgen.runner import count_client_errors, judge_saturation, watch
    from loadgen.shipping import EVENTS, EVENTS_ACK, ship

    env = Environment(user_classes=[])
    runner = env.create_worker_runner(master_host, master_port)
    if events is None:
        fd, name = tempfile.mkstemp(prefix="caslab-events-", suffix=".csv")
        os.close(fd)
        path = Path(name)
    else:
        path = worker_events_path(events)
    log = EventLog(path)
    env.events.request.add_listener(log.on_request)
    counts: Counter[str] = Counter()  # a worker's own Locust stats are reset at every report to the master

    def count(exception: BaseException | None = None, **_kw: Any) -> None:
        counts["requests"] += 1
        counts["failures"] += exception is not None

    env.events.request.add_listener(count)
    result = LoadResult(requests=0, failures=0, events=0, users=0)
    count_client_errors(env, result)
    stop: list[bool] = []
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    acked = [0]  # parts of the shipped event log the master has written
    ack = Event()

    def on_plan(environment: Environment, msg: Any, **_kw: Any) -> None:
        plan = plan_from_json(msg.data["plan"])
        classes = user_classes(plan, shares_from_wire(msg.data["shares"]))
        environment.user_classes = classes
        gevent.spawn(watch, result, stop)
        runner.send_message(READY, {**me, "clock": time.time()})  # the master compares it with its own
        say(f"took the run's plan from {master_host}:{master_port}; its users start as the master says")

    def on_ack(environment: Environment, msg: Any, **_kw: Any) -> None:
        acked[0] = msg.data["part"] + 1
        ack.set()

    def wait_acked(parts: int) -> None:
        while acked[0] < parts:
            ack.clear()
            if not ack.wait(timeout=SHIP_ACK_S):
                raise RuntimeError(f"the master acknowledged no part of the event log in {SHIP_ACK_S:.0f}s")

    def on_finish(environment: Environment, **_kw: Any) -> None:
        result.users = max(result.users, runner.user_count)
        runner.stop()
        stop.append(True)
        log.close()
        result.requests, result.failures = counts["requests"], counts["failures"]
        result.events = log.written
        result.users = runner.user_count
        judge_saturation(result)
        message = {**me, "events": str(path), "result": dataclasses.asdict(result)}
        if events is None:
            parts = ship(path, lambda part: runner.send_message(EVENTS, part), wait_acked)
            message["shipped"] = parts
            say(f"sent its event log to the master: {path.stat().st_size} bytes in {parts} part(s)")
            path.unlink()
        runner.send_message(RESULT, message)

    def on_report(client_id: str, data: dict[str, Any]) -> None:
        data["caslab_outcomes"] = dict(log.outcomes)  # hard and soft breaks so far, for the progress line
        result.users = max(result.users, runner.user_count)  # the most it ran (none once stopped)

    # The self-check judges the load, not its end: stopping thousands of users holds the hub for seconds.
    env.events.test_stopping.add_listener(lambda **_kw: stop.append(True))
    runner.register_message(PLAN, on_plan)
    runner.register_message(EVENTS_ACK, on_ack)
    runner.register_message(FINISH, on_finish, concurrent=True)  # the listener must take acks meanwhile
    env.events.report_to_master.add_listener(on_report)
    try:
        runner.greenlet.join()
    finally:
        log.close()
        if events is None:
            path.unlink(missing_ok=True)
    return 0


def say(text: str) -> None:
    """A line for whoever started `caslab worker` (on another machine: the only sign of the run)."""
    print(f"caslab worker: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="caslab worker", description=__doc__.split("\n")[0])
    parser.add_argument("--master", required=True, metavar="HOST:PORT", help="the run's Locust master")
    parser.add_argument(
        "--events",
        type=Path,
        help="event log beside the run's (events.csv -> events-<host>-<pid>.csv); default: to the master",
    )
    args = parser.parse_args(argv)
    try:
        host, port = parse_host_port(args.master)
    except ValueError as err:
        parser.error(str(err))
    return run_worker(host, port, args.events)


if __name__ == "__main__":
    sys.exit(main())
