"""A farm of mock CAS running on a background thread's event loop, for tests and benchmarks that want
one in-process (no subprocess start-up). The lab itself runs each CAS as its own process (lab/farm.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from mockcas.cas import Cas
from mockcas.config import CasConfig
from mockcas.server import CasServer

T = TypeVar("T")


class EmbeddedFarm:
    """`with EmbeddedFarm([CasConfig(...), ...]) as farm:` starts every CAS and stops them on exit."""

    def __init__(self, configs: Iterable[CasConfig]) -> None:
        self.configs = list(configs)
        self.servers: list[CasServer] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mockcas-farm", daemon=True)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the farm's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> EmbeddedFarm:
        self._thread.start()
        for config in self.configs:
            server = CasServer(config)
            self.call(server.start())
            self.servers.append(server)
        return self

    def stop(self) -> None:
        for server in self.servers:
            self.call(server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __getitem__(self, name: str) -> Cas:
        """The state of the CAS called `name` (read it only while the farm is idle)."""
        return next(s.cas for s in self.servers if s.cas.name == name)

    def __enter__(self) -> EmbeddedFarm:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
