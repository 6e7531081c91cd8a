"""Locust's user dispatcher, made to send every user of a share to one worker (loadgen.split).

Locust's master deals users to workers round robin, one at a time, whatever their class: the users
behind one NAT address would end up in every worker. `ShareDispatcher` keeps Locust's ramp (how many
users start when) and changes only where a user goes: the user classes of share s (`share` on the
class, set by loadgen.plan.user_classes) go to the s-th worker in Locust's own stable order of
workers. Locust takes the dispatcher as `Environment(dispatcher_class=...)`; the two methods below
are the ones of locust.dispatch.UsersDispatcher (Locust 2.x) that pick a worker.

Locust orders workers by host name and a random id, which is fine for workers that can each run any
share: processes on one machine, which all bind every loopback address. A worker that holds only its
own share's addresses (a loadgen container of the docker backend) must get that share and no other:
`ShareDispatcher.pinned(owners)` sends each share to the worker `owners` names for it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from locust.dispatch import UsersDispatcher

if TYPE_CHECKING:
    from locust import User
    from locust.runners import WorkerNode


class ShareDispatcher(UsersDispatcher):
    # Locust client id -> the share that worker must run (set by `pinned`); a share nobody holds goes to
    # the worker at its index in Locust's order.
    owners: ClassVar[dict[str, int]] = {}

    @classmethod
    def pinned(cls, owners: dict[str, int]) -> type[ShareDispatcher]:
        """This dispatcher with share `owners[id]` sent to the worker of Locust client id `id`."""
        return type(cls.__name__, (cls,), {"owners": dict(owners)})

    def __init__(self, worker_nodes: list[WorkerNode], user_classes: list[type[User]]) -> None:
        super().__init__(worker_nodes, user_classes)
        self._share_of = {c.__name__: getattr(c, "share", None) or 0 for c in user_classes}

    def _worker_for(self, user: str) -> WorkerNode:
        """The worker of the user's share; a worker gone takes its share to the next (the run is invalid
        by then: the lab says which worker died)."""
        share = self._share_of[user]
        for node in self._worker_nodes:
            if self.owners.get(node.id) == share:
                return node
        return self._worker_nodes[share % len(self._worker_nodes)]

    def _add_users_on_workers(self) -> dict[str, dict[str, int]]:
        step = self._user_count_per_dispatch_iteration
        target = min(self._current_user_count + step, self._target_user_count)
        for user in self._user_generator:
            if not user:
                self._no_user_to_spawn = True
                break
            worker_node = self._worker_for(user)
            self._users_on_workers[worker_node.id][user] += 1
            self._current_user_count += 1
            self._active_users.append((worker_node, user))
            if self._current_user_count >= target:
                break
        return self._users_on_workers

    def _distribute_users(
        self, target_user_count: int
    ) -> tuple[Any, Iterator[str | None], itertools.cycle, list]:
        user_gen = self._user_gen()
        users_on_workers = {
            node.id: {c.__name__: 0 for c in self._original_user_classes} for node in self._worker_nodes
        }
        active_users = []
        for _ in range(target_user_count):
            user = next(user_gen)
            if not user:
                break
            worker_node = self._worker_for(user)
            users_on_workers[worker_node.id][user] += 1
            active_users.append((worker_node, user))
        return users_on_workers, user_gen, itertools.cycle(self._worker_nodes), active_users
