"""A LoadPlan split over several Locust workers so that every source address stays in one of them.

A NAT-ed tenant's users share its public address, and so a NAT's sockets and ports; a carrier's phones
move over their pool of addresses. Were one address's users spread over two processes (or two
containers, which cannot both hold one address on a network), the lab would show a balancer clients
no real network makes. So users are dealt to workers by *address group*, never one by one:

- a shared address of a NAT-ed tenant or a Citrix farm (`tenant-nat`, `citrix`): every user behind it;
- a device with its own address (`intranet`, `direct`): that user, with every client kind they run;
- a carrier whose phones change address (`mobile-carrier` with `ip_change_every`): the whole carrier,
  since a phone may take any address of its pool (without changes, each pool address is a group).

Groups go, largest first, to the worker with the fewest users so far. A group holds a user number of
every client kind that number has (user 7's browser and Outlook are one person at one address).

`split_users` answers which user numbers of each (population, client kind) a worker runs;
`loadgen.plan.user_classes` makes one class per share from it, and loadgen.dispatch sends each share's
class to its worker only. `share_addresses` answers which source addresses a share's users take: the
docker backend puts those, and only those, on the share's loadgen container.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

from loadgen.addresses import DISTINCT_KINDS
from loadgen.plan import LoadPlan, PopulationPlan, Share


def address_group(population: PopulationPlan, user: int) -> int:
    """Which address group of its population user number `user` is in (see the module docstring)."""
    addresses = population.addresses
    if addresses.kind in DISTINCT_KINDS:
        return user
    if addresses.kind == "mobile-carrier" and addresses.change_every_s:
        return 0
    return user % addresses.pool_size


def split_users(plan: LoadPlan, workers: int) -> list[Share]:
    """The users of `plan` dealt to `workers` shares by address group; a share may be empty when the
    plan has fewer groups than workers."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    groups: dict[tuple[int, int], list[tuple[str, int]]] = defaultdict(list)  # (population, group) -> users
    for p_index, population in enumerate(plan.populations):
        for kind, count in population.clients.items():
            for user in range(max(0, count)):
                groups[(p_index, address_group(population, user))].append((kind, user))
    shares: list[Share] = [defaultdict(list) for _ in range(workers)]
    load = [(0, w) for w in range(workers)]  # (users so far, worker): a heap, fewest first
    for key in sorted(groups, key=lambda k: (-len(groups[k]), k)):
        users, worker = heapq.heappop(load)
        name = plan.populations[key[0]].name
        for kind, user in groups[key]:
            shares[worker][(name, kind)].append(user)
        heapq.heappush(load, (users + len(groups[key]), worker))
    return [{k: sorted(v) for k, v in share.items()} for share in shares]


def share_addresses(plan: LoadPlan, share: Share) -> list[str]:
    """Every source address the users of `share` take during the run, each once: the address of each
    user, and the whole pool of a carrier whose phones change address (its phones move over all of it)."""
    populations = {p.name: p for p in plan.populations}
    taken: dict[str, None] = {}
    for (name, _kind), numbers in share.items():
        addresses = populations[name].addresses
        if addresses.kind == "mobile-carrier" and addresses.change_every_s:
            taken.update(dict.fromkeys(addresses.pool()))
        else:
            taken.update(dict.fromkeys(addresses.address_of(user) for user in numbers))
    return list(taken)
