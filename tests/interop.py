"""What the interoperability tests share: a mock CAS farm behind the default balancer driver with TLS
offload and the run's certificates, as real third-party clients meet it.

Addresses (this part's block): CAS01-03 on 127.0.40.11-13, the VIP on 127.0.40.1 (HTTPS 8443). The
farm runs in-process (mockcas.embedded), so a test can shorten the RPC/HTTP pairing wait; the balancer
is a real process. Under `none-all` the default driver balances each pool round robin with one worker
(lab.balancers.drivers.envoy), so two requests in a row to one pool always reach two different CAS:
that is what makes the "Exchange 2010 way" failures of these tests deterministic.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mockcas_helpers import ledger

import mockcas  # noqa: F401 - before aiohttp anywhere (RPC/HTTP methods need the pure-Python parser)
from caslab.vocab import DRIVERS
from lab.balancers import Balancer, get_driver
from lab.balancers.presets import resolve
from lab.certs import make_tls_files
from lab.model import BalancerSpec, HealthCheck, TlsFiles, Vip, local_farm
from mockcas.config import CasConfig
from mockcas.embedded import EmbeddedFarm

BASE = "127.0.40"
VIP = Vip(f"{BASE}.1")
SERVERS = local_farm(3, BASE)
DRIVER = DRIVERS[0]  # the default driver
USER, PASSWORD = "user1@caslab.test", "caslab"
HOST = "mail.caslab.test"  # the name on the run's certificate
# How long a lone RPC/HTTP channel waits for its partner before the CAS closes it (default 10 s).
PAIRING_WAIT_S = 1.0


@dataclass
class InteropLab:
    """The farm and the run's certificates; `balancer(preset)` puts the default driver in front."""

    farm: EmbeddedFarm
    tls: TlsFiles
    run_dir: Path

    @contextmanager
    def balancer(self, preset: str) -> Iterator[Balancer]:
        """The default driver with `preset` and TLS offload on the VIP, ready: it listens, and its
        health probes found every CAS up (so round robin cycles through all of them)."""
        spec = BalancerSpec(
            DRIVER,
            resolve(preset),
            SERVERS,
            VIP,
            "single-vip",
            "offload",
            HealthCheck(interval_s=0.2, fall=2, rise=2),
            self.tls,
            preset,
        )
        run_dir = self.run_dir / f"balancer-{preset}-{time.monotonic_ns()}"
        run_dir.mkdir(parents=True)
        driver = get_driver(spec, run_dir)
        try:
            driver.start()
            driver.wait_ready(20)
            yield driver
        finally:
            driver.stop()


@contextmanager
def interop_lab(run_dir: Path) -> Iterator[InteropLab]:
    """Three CAS sharing one farm key, and the run's CA and certificate for the VIP."""
    tls = make_tls_files(run_dir / "tls", VIP, SERVERS)
    farm_key = secrets.token_bytes(32)
    configs = [
        CasConfig(s.name, s.host, farm_key=farm_key, time_scale=60, rpc_pairing_wait_s=PAIRING_WAIT_S)
        for s in SERVERS
    ]
    with EmbeddedFarm(configs) as farm:  # start() returns once every listener is open
        yield InteropLab(farm, tls, run_dir)


def rows(service: str, since: dict[str, int] | None = None) -> list[dict]:
    """Every CAS' ledger rows of `service` in the order they were written, newer than the marks in
    `since` (see `marks`)."""
    since = since or {}
    found = [row for s in SERVERS for row in ledger(s.host, service) if row["seq"] >= since.get(s.name, 0)]
    return sorted(found, key=lambda row: row["ts"])


def marks() -> dict[str, int]:
    """Where each CAS' ledger ends now, so a test reads only the rows its own client made."""
    return {s.name: len(ledger(s.host)) for s in SERVERS}


def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
