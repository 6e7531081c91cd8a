"""What a load run reports while it runs (`Progress`, about once a second) and when it ends
(`LoadResult`). Plain data apart from loadgen.runner, which imports Locust and so patches the process
with gevent: the docker backend reads these from a load generator in a container without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Progress:
    elapsed_s: float
    users: int
    requests: int
    failures: int
    hard_breaks: int  # answers the client read as `foreign` so far
    soft_breaks: int  # answers marked `cold` so far


@dataclass
class LoadResult:
    requests: int
    failures: int
    events: int
    users: int
    cpu_samples: list[float] = field(default_factory=list)
    max_lag_s: float = 0.0
    ticks: int = 0  # 100 ms ticks of the self-check
    late_ticks: int = 0  # ticks that woke more than selfcheck.LAG_LIMIT_S late
    saturated: bool = False
    saturation_reason: str = ""
    # With workers (loadgen.distributed): a worker that died or stopped answering, one reason each (the
    # run is invalid), and each worker's own result as {"pid", "host", "events", "result"}.
    lost_workers: list[str] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)
    # Exceptions a client's own code raised and did not handle (Locust's user_error), and the first one
    # as "kind: ExceptionType: message": the sessions of such a client did not run as planned.
    client_errors: int = 0
    client_error: str = ""


def worker_name(worker: dict) -> str:
    """How a run names one of its workers: "worker pid 4242 on host"."""
    return f"worker pid {worker['pid']} on {worker['host']}"


def combined(users: int, workers: list[dict]) -> LoadResult:
    """The run's LoadResult from its workers' ({"pid", "host", "events", "result"}, loadgen.worker):
    counts summed, the self-check's samples pooled, and every saturated worker named with its reason."""
    result = LoadResult(requests=0, failures=0, events=0, users=users)
    reasons = []
    for worker in sorted(workers, key=lambda w: w["pid"]):
        one = LoadResult(**worker["result"])
        result.requests += one.requests
        result.failures += one.failures
        result.events += one.events
        result.cpu_samples += one.cpu_samples
        result.max_lag_s = max(result.max_lag_s, one.max_lag_s)
        result.ticks += one.ticks
        result.late_ticks += one.late_ticks
        result.client_errors += one.client_errors
        result.client_error = result.client_error or one.client_error
        if one.saturated:
            reasons.append(f"{worker_name(worker)}: {one.saturation_reason}")
        result.workers.append(worker)
    result.saturated = bool(reasons)
    result.saturation_reason = "; ".join(reasons)
    return result


# A worker's clock this far from the master's misplaces its events against the faults (fired by the
# master's clock) and the CAS's ledgers. Read once, when the worker takes the plan, plus the message's
# transit (milliseconds on a LAN, with the master idle before the load).
CLOCK_TOLERANCE_S = 0.5


def clock_reasons(offsets: dict[str, float]) -> list[str]:
    """Why the run is invalid, for each worker (by name) whose clock minus the master's is more than
    CLOCK_TOLERANCE_S either way."""
    return [
        f"{name}: its clock is {offset:+.2f} s off this machine's (read when it took the plan), so its "
        "events' times do not line up with the faults and the CAS ledgers; synchronise the clocks (NTP)"
        for name, offset in offsets.items()
        if abs(offset) > CLOCK_TOLERANCE_S
    ]
