"""A balancer that ran into a limit of its own and broke sessions: the run cannot tell whose breaks they are.

The lab's balancer runs on the lab's machine, whose limits are not production's: HAProxy without a
maxconn sizes its connection limit from the open-file limit (20,000 files: about 10,000 connections),
and connections beyond it wait in the accept queue until a client gives up (a transport failure) or
one channel of an Outlook Anywhere pair arrives alone (a hard break); nginx, Envoy and Traefik have no
limit of their own in the lab's configs and run out of open files instead, which they log (requests
that needed a new connection to a CAS fail, clients wait to be accepted). When the balancer says it
reached such a limit (Balancer.limits_reached, kept in the run's facts) and the run has hard breaks,
transport failures or cuts, the lab cannot vouch for the verdict, so the run is invalid. So too when a
check failed without a break: clients that waited in a queue sent fewer requests than the scenario
planned, so the shares of the balance check, say, are those of who got through first. Without breaks
or failed checks the limit is only a note: nothing broke and every check held, whatever queued.
"""

from __future__ import annotations

from typing import Any


def limits_reason(
    limits: list[str], totals: dict[str, Any], transport_failures: int, failed_checks: list[str]
) -> list[str]:
    """The invalid reason when the balancer reached a limit and the run broke sessions or failed a check
    (`failed_checks`: their names); else none."""
    if not limits:
        return []
    broken = {
        ("hard break", "hard breaks"): totals["hard_breaks"],
        ("transport failure", "transport failures"): transport_failures,
        ("cut", "cuts"): totals["cut"],
    }
    said = [f"{n:,} {one if n == 1 else many}" for (one, many), n in broken.items() if n]
    if said:
        return [
            f"{'; '.join(limits)}; the run's {', '.join(said)} may come from that limit, not from persistence"
        ]
    if failed_checks:
        return [
            f"{'; '.join(limits)}; the run's failed {', '.join(failed_checks)} may come from that limit "
            "(clients that waited sent fewer requests than planned), not from persistence"
        ]
    return []
