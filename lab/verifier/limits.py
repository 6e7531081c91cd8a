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

The farm is the lab's too: a CAS whose event loop fell behind (mockcas.server watches it) answered late,
a Ping's heartbeat or an OUT channel's keep-alive among its answers, and a balancer's idle timer may have
taken that for silence. A CAS that fell behind during the load beside breaks, transport failures or cuts
makes the run invalid the same way (`lag_reason`); beside none it is a note.
"""

from __future__ import annotations

from typing import Any

from lab.balancers import times


def limits_reason(
    limits: list[str], totals: dict[str, Any], transport_failures: int, failed_checks: list[str]
) -> list[str]:
    """The invalid reason when the balancer reached a limit and the run broke sessions or failed a check
    (`failed_checks`: their names); else none."""
    if not limits:
        return []
    said = _broken(totals, transport_failures)
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


def cas_lags(server_stats: dict[str, dict], start: float, end: float) -> list[str]:
    """Each CAS whose event loop fell behind between `start` and `end` (the load), in a sentence; the
    lags are in its /caslab/stats (`loop_lags`: [epoch seconds, by how much])."""
    said = []
    for name, stats in sorted(server_stats.items()):
        lags = [lag for ts, lag in stats.get("loop_lags", ()) if start <= ts <= end]
        if lags:
            how = f"{times(len(lags))} during the load, by up to {max(lags):.2f} s"
            said.append(f"{name}'s event loop fell behind {how}")
    return said


def lag_reason(lags: list[str], totals: dict[str, Any], transport_failures: int) -> list[str]:
    """The invalid reason when a CAS fell behind during the load (`cas_lags`) and the run broke sessions;
    else none."""
    said = _broken(totals, transport_failures)
    if not lags or not said:
        return []
    return [
        f"{'; '.join(lags)}; the run's {', '.join(said)} may come from the lab falling behind (a late answer "
        "looks like silence to a balancer's timers), not from the balancer"
    ]


def _broken(totals: dict[str, Any], transport_failures: int) -> list[str]:
    """What the run broke, in words: "2 hard breaks", "1 cut"..."""
    broken = {
        ("hard break", "hard breaks"): totals["hard_breaks"],
        ("transport failure", "transport failures"): transport_failures,
        ("cut", "cuts"): totals["cut"],
    }
    return [f"{n:,} {one if n == 1 else many}" for (one, many), n in broken.items() if n]
