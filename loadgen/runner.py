"""Locust as a library: run a LoadPlan for a while, log every request, and check the generator itself.

The lab calls `run_load` (one process; loadgen.distributed runs the same over worker processes);
`locust -f lab/locustfile.py` runs the same user classes with Locust's own
command line, web UI and master/worker mode.

Self-check: a run whose load generator saturated measures the generator, not the balancer, so it is
marked invalid (not failed). `watch` samples the process's CPU use and the lag of a greenlet that asks
to wake every 100 ms; loadgen.selfcheck decides from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import psutil
from locust.env import Environment

from loadgen.eventlog import EventLog
from loadgen.plan import LoadPlan, user_classes
from loadgen.progress import LoadResult, Progress
from loadgen.selfcheck import LAG_LIMIT_S, saturation


def watch(result: LoadResult, stop: list[bool]) -> None:
    """The self-check's samples into `result` until `stop` is non-empty (a greenlet of its own)."""
    process = psutil.Process()
    process.cpu_percent(None)
    last = time.monotonic()
    while not stop:
        gevent.sleep(0.1)
        if stop:
            break  # a tick that ended while the users stopped measures their stopping, not the load
        now = time.monotonic()
        lag = now - last - 0.1
        last = now
        result.max_lag_s = max(result.max_lag_s, lag)
        result.ticks += 1
        result.late_ticks += lag > LAG_LIMIT_S
        if result.ticks % 10 == 0:
            result.cpu_samples.append(process.cpu_percent(None))


def drive(
    env: Environment,
    runner: Any,
    seconds: float,
    outcomes: Callable[[str], int],
    on_progress: Callable[[Progress], None] | None = None,
    between: Callable[[float], None] | None = None,
    gone: Callable[[], bool] = lambda: False,
) -> None:
    """The ramp and load phase of a started `runner`: wake about once a second for `seconds`, for the
    lab's fault schedule (`between(elapsed)`) and `on_progress` (counts of the outcomes "foreign" and
    "cold" from `outcomes`); end early when `gone()` says the load cannot go on (a worker lost)."""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        gevent.sleep(min(1.0, seconds - elapsed))
        elapsed = time.monotonic() - started
        if gone():
            return
        if between:
            between(elapsed)
        if on_progress:
            total = env.stats.total
            on_progress(
                Progress(
                    elapsed,
                    runner.user_count,
                    total.num_requests,
                    total.num_failures,
                    outcomes("foreign"),
                    outcomes("cold"),
                )
            )


def run_load(
    plan: LoadPlan,
    events_path: Path,
    duration_s: float,
    ramp_s: float = 0.0,
    on_progress: Callable[[Progress], None] | None = None,
    between: Callable[[float], None] | None = None,
) -> LoadResult:
    """Spawn every user of the plan over `ramp_s`, keep them running `duration_s` more, stop them.

    `on_progress` is called about once a second; `between(elapsed)` too, for the lab's fault schedule."""
    classes = user_classes(plan)
    users = sum(c.fixed_count for c in classes)
    env = Environment(user_classes=classes)
    log = EventLog(events_path)
    env.events.request.add_listener(log.on_request)
    runner = env.create_local_runner()
    result = LoadResult(requests=0, failures=0, events=0, users=users)
    count_client_errors(env, result)
    stop: list[bool] = []
    watcher = gevent.spawn(watch, result, stop)
    # The self-check judges the load, not its end: stopping thousands of users holds the hub for seconds.
    env.events.test_stopping.add_listener(lambda **_kw: stop.append(True))
    plan.start_time = time.time()
    runner.start(users, spawn_rate=users / ramp_s if ramp_s > 0 else users)
    try:
        drive(env, runner, ramp_s + duration_s, log.outcomes.__getitem__, on_progress, between)
    finally:
        runner.quit()
        runner.greenlet.join(timeout=30)
        stop.append(True)
        watcher.join(timeout=2)
        log.close()
    result.requests = env.stats.total.num_requests
    result.failures = env.stats.total.num_failures
    result.events = log.written
    judge_saturation(result)
    return result


def count_client_errors(env: Environment, result: LoadResult) -> None:
    """Count in `result` every exception a client's own code raised and did not handle (Locust fires
    user_error for it: a task's is logged and the user goes on, an on_start's stops the user for good).
    A client kind handles what the network and the CAS do to it, so one is the lab's own fault, and the
    run cannot vouch for the sessions of that client."""

    def on_error(user_instance: Any, exception: BaseException, **_kw: Any) -> None:
        user = getattr(user_instance, "user", user_instance)  # a task's error names its TaskSet
        result.client_errors += 1
        if not result.client_error:
            kind = getattr(user, "client_kind", type(user).__name__)
            result.client_error = f"{kind}: {type(exception).__name__}: {exception}"

    env.events.user_error.add_listener(on_error)


def judge_saturation(result: LoadResult) -> None:
    """Set `saturated` and its reason from the samples `watch` took (loadgen.selfcheck decides)."""
    late_share = result.late_ticks / result.ticks if result.ticks else 0.0
    result.saturation_reason = saturation(result.cpu_samples, result.max_lag_s, late_share)
    result.saturated = bool(result.saturation_reason)
