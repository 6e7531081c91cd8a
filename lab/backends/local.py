"""The local backend: the farm as `caslab cas` processes on 127.0.1.1n, the balancer as a real process
on the VIP 127.0.1.1, and Locust in this process (or its master here and `workers` worker processes,
loadgen.distributed) — all on loopback.

`LocalLab` brings the pieces up in order (farm, then balancer, each polled until ready), fires faults,
collects ledgers and tears everything down in `stop()`, which is safe to call at any point (also after a
failed start, on Ctrl-C or on an error): no process is left behind.

The lab owns its addresses: it starts nothing while another lab listens on them
(lab.backends.addresses), every CAS it starts answers its health URL with the lab's run id, and the
balancer is ready only when its own process holds the VIP's listening sockets. Each process is written
into the lab's state file the moment it starts (lab.backends.state), so that if this process is
killed with SIGKILL the janitor finds what it left.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from caslab.vocab import FAULT_ACTIONS
from lab.backends.addresses import check_free
from lab.backends.state import LabRecord
from lab.backends.teardown import signals_held
from lab.balancers import Balancer, BalancerError, get_driver
from lab.balancers.process import ProcessBalancer
from lab.farm import FarmError, LocalFarm
from lab.model import BalancerSpec, CasEndpoint, ExchangeSettings

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
        record: LabRecord,
        *,
        time_scale: float = 1.0,
        key_seed: str | None = None,
        vip_host_name: str = "mail.caslab.test",
        oab_skew: bool = False,
        exchange: ExchangeSettings | None = None,
        workers: int = 1,
        remote_workers: int = 0,
        master_bind: tuple[str, int] | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.spec = spec
        self.workers = workers
        self.remote_workers = remote_workers  # join from other machines (loadgen.distributed)
        self.master_bind = master_bind
        self.say = say
        self.run_dir = run_dir
        self.record = record
        self.run_id = record.run_id
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
            exchange=exchange,
            extra_args=["--oab-skew"] if oab_skew else None,
            run_id=self.run_id,
            on_start=record.started,
        )
        self.balancer: Balancer = get_driver(spec, run_dir)

    @property
    def servers(self) -> list[CasEndpoint]:
        return self.spec.servers

    def start(self) -> None:
        self.balancer.write_config()
        self._check_addresses()
        log.info("starting %d CAS of run %s", len(self.spec.servers), self.run_id)
        try:
            self.farm.start()
            log.info("starting %s %s", self.balancer.name, self.balancer.version())
            self.balancer.start()
            if isinstance(self.balancer, ProcessBalancer) and self.balancer.process is not None:
                self.record.started("balancer", self.balancer.process.pid)
            self.balancer.wait_ready()
        except (FarmError, BalancerError):
            self._check_addresses()  # another lab that took the addresses meanwhile: say which
            raise

    def _check_addresses(self) -> None:
        """AddressesTaken if another lab listens where this one must (the VIP only when the lab runs the
        balancer: an external one is the user's)."""
        check_free(self.spec, f"caslab {self.record.command}", vip=isinstance(self.balancer, ProcessBalancer))

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
        """Run the load in this process (Locust as a library, loadgen.runner.run_load), or with more than
        one worker, or workers from other machines, over worker processes (loadgen.distributed), each
        writing events-<host>-<pid>.csv beside `events_path` (or shipping its log there)."""
        if self.workers > 1 or self.remote_workers:
            from loadgen.distributed import WorkerProcesses, run_load_on_workers  # imports locust (gevent)

            processes = WorkerProcesses(
                self.workers, events_path, lambda pid: self.record.started(f"loadgen-worker-{pid}", pid)
            )
            return run_load_on_workers(
                plan, events_path, duration_s, ramp_s, processes, on_progress=on_progress, between=between,
                remote_workers=self.remote_workers, master_bind=self.master_bind, say=self.say,
            )  # fmt: skip
        from loadgen.runner import run_load  # imports locust, which patches the process with gevent

        return run_load(plan, events_path, duration_s, ramp_s, on_progress=on_progress, between=between)

    def collect_ledgers(self) -> list[dict]:
        self.farm.collect_ledger()
        return self.farm.ledger_rows

    def lost_servers(self) -> list[str]:
        return list(self.farm.lost)

    def server_stats(self) -> dict[str, dict]:
        """Each running CAS's /caslab/stats (peak in-flight requests, counts per service and state)."""
        stats = {}
        for name in sorted(self.farm.proven):
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
        with signals_held():
            try:
                self.balancer.stop()
            finally:
                self.farm.stop()
