"""Shared fixtures: an in-process mock CAS farm on a chosen 127.x block."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

import mockcas  # noqa: F401 - must come before aiohttp (RPC/HTTP methods need the pure-Python parser)
from lab.model import local_farm
from mockcas.config import CasConfig
from mockcas.embedded import EmbeddedFarm


@pytest.fixture
def make_farm() -> Iterator[Callable[..., EmbeddedFarm]]:
    """`make_farm(base="127.0.11", servers=2, time_scale=60, ...)` starts CAS01.. on base.11, base.12..
    sharing one farm key; extra keyword arguments go to every CasConfig. Stopped after the test."""
    farms: list[EmbeddedFarm] = []

    def make(base: str, servers: int = 2, **config: object) -> EmbeddedFarm:
        farm_key = secrets.token_bytes(32)
        configs = [
            CasConfig(name=e.name, host=e.host, farm_key=farm_key, **config)  # type: ignore[arg-type]
            for e in local_farm(servers, base=base)
        ]
        farm = EmbeddedFarm(configs).start()
        farms.append(farm)
        return farm

    yield make
    for farm in farms:
        farm.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Locust monkey-patches the whole process with gevent when imported, which would change how every
    later in-process farm runs. Tests drive Locust in subprocesses only; this keeps it that way."""
    import sys

    if "locust" in sys.modules and exitstatus == 0:
        session.exitstatus = 1
        print("\nERROR: a test imported locust into the pytest process; drive Locust in a subprocess")
