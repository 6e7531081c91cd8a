"""A LoadPlan run over N Locust worker processes, with the master in this process (`caslab run --workers N`).

One Locust process drives at most one core. Here the plan is split by address group (loadgen.split:
every address's users stay in one worker), Locust's master runs in this process with the
ShareDispatcher (loadgen.dispatch: each share's users go to its worker), and N workers
(loadgen.worker, what `caslab worker` runs) connect to it with Locust's own transport, on 127.0.0.1 and
a port picked free for the run unless told otherwise. The master ramps the users as Locust does, fires
the lab's faults through `between`, and at the end collects each worker's LoadResult (loadgen.worker's
messages).

Where the workers it starts run is the caller's (`Workers`): `WorkerProcesses` starts them on this
machine; the docker backend starts one loadgen container each, with the master on its lab network's
gateway (lab.backends.docker.workers).

Workers from another machine (`caslab run --remote-workers M --master-bind HOST:PORT`) join the same
way: the master binds where it is told, waits for them on top of the ones it starts (saying which
`caslab worker` command to run), and the split covers them all.

Each worker writes its own event log and runs its own self-check: a saturated worker makes the run
invalid, and its reason names the worker. So does a worker that dies, or stops answering Locust's
heartbeats, before the end. The workers started here write events-<host>-<pid>.csv beside
`events_path`; a worker from elsewhere ships its log at the end (loadgen.shipping), written beside it
as events-<worker id>.csv.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import gevent
from locust.env import Environment
from locust.exception import RPCError

from loadgen.container_run import plan_to_json
from loadgen.dispatch import ShareDispatcher
from loadgen.plan import LoadPlan, Share, user_classes
from loadgen.progress import LoadResult, Progress, clock_reasons, combined, worker_name
from loadgen.runner import drive
from loadgen.shipping import EVENTS, EVENTS_ACK, Inbox, ShippingError
from loadgen.split import split_users
from loadgen.worker import FINISH, PLAN, READY, RESULT, shares_to_wire

log = logging.getLogger("caslab.loadgen")

MASTER_HOST = "127.0.0.1"
CONNECT_S = 60.0  # for every worker to start, connect and take the plan
JOIN_S = 300.0  # for the workers from other machines to join: someone has to start them there
RESULT_S = 30.0  # for every worker to stop its users and send its result (or the next part of its log)
WILDCARD_HOSTS = ("0.0.0.0", "*")  # every address of this machine (ZeroMQ takes "*")


def free_port(host: str = MASTER_HOST) -> int:
    """A TCP port free on `host` now, for the master to bind (Locust's transport takes no port 0)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class Workers(Protocol):
    """The `count` workers a run starts, wherever they run: what the master needs to start, watch and
    stop them."""

    count: int
    logs: str  # where their output goes, for messages: "loadgen-workers.log"

    def start(self, master: str, shares: list[Share]) -> None:
        """Start the workers, connecting to the master at `master` (HOST:PORT); worker i for shares[i]."""

    def share_of(self, worker: dict) -> int | None:
        """The share the worker that said `worker` ({pid, host}: caslab-ready) must run, or None when
        any worker can run any share."""

    def dead(self) -> list[str]:
        """A reason for each worker that has exited."""

    def stop(self, timeout_s: float = 10.0) -> None:
        """Wait up to `timeout_s` for the workers to exit (the master told them to quit), then kill them."""


class WorkerProcesses:
    """The N worker processes on this machine (`python -m loadgen.worker`), each told the master's
    address and the event log path; `on_start(pid)` is called as each starts (the lab records it for its
    janitor). Each binds every loopback address, so each can run any share."""

    logs = "loadgen-workers.log"

    def __init__(self, count: int, events_path: Path, on_start: Callable[[int], None] | None = None) -> None:
        self.count = count
        self.events_path = events_path
        self.on_start = on_start
        self.processes: list[subprocess.Popen] = []

    def start(self, master: str, shares: list[Share]) -> None:
        events_path = self.events_path
        for _ in shares:
            with (events_path.parent / self.logs).open("ab") as stderr:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "loadgen.worker",
                        "--master",
                        master,
                        "--events",
                        str(events_path),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,  # Ctrl-C reaches the lab, which stops them in order
                )
            self.processes.append(process)
            if self.on_start:
                self.on_start(process.pid)

    def share_of(self, worker: dict) -> int | None:
        return None

    def dead(self) -> list[str]:
        """A reason for each worker process that has exited."""
        return [
            f"load generator worker pid {p.pid} exited with code {p.returncode}"
            for p in self.processes
            if p.poll() is not None
        ]

    def stop(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def worker_command(host: str, port: int) -> str:
    """The command that joins a master bound at host:port, as run on another machine (a wildcard
    bind is reached by this machine's name)."""
    reach = socket.getfqdn() if host in WILDCARD_HOSTS else host
    return f"caslab worker --master {reach}:{port}"


class Board:
    """What the workers told the master: who is ready, their results, their break counts so far, and
    the event logs they ship (`inbox`, acknowledged part by part with `ack(worker id, part)`)."""

    def __init__(self, inbox: Inbox, ack: Callable[[str, int], None]) -> None:
        self.ready: dict[str, dict] = {}  # Locust client id -> {pid, host}
        self.results: dict[str, dict] = {}
        self.outcomes: dict[str, dict[str, int]] = {}
        self.inbox = inbox
        self.ack = ack
        self.spoiled: list[str] = []  # a shipped event log that did not arrive whole: the run is invalid
        self.clock_offsets: dict[str, float] = {}  # its clock minus the master's, seconds (unsynced)
        self.last_part_at = 0.0

    def on_ready(self, environment: Environment, msg: Any, **_kw: Any) -> None:
        self.ready[msg.node_id] = msg.data
        if "clock" in msg.data:
            self.clock_offsets[msg.node_id] = msg.data["clock"] - time.time()

    def unsynced(self) -> list[str]:
        """A reason for each worker whose clock is too far off the master's (loadgen.progress)."""
        return clock_reasons({self.name(worker): offset for worker, offset in self.clock_offsets.items()})

    def on_events(self, environment: Environment, msg: Any, **_kw: Any) -> None:
        self.inbox.on_part(msg.node_id, msg.data["part"], msg.data["data"])
        self.last_part_at = time.monotonic()
        self.ack(msg.node_id, msg.data["part"])

    def on_result(self, environment: Environment, msg: Any, **_kw: Any) -> None:
        data = msg.data
        if "shipped" in data:  # the log it shipped is the one in the run folder now
            try:
                written = self.inbox.finish(msg.node_id, data["shipped"])
                data["events"] = str(written) if written else ""
            except ShippingError as err:
                self.spoiled.append(f"{worker_name(data)}: {err}")
                data["events"] = ""
        self.results[msg.node_id] = data

    def on_report(self, client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        self.outcomes[client_id] = data.get("caslab_outcomes", {})

    def outcome(self, name: str) -> int:
        return sum(counts.get(name, 0) for counts in self.outcomes.values())

    def name(self, client_id: str) -> str:
        seen = self.ready.get(client_id) or self.results.get(client_id)
        return worker_name(seen) if seen else f"worker {client_id}"


def _wait(condition: Callable[[], bool], timeout_s: float, processes: Workers, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if dead := processes.dead():
            raise RuntimeError(f"{what}: {'; '.join(dead)} (see {processes.logs})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout_s:.0f}s (see {processes.logs})")
        gevent.sleep(0.1)


def _wait_for_remote(
    runner: Any,
    workers: int,
    remote: int,
    command: str,
    processes: Workers,
    say: Callable[[str], None],
) -> None:
    """Wait JOIN_S for `remote` workers from other machines on top of the `workers` started here, saying
    on the console which command joins and how many have."""
    say(f"caslab: waiting for {remote} worker(s) from another machine: run `{command}` there")
    deadline = time.monotonic() + JOIN_S
    joined = -1
    while (now := max(0, len(runner.clients.ready) - workers)) < remote:
        if dead := processes.dead():
            raise RuntimeError(f"load generator workers: {'; '.join(dead)} (see {processes.logs})")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"--remote-workers {remote}: {now} of {remote} joined within {JOIN_S:.0f}s; run `{command}` "
                "on each machine that is to join (it must reach this address and the VIP)"
            )
        if now != joined:
            joined = now
            say(f"caslab: {now} of {remote} worker(s) from another machine joined")
        gevent.sleep(0.1)
    say(f"caslab: {remote} of {remote} worker(s) from another machine joined")


def run_load_on_workers(
    plan: LoadPlan,
    events_path: Path,
    duration_s: float,
    ramp_s: float,
    processes: Workers,
    on_progress: Callable[[Progress], None] | None = None,
    between: Callable[[float], None] | None = None,
    remote_workers: int = 0,
    master_bind: tuple[str, int] | None = None,
    say: Callable[[str], None] = print,
) -> LoadResult:
    """As loadgen.runner.run_load, over the workers `processes` starts (e.g. WorkerProcesses) and
    `remote_workers` that join from elsewhere. The master listens on `master_bind` (default 127.0.0.1
    and a free port); `say` tells the console whom it waits for."""
    workers = processes.count
    total = workers + remote_workers
    shares = split_users(plan, total)
    classes = user_classes(plan, shares)
    users = sum(c.fixed_count for c in classes)
    for index, share in enumerate(shares):
        log.info("worker share %d: %d users", index, sum(len(n) for n in share.values()))
    env = Environment(user_classes=classes, dispatcher_class=ShareDispatcher)
    host, port = master_bind or (MASTER_HOST, free_port())
    try:
        runner = env.create_master_runner(host, port)
    except RPCError as err:
        raise RuntimeError(f"Locust master on {host}:{port}: {err}") from err
    inbox = Inbox(events_path)
    board = Board(
        inbox, lambda worker, part: runner.send_message(EVENTS_ACK, {"part": part}, client_id=worker)
    )
    runner.register_message(READY, board.on_ready)
    runner.register_message(EVENTS, board.on_events)
    runner.register_message(RESULT, board.on_result)
    env.events.worker_report.add_listener(board.on_report)
    log.info("Locust master on %s:%d", host, port)
    lost: list[str] = []
    try:
        processes.start(f"{_connectable(host)}:{port}", shares[:workers])
        _wait(lambda: len(runner.clients.ready) >= workers, CONNECT_S, processes, "load generator workers")
        if remote_workers:
            _wait_for_remote(runner, workers, remote_workers, worker_command(host, port), processes, say)
        plan.start_time = time.time()
        wire = {"plan": plan_to_json(plan), "shares": shares_to_wire(shares)}
        runner.send_message(PLAN, wire)
        _wait(lambda: len(board.ready) >= total, CONNECT_S, processes, "load generator workers")
        owners = {c: s for c, seen in board.ready.items() if (s := processes.share_of(seen)) is not None}
        if owners:
            env.dispatcher_class = ShareDispatcher.pinned(owners)
        started = set(runner.clients)
        gevent.spawn(runner.start, users, users / ramp_s if ramp_s > 0 else users)

        def gone() -> bool:
            lost.extend(_lost(runner, board, processes))
            lost.extend(  # Locust would deal it users of the others (it has no plan): addresses would split
                f"worker {c} joined after the load started (one more than --remote-workers {remote_workers})"
                for c in set(runner.clients) - started
            )
            return bool(lost)

        drive(env, runner, ramp_s + duration_s, board.outcome, on_progress, between, gone)
        runner.stop()
        _collect(runner, board, processes)
    finally:
        runner.quit()  # also on Ctrl-C or an error: the workers quit, or are killed in processes.stop
        processes.stop()
        inbox.close()
    return _combine(users, lost, board)


def _connectable(host: str) -> str:
    """Where the workers started here reach a master bound at `host` (a wildcard: on loopback)."""
    return MASTER_HOST if host in WILDCARD_HOSTS else host


def _collect(runner: Any, board: Board, processes: Workers) -> None:
    """Ask every worker for its result (its users are stopped) and wait for each that is still there."""
    runner.send_message(FINISH)
    asked = time.monotonic()
    while silent := set(board.ready) - set(board.results):
        if time.monotonic() > max(asked, board.last_part_at) + RESULT_S:
            break  # silent for RESULT_S, not even shipping its event log
        if len(processes.dead()) >= len(silent):
            break  # whoever has not answered is gone
        gevent.sleep(0.1)


def _lost(runner: Any, board: Board, processes: Workers) -> list[str]:
    """Why the run lost a worker: one that exited, one Locust marked missing."""
    missing = [f"{board.name(c.id)} stopped answering heartbeats" for c in runner.clients.missing]
    return processes.dead() + missing


def _combine(users: int, lost: list[str], board: Board) -> LoadResult:
    """The run's LoadResult (loadgen.progress.combined), with the workers it lost or never heard from."""
    result = combined(users, list(board.results.values()))
    for worker in result.workers:
        one = worker["result"]
        log.info(
            "%s: %d requests, %d events in %s",
            worker_name(worker), one["requests"], one["events"], worker["events"] or "no file",
        )  # fmt: skip
    silent = [c for c in board.ready if c not in board.results]
    result.lost_workers = (
        (lost or [f"{board.name(c)} sent no result" for c in silent]) + board.spoiled + board.unsynced()
    )
    return result
