"""DockerLab: the docker backend's lab (lab.backends.Lab), its farm, balancer and load generator as
containers on a network of its own.

What differs from the local backend:
- Images: compose/build-images makes sure they match the sources (a second when nothing changed); the
  lab runs the ones tagged with the hash of this checkout's sources.
- The balancer is its driver's own class with ContainerBalancer mixed in (lab.backends.docker.balancer).
- The load runs in the loadgen container (loadgen.container_run); the host fires the faults as the
  container's progress lines come in. With `workers` > 1 it runs in that many loadgen containers, each
  a Locust worker with its share of the users and their addresses (lab.backends.docker.workers), and
  the master in this process on the lab network's gateway, which fires the faults as the local master
  does. Faults are container kill/start and the CAS admin switches.
- Teardown removes by label (org.caslab.run): every container, network and volume of the run, also of a
  start that failed half-way, on Ctrl-C and on SIGTERM. The labels also name the lab's owner, so that
  the janitor removes a lab whose owner was killed before it could (lab.backends.janitor).
- The CAS are ready when their health URL answers with the run id; the balancer's readiness reads the
  listening sockets of its container's own network namespace, which holds nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors
from docker.types import Mount

from caslab.vocab import FAULT_ACTIONS
from lab.backends.docker.balancer import container_balancer
from lab.backends.docker.engine import DockerLabError, LabContainers, bind, connect
from lab.backends.docker.host import make_room_for_neighbours
from lab.backends.docker.images import Images, ensure_images
from lab.backends.docker.network import LabNetwork
from lab.backends.state import LabRecord
from lab.backends.teardown import signals_held
from lab.balancers import Balancer
from lab.farm import http_get_json, http_post_json
from lab.model import BalancerSpec, CasEndpoint, ExchangeSettings
from loadgen.progress import LoadResult, Progress

if TYPE_CHECKING:
    from docker.models.containers import Container

    from loadgen.plan import LoadPlan

log = logging.getLogger("caslab.lab")


class DockerLab:
    """The lab in containers; see lab.backends.Lab for what each call does."""

    def __init__(
        self,
        spec: BalancerSpec,
        run_dir: Path,
        network: LabNetwork,
        record: LabRecord,
        *,
        time_scale: float = 1.0,
        key_seed: str | None = None,
        vip_host_name: str = "mail.caslab.test",
        oab_skew: bool = False,
        exchange: ExchangeSettings | None = None,
        workers: int = 1,
    ) -> None:
        self.spec = spec
        self.workers = workers  # loadgen containers: 1 runs Locust on its own in one
        self.run_dir = run_dir = run_dir.resolve()  # mounted at the same path in the containers
        self.run_id = record.run_id
        self.containers = LabContainers(connect(), network, run_dir, record)
        self.balancer: Balancer = container_balancer(spec, run_dir, self.containers)
        self.images: Images | None = None
        self.farm_key = secrets.token_bytes(32)
        self.time_scale = time_scale
        self.key_seed = key_seed
        self.vip_host_name = vip_host_name
        self.oab_skew = oab_skew
        self.exchange = exchange or ExchangeSettings()  # the scenario's [farm.exchange], for every CAS
        # CAS serve HTTPS themselves only when the balancer re-encrypts (bridge) or passes TLS through.
        self.cas_tls = spec.tls_files if spec.tls in ("bridge", "passthrough") else None
        self.cas: dict[str, Container] = {}
        self.running: set[str] = set()
        self._ledger_next: dict[str, int] = {}
        self.ledger_rows: list[dict] = []
        self.lost: list[str] = []  # ledgers it could not read (lost_servers)

    @property
    def servers(self) -> list[CasEndpoint]:
        return self.spec.servers

    def endpoint(self, name: str) -> CasEndpoint:
        for e in self.servers:
            if e.name == name:
                return e
        raise DockerLabError(f"no server {name!r} in this farm ({', '.join(e.name for e in self.servers)})")

    def start(self) -> None:
        self.balancer.check()  # refuse what the driver cannot do before building anything
        self.images = ensure_images(self.containers.client, ["cas", self.balancer.name, "loadgen"])
        self.balancer.image = self.images.of(self.balancer.name)
        self.containers.create_network()
        log.info(
            "starting %d CAS of run %s on %s (images %s)",
            len(self.servers), self.run_id, self.containers.network.subnet, self.images.tag,
        )  # fmt: skip
        farm_dir = self.run_dir / "farm"  # each CAS writes its IIS log into farm/<name>/ (--w3c-log)
        farm_dir.mkdir(parents=True, exist_ok=True)
        for e in self.servers:
            args = self._cas_args(e)
            mounts = [*self._tls_mounts(), bind(farm_dir)]
            self.cas[e.name] = self.containers.run(
                e.name.lower(), self.images.of("cas"), e.host, command=args, mounts=mounts
            )
        deadline = time.monotonic() + 60
        for e in self.servers:
            self._wait_healthy(e, deadline)
        self.balancer.start()
        self.balancer.wait_ready(timeout=60)
        log.info("%s %s ready on %s", self.balancer.name, self.balancer.version(), self.spec.vip.host)

    def _cas_args(self, e: CasEndpoint) -> list[str]:
        """Arguments of the CAS image's entry point (`caslab cas --host 0.0.0.0`); ports are the defaults."""
        args = [
            "--name", e.name,
            "--run-id", self.run_id,
            "--farm-key", self.farm_key.hex(),
            "--time-scale", str(self.time_scale),
            "--vip-host", self.vip_host_name,
            "--log-level", "WARNING",
        ]  # fmt: skip
        if self.key_seed:
            args += ["--key-seed", self.key_seed]
        if self.cas_tls:
            args += ["--cert", str(self.cas_tls.server_cert), "--key", str(self.cas_tls.server_key)]
        if self.oab_skew:
            args += ["--oab-skew"]
        return [*args, *self.exchange.cas_args(), "--w3c-log", str(self.run_dir / "farm" / e.name)]

    def _tls_mounts(self) -> list[Mount]:
        return [bind(self.cas_tls.server_cert.parent, read_only=True)] if self.cas_tls else []

    def _wait_healthy(self, e: CasEndpoint, deadline: float) -> None:
        """Poll the CAS's admin health URL (its admin port opens after all others) until it answers with
        this run's id."""
        url = f"{e.admin_url}/caslab/health"
        container = self.cas[e.name]
        while True:
            try:
                if http_get_json(url, timeout=1.0).get("run") != self.run_id:
                    raise ValueError(f"{url} answers for another run")
                self.running.add(e.name)
                self._ledger_next[e.name] = 0  # a new process starts a new ledger
                return
            except (OSError, ValueError):
                container.reload()
                if container.status != "running":
                    output = container.logs(tail=15).decode(errors="replace")
                    raise DockerLabError(f"{e.name} exited while starting:\n{output}") from None
                if time.monotonic() > deadline:
                    raise DockerLabError(f"{e.name} did not answer {url} in time") from None
                time.sleep(0.05)

    def fault(self, action: str, server: str) -> None:
        """Fire one fault of the scenario (DESIGN.md section 8)."""
        log.info("fault: %s %s", action, server)
        e = self.endpoint(server)
        if action == "stop":  # as a crash: killed, without closing its channels first
            if server in self.running:
                self._collect([server])
                self.cas[server].kill()
                self.running.discard(server)
        elif action == "start":
            if server not in self.running:
                self.cas[server].start()
                self._wait_healthy(e, time.monotonic() + 60)
        elif action in ("drain", "health-down", "health-up"):
            http_get_json(f"{e.admin_url}/caslab/fault?health={action.removeprefix('health-')}")
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
        """Run the load in the loadgen container (loadgen.container_run) and follow its progress lines,
        firing `between(elapsed)` and `on_progress` on each, as the local runner does about once a
        second; with `workers` > 1 in that many containers (`_run_load_on_workers`). The event log goes to
        `events_path`, which must be in the run folder (it is mounted)."""
        from loadgen.container_run import client_addresses, plan_to_json

        if not events_path.resolve().is_relative_to(self.run_dir.resolve()):
            raise DockerLabError(f"the event log must be in the run folder {self.run_dir}, not {events_path}")
        make_room_for_neighbours(len(client_addresses(plan)))
        if self.workers > 1:
            return self._run_load_on_workers(plan, events_path, duration_s, ramp_s, on_progress, between)
        args = ["--user", self.containers.user, "--events", str(events_path),
                "--duration", str(duration_s), "--ramp", str(ramp_s), plan_to_json(plan)]  # fmt: skip
        container = self.containers.run(
            "loadgen",
            self.images.of("loadgen"),
            self.containers.network.loadgen_host,
            entrypoint=["python", "-m", "loadgen.container_run"],
            command=args,
            mounts=[bind(self.run_dir)],
            user="0",  # to add the client addresses; container_run then drops to the host's user
            cap_add=["NET_ADMIN"],
        )
        result = None
        for message in json_lines(container.logs(stream=True, follow=True, stdout=True, stderr=False)):
            if "progress" in message:
                progress = Progress(**message["progress"])
                if between:
                    between(progress.elapsed_s)
                if on_progress:
                    on_progress(progress)
            elif "result" in message:
                result = LoadResult(**message["result"])
        code = container.wait()["StatusCode"]
        errors = container.logs(stdout=False, stderr=True)
        (self.run_dir / "loadgen.log").write_bytes(errors)
        if code != 0 or result is None:
            tail = "\n".join(errors.decode(errors="replace").splitlines()[-15:])
            raise DockerLabError(f"the load generator exited with code {code}:\n{tail}")
        return result

    def _run_load_on_workers(
        self,
        plan: LoadPlan,
        events_path: Path,
        duration_s: float,
        ramp_s: float,
        on_progress: Callable[[Progress], None] | None,
        between: Callable[[float], None] | None,
    ) -> LoadResult:
        """The Locust master in this process, bound on the lab network's gateway (an address of this
        host on a network the lab made, which only its containers reach), and `workers` loadgen
        containers as its workers (lab.backends.docker.workers); each writes its own event log beside
        `events_path`."""
        from lab.backends.docker.workers import LoadgenContainers
        from loadgen.distributed import free_port, run_load_on_workers  # imports Locust (gevent)

        containers = LoadgenContainers(
            self.containers, self.images.of("loadgen"), plan, events_path, self.workers
        )
        gateway = self.containers.network.gateway
        return run_load_on_workers(
            plan, events_path, duration_s, ramp_s, containers, on_progress=on_progress, between=between,
            master_bind=(gateway, free_port(gateway)),
        )  # fmt: skip

    def _collect(self, names: Iterable[str], close: bool = False) -> None:
        """Read the new ledger rows of the named running CAS into `ledger_rows`; with `close`, each first
        ends its open channels and hanging requests, whose rows are written then."""
        for name in names:
            if name not in self.running:
                continue
            admin = self.endpoint(name).admin_url
            if close:
                with contextlib.suppress(OSError, ValueError):  # a CAS that cannot answer has nothing more
                    http_post_json(f"{admin}/caslab/close")
            while True:
                try:
                    page = http_get_json(f"{admin}/caslab/ledger?since={self._ledger_next[name]}", timeout=10)
                except (OSError, ValueError) as err:
                    log.warning("could not read the ledger of %s: %s", name, err)
                    self.lost.append(
                        f"the lab could not read {name}'s ledger past row {self._ledger_next[name]}: {err}"
                    )
                    break
                self.ledger_rows.extend(page["rows"])
                self._ledger_next[name] = page["next"]
                if not page["rows"]:
                    break

    def collect_ledgers(self) -> list[dict]:
        """Every ledger row so far, open channels closed first (the list grows if stop() finds more)."""
        self._collect(sorted(self.running), close=True)
        return self.ledger_rows

    def lost_servers(self) -> list[str]:
        """The ledgers it could not read, and each CAS container no longer running that the lab did not
        stop."""
        ended = []
        for name in sorted(self.running):
            container = self.cas[name]
            container.reload()
            if container.status != "running":
                code = container.attrs["State"]["ExitCode"]
                ended.append(f"{name} exited with code {code} without the lab stopping it")
        return [*self.lost, *ended]

    def server_stats(self) -> dict[str, dict]:
        """Each running CAS's /caslab/stats (peak in-flight requests, counts per service and state)."""
        stats = {}
        for name in sorted(self.running):
            try:
                stats[name] = http_get_json(f"{self.endpoint(name).admin_url}/caslab/stats")
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
        """Collect what the CAS still hold, keep the containers' output in the run folder, and remove
        everything of the run. Safe at any point, also after a failed start."""
        with signals_held():
            try:
                self._collect(sorted(self.running), close=True)
                self.balancer.stop()
                for name, container in self.cas.items():
                    farm_dir = self.run_dir / "farm"
                    farm_dir.mkdir(exist_ok=True)
                    (farm_dir / f"{name}.log").write_bytes(container.logs())
            except (OSError, docker.errors.APIError) as err:
                log.warning("could not keep everything of the lab before removing it: %s", err)
            finally:
                self.running.clear()
                self.containers.remove_all()


def json_lines(chunks: Iterable[bytes]) -> Iterator[dict]:
    """JSON objects from a stream of output chunks, one per complete line; other lines are skipped."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                yield message
