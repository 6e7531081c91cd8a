"""The local backend: the farm as `caslab cas` processes on 127.0.1.1n, the balancer as a real process
on the VIP 127.0.1.1, and Locust in this process — all on loopback.

`LocalLab` brings the pieces up in order (farm, then balancer, each polled until ready), fires faults,
collects ledgers and tears everything down in `stop()`, which is safe to call at any point (also after a
failed start, on Ctrl-C or on an error): no process is left behind.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from caslab.vocab import FAULT_ACTIONS
from lab.balancers import Balancer, get_driver
from lab.farm import LocalFarm
from lab.model import BalancerSpec, CasEndpoint

if TYPE_CHECKING:
    from loadgen.plan import LoadPlan
    from loadgen.runner import LoadResult, Progress

log = logging.getLogger("caslab.lab")


class LocalLab:
    """The lab on loopback; see lab.backends.Lab for what each call does."""

    def __init__(
        self,
        spec: BalancerSpec,
        run_dir: Path,
        *,
        time_scale: float = 1.0,
        key_seed: str | None = None,
        vip_host_name: str = "mail.caslab.test",
        oab_skew: bool = False,
    ) -> None:
        self.spec = spec
        self.run_dir = run_dir
        # CAS serve HTTPS themselves only when the balancer re-encrypts (bridge) or passes TLS through.
        cas_tls = spec.tls_files if spec.tls in ("bridge", "passthrough") else None
        self.farm = LocalFarm(
            spec.servers,
            farm_key=secrets.token_bytes(32),
            run_dir=run_dir / "farm",
            time_scale=time_scale,
            key_seed=key_seed,
            tls_files=cas_tls,
            vip_host=vip_host_name,
            extra_args=["--oab-skew"] if oab_skew else None,
        )
        self.balancer: Balancer = get_driver(spec, run_dir)

    @property
    def servers(self) -> list[CasEndpoint]:
        return self.spec.servers

    def start(self) -> None:
        self.balancer.write_config()
        log.info("starting %d CAS", len(self.spec.servers))
        self.farm.start()
        log.info("starting %s %s", self.balancer.name, self.balancer.version())
        self.balancer.start()
        self.balancer.wait_ready()

    def fault(self, action: str, server: str) -> None:
        """Fire one fault of the scenario (DESIGN.md section 8)."""
        log.info("fault: %s %s", action, server)
        if action == "stop":
            self.farm.kill(server)
        elif action == "start":
            self.farm.start([server])
        elif action == "drain":
            self.farm.set_health(server, "drain")
        elif action == "health-down":
            self.farm.set_health(server, "down")
        elif action == "health-up":
            self.farm.set_health(server, "up")
        else:
            raise ValueError(f"unknown fault action {action!r}; allowed: {', '.join(FAULT_ACTIONS)}")

    def run_load(
        self,
        plan: LoadPlan,
        events_path: Path,
        duration_s: float,
        ramp_s: float,
        on_progress: Callable[[Progress], None] | None = None,
        between: Callable[[float], None] | None = None,
    ) -> LoadResult:
        """Run the load in this process (Locust as a library); see loadgen.runner.run_load."""
        from loadgen.runner import run_load  # imports locust, which patches the process with gevent

        return run_load(plan, events_path, duration_s, ramp_s, on_progress=on_progress, between=between)

    def collect_ledgers(self) -> list[dict]:
        self.farm.collect_ledger()
        return self.farm.ledger_rows

    def server_stats(self) -> dict[str, dict]:
        """Each running CAS's /caslab/stats (peak in-flight requests, counts per service and state)."""
        stats = {}
        for name in self.farm.processes:
            try:
                stats[name] = self.farm.stats(name)
            except OSError as err:
                log.warning("could not read %s stats: %s", name, err)
        return stats

    def counters(self) -> dict[str, int]:
        try:
            return self.balancer.counters()
        except Exception as err:
            log.warning("could not read %s counters: %s", self.balancer.name, err)
            return {}

    def stop(self) -> None:
        try:
            self.balancer.stop()
        finally:
            self.farm.stop()
