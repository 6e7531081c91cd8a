"""Did the load generator itself saturate? A run that did measured the generator, not the balancer, so
it is marked invalid, not failed (DESIGN.md section 4).

loadgen.runner samples two signs while a run goes on: the Locust process's CPU use about once a second
(percent of one core), and how late a greenlet that asks to wake every 100 ms actually wakes (when
gevent's hub cannot keep that schedule, users cannot keep theirs either: requests are dispatched late,
Exchange LoadGen's "dispatched far ahead of completed"). The decision is kept here, apart from the
runner (which imports Locust and so gevent), so that it can be checked on made-up figures.
"""

from __future__ import annotations

from collections.abc import Sequence

CPU_PEGGED = 90.0  # percent of one core
LAG_LIMIT_S = 0.5  # a 100 ms tick that wakes this much late was held up: the hub is overloaded
LATE_SHARE = 0.05  # ... and when this share of ticks is, users cannot keep their schedule either
STALL_S = 2.0  # one tick this late is a stall no user could hide


def saturation(cpu_samples: Sequence[float], max_lag_s: float, late_share: float = 0.0) -> str:
    """Why the generator saturated, or "" when it kept up: CPU pegged in most samples, ticks later than
    LAG_LIMIT_S in more than LATE_SHARE of them, or a stall longer than STALL_S. A spike or a single
    late tick (a garbage collection, a busy moment of a shared machine) is not saturation."""
    pegged = sum(1 for cpu in cpu_samples if cpu >= CPU_PEGGED)
    if pegged > len(cpu_samples) / 2:
        return f"load generator CPU above {CPU_PEGGED:.0f}% in {pegged} of {len(cpu_samples)} samples"
    if late_share > LATE_SHARE:
        return f"load generator fell behind its schedule in {late_share:.0%} of its 100 ms ticks"
    if max_lag_s > STALL_S:
        return f"load generator stalled {max_lag_s:.2f}s behind its schedule"
    return ""
