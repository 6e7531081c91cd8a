"""The docker backend: the farm, the balancer and the load generator as containers on a network of the
lab's own (DESIGN.md sections 6 and 11), driven through the Docker SDK for Python.

    lab network: a free /22 of 10.221.0.0/16 per lab (larger for many clients); internal, nothing leaves it
      .1    this host (the bridge): the lab talks to every container directly, nothing is published
      .2    the balancer, on the VIP (vip-per-service: .3-.9 as well, added to its interface)
      .11…  CAS01… (ports as locally: HTTP 8080, HTTPS 8443, MAPI 59531, Address Book 59532, admin 8099)
      .250  the load generator; the clients' addresses are in the /24s after the first (SubnetAddresses)

`DockerLab` has LocalLab's interface, so lab.run and lab.up drive either. What differs:
- Images: compose/build-images makes sure they match the sources (a second when nothing changed).
- The balancer is its driver's own class with `ContainerBalancer` mixed in: the driver renders its
  config into the run folder as it does locally, and that folder is mounted at the same path in the
  container. So every path in the config, and everything the driver reads back (HAProxy's stats socket,
  nginx's and Traefik's access logs), is the same on both sides. Containers run as the host's user, so
  they can read the run's TLS key and write into the run folder.
- The load runs in the loadgen container (loadgen.container_run); the host fires the faults as the
  container's progress lines come in. Faults are container kill/start and the CAS admin switches.
- Teardown removes by label (org.caslab.run): every container, network and volume of the run, also of a
  start that failed half-way, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool, Mount

from caslab.vocab import FAULT_ACTIONS
from lab.balancers import Balancer, BalancerError, driver_class
from lab.balancers.process import ProcessBalancer, listening_sockets
from lab.farm import http_get_json, http_post_json
from lab.model import BalancerSpec, CasEndpoint, Vip
from loadgen.addresses import SubnetAddresses
from loadgen.progress import LoadResult, Progress

if TYPE_CHECKING:
    from docker.models.containers import Container

    from loadgen.plan import LoadPlan

log = logging.getLogger("caslab.lab")

LAB_NETWORKS = ipaddress.IPv4Network("10.221.0.0/16")  # away from docker0, this host's and the compose lab's
RUN_LABEL, RUN_DIR_LABEL, ROLE_LABEL = "org.caslab.run", "org.caslab.run-dir", "org.caslab.role"
BUILD_IMAGES = Path(__file__).resolve().parents[2] / "compose" / "build-images"
CAS_IMAGE, LOADGEN_IMAGE = "caslab-cas:latest", "caslab-loadgen:latest"
BALANCER_CONFIG = "/etc/caslab/balancer"  # where the balancer images read their config (compose/Dockerfile)
INTERFACE = "eth0"  # a container's interface on its first network
NEIGHBOUR_SYSCTLS = Path("/proc/sys/net/ipv4/neigh/default")


class DockerLabError(RuntimeError):
    """Docker is not there, an image is missing, or a container could not start; the message says which."""


def connect() -> docker.DockerClient:
    """A client of the Docker engine (DOCKER_HOST, else the local socket), or DockerLabError."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as err:
        raise DockerLabError(
            f"Docker is not reachable ({err}); start it (scripts/docker-engine does) or use --backend local"
        ) from None
    return client


@dataclass(frozen=True)
class LabNetwork:
    """The addresses of one lab: the infrastructure in the first /24 of `subnet`, clients after it."""

    subnet: ipaddress.IPv4Network

    def address(self, n: int) -> str:
        return str(self.subnet.network_address + n)

    @property
    def gateway(self) -> str:
        return self.address(1)

    @property
    def vip(self) -> Vip:
        return Vip(host=self.address(2))

    @property
    def loadgen_host(self) -> str:
        return self.address(250)

    def servers(self, count: int) -> list[CasEndpoint]:
        if not 1 <= count <= 99:
            raise ValueError("a farm has 1 to 99 servers")
        return [CasEndpoint(name=f"CAS{n:02d}", host=self.address(10 + n)) for n in range(1, count + 1)]

    @classmethod
    def pick(cls, client_addresses: int, client: docker.DockerClient | None = None) -> LabNetwork:
        """A block of LAB_NETWORKS that no Docker network uses, big enough for the clients (a /22 at
        least, so addresses spread over a few /24s). Chosen at random among the free ones, so that labs
        started together rarely want the same; the engine refuses the second of two that do."""
        prefix = next((p for p in range(22, 15, -1) if SubnetAddresses.capacity(p) >= client_addresses), None)
        if prefix is None:
            raise DockerLabError(f"{client_addresses} client addresses do not fit in {LAB_NETWORKS}")
        used = []
        for network in (client or connect()).networks.list():
            for config in network.attrs.get("IPAM", {}).get("Config") or []:
                subnet = ipaddress.ip_network(config.get("Subnet", "::/128"))
                if subnet.version == 4:
                    used.append(subnet)
        free = [s for s in LAB_NETWORKS.subnets(new_prefix=prefix) if not any(s.overlaps(u) for u in used)]
        if not free:
            raise DockerLabError(f"every /{prefix} of {LAB_NETWORKS} is taken by a Docker network")
        return cls(random.choice(free))


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored inside: a second Ctrl-C must not stop a teardown half-way and leave
    containers behind. (Signal handlers belong to the main thread; elsewhere this does nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def ensure_images(client: docker.DockerClient, images: Iterable[str]) -> None:
    """Run compose/build-images (it rebuilds only what changed), then check that every image is there."""

    def missing() -> list[str]:
        out = []
        for image in images:
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                out.append(image)
        return out

    if BUILD_IMAGES.exists():
        if missing():
            print(f"caslab: building the images ({BUILD_IMAGES}; minutes the first time)", file=sys.stderr)
        done = subprocess.run([str(BUILD_IMAGES)], capture_output=True, text=True)
        for line in done.stdout.splitlines():
            log.info("%s", line)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise DockerLabError(f"{BUILD_IMAGES} failed (logs in .caslab/docker/):\n{tail}")
    absent = missing()
    if absent:
        raise DockerLabError(f"no image {', '.join(absent)}; build them with compose/build-images of caslab")


def make_room_for_neighbours(addresses: int) -> None:
    """The balancer keeps an ARP entry for every client address, and the kernel's neighbour table (one for
    all network namespaces) evicts entries past gc_thresh2 and refuses them past gc_thresh3 (512 and 1024
    by default): requests then time out (research-docker.md). When the plan's addresses, with room for
    the rest of the machine, do not fit under gc_thresh2, raise the thresholds; never lower them."""
    entries = addresses + 256
    if entries <= int((NEIGHBOUR_SYSCTLS / "gc_thresh2").read_text()):
        return
    wanted = {"gc_thresh1": entries, "gc_thresh2": 2 * entries, "gc_thresh3": 4 * entries}
    for name, value in wanted.items():
        path = NEIGHBOUR_SYSCTLS / name
        if int(path.read_text()) >= value:
            continue
        try:
            path.write_text(str(value))
            log.info("raised net.ipv4.neigh.default.%s to %d for %d client addresses", name, value, addresses)
        except OSError as err:
            log.warning(
                "cannot raise net.ipv4.neigh.default.%s to %d (%s): with %d client addresses requests may "
                "time out; run `sysctl -w net.ipv4.neigh.default.%s=%d` as root",
                name, value, err, addresses, name, value,
            )  # fmt: skip


def bind(source: Path, target: str | None = None, read_only: bool = False) -> Mount:
    """A host folder mounted in a container, at the same path unless `target` says otherwise."""
    return Mount(target or str(source), str(source), type="bind", read_only=read_only)


class LabContainers:
    """The containers and the network of one lab run. Everything is made here with the run's labels, so
    `remove_all` finds it all, whatever was running when the lab stopped."""

    def __init__(self, client: docker.DockerClient, network: LabNetwork, run_dir: Path) -> None:
        self.client = client
        self.network = network
        self.run_id = uuid.uuid4().hex[:12]
        self.name = f"caslab-{self.run_id}"
        self.labels = {RUN_LABEL: self.run_id, RUN_DIR_LABEL: str(run_dir)}
        self.user = f"{os.getuid()}:{os.getgid()}"

    def create_network(self) -> None:
        """The lab's bridge network. Internal: the host reaches the containers, nothing else does, and they
        reach nothing outside it."""
        subnet = self.network.subnet
        pool = IPAMPool(subnet=str(subnet), gateway=self.network.gateway)
        try:
            self.client.networks.create(
                self.name,
                driver="bridge",
                internal=True,
                ipam=IPAMConfig(pool_configs=[pool]),
                labels=self.labels,
            )
        except docker.errors.APIError as err:
            raise DockerLabError(f"cannot make the lab network {subnet}: {err.explanation}") from None

    def run(
        self,
        role: str,
        image: str,
        host: str,
        *,
        command: list[str] | None = None,
        entrypoint: list[str] | None = None,
        mounts: Iterable[Mount] = (),
        user: str | None = None,
        cap_add: list[str] | None = None,
        sysctls: dict[str, str] | None = None,
    ) -> Container:
        """Start a container on the lab network at `host`, as the host's user unless `user` says otherwise."""
        try:
            return self.client.containers.run(
                image,
                command,
                entrypoint=entrypoint,
                name=f"{self.name}-{role}",
                labels={**self.labels, ROLE_LABEL: role},
                detach=True,
                init=True,  # a PID 1 that passes signals on and reaps
                network=self.name,
                networking_config={self.name: self.client.api.create_endpoint_config(ipv4_address=host)},
                user=user or self.user,
                environment={"HOME": "/tmp"},  # the host's uid has no home in the image
                mounts=list(mounts),
                cap_add=cap_add,
                sysctls=sysctls,
            )
        except docker.errors.APIError as err:
            raise DockerLabError(f"cannot start the {role} container: {err.explanation}") from None

    def add_addresses(self, container: Container, addresses: list[str]) -> None:
        """Put more addresses on a running container's interface (it needs NET_ADMIN)."""
        script = f'for a; do ip address add "$a/32" dev {INTERFACE} || exit 1; done'
        done = container.exec_run(["sh", "-c", script, "sh", *addresses], user="root")
        if done.exit_code != 0:
            raise DockerLabError(f"cannot add {', '.join(addresses)}: {done.output.decode(errors='replace')}")

    def owned(self) -> tuple[list, list, list]:
        """This run's containers, networks and volumes."""
        only = {"label": f"{RUN_LABEL}={self.run_id}"}
        return (
            self.client.containers.list(all=True, filters=only),
            self.client.networks.list(filters=only),
            self.client.volumes.list(filters=only),
        )

    def remove_all(self, timeout: float = 60.0) -> None:
        """Remove every container (with its anonymous volumes), network and volume of the run. A network
        with a container still attached refuses to go, so this repeats until nothing is left."""
        deadline = time.monotonic() + timeout
        while True:
            containers, networks, volumes = self.owned()
            if not (containers or networks or volumes):
                return
            problems = []
            for thing, remove in [
                *((c, lambda c=c: c.remove(force=True, v=True)) for c in containers),
                *((n, n.remove) for n in networks),
                *((v, lambda v=v: v.remove(force=True)) for v in volumes),
            ]:
                try:
                    remove()
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as err:
                    problems.append(f"{thing.name}: {err.explanation}")
            if problems and time.monotonic() > deadline:
                raise DockerLabError(f"could not remove {'; '.join(problems)}")
            if problems:
                time.sleep(0.2)  # the engine is still detaching a container; ask again


class ContainerBalancer(ProcessBalancer):
    """A driver's balancer, run in its image instead of as a local process. Mixed in after the driver's
    class (see `container_balancer`), so the driver's own steps run around it unchanged: rendering and
    its preparations in start(), its readiness checks after the listening sockets in wait_ready(), and
    its counters."""

    containers: LabContainers
    container: Container | None = None
    _version: str | None = None

    @property
    def image(self) -> str:
        return f"caslab-{self.name}:latest"

    def start(self) -> None:
        self.write_config()
        vip = self.spec.vip
        extra = [host for host in vip.hosts(self.spec.topology) if host != vip.host]
        mounts = [bind(self.config_dir, BALANCER_CONFIG), bind(self.config_dir)]
        if self.spec.tls_files:
            mounts.append(bind(self.spec.tls_files.server_pem.parent, read_only=True))
        # The VIP is the container's only address, so its connections to the CAS leave from it, on ports
        # of the ephemeral range, which holds MAPI's and the Address Book's: a probe that took 59532 before
        # the listener was bound stopped Envoy ("Address already in use"). Reserve the VIP's ports.
        ports = (vip.http_port, vip.https_port, vip.mapi_port, vip.ab_port, vip.stats_port)
        sysctls = {"net.ipv4.ip_local_reserved_ports": ",".join(map(str, ports))}
        if extra:  # vip-per-service: the balancer binds the further VIPs before the lab has added them
            sysctls["net.ipv4.ip_nonlocal_bind"] = "1"
        self.container = self.containers.run(
            "balancer",
            self.image,
            vip.host,
            mounts=mounts,
            cap_add=["NET_ADMIN"] if extra else None,
            sysctls=sysctls,
        )
        if extra:
            self.containers.add_addresses(self.container, extra)

    def listening(self) -> set[tuple[str, int]]:
        return listening_sockets(f"/proc/{self.container.attrs['State']['Pid']}/net/tcp")

    def _check_alive(self) -> None:
        if self.container is None:
            raise BalancerError(f"{self.name} was not started")
        self.container.reload()
        if self.container.status != "running":
            code = self.container.attrs["State"]["ExitCode"]
            raise BalancerError(f"{self.name} exited with code {code}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        return self.container.logs(tail=lines).decode(errors="replace") if self.container else "(no log)"

    def version(self) -> str:
        """The version of the balancer in the image, as the driver reads it (version() reads no state)."""
        if self._version is None:
            if self.container is None:
                raise BalancerError(f"{self.name} was not started")
            code = (
                "import sys; from lab.balancers import driver_class as d; print(d(sys.argv[1]).version(None))"
            )
            done = self.container.exec_run(["python", "-c", code, self.name])
            if done.exit_code != 0:
                raise BalancerError(
                    f"cannot read the {self.name} version: {done.output.decode(errors='replace')}"
                )
            self._version = done.output.decode().strip()
        return self._version

    def stop(self) -> None:
        """Keep the balancer's output in its log file; the lab removes the container."""
        if self.container is not None:
            with contextlib.suppress(docker.errors.APIError):
                self.log_path.write_bytes(self.container.logs())
            self.container = None


def container_balancer(spec: BalancerSpec, run_dir: Path, containers: LabContainers) -> ContainerBalancer:
    driver = driver_class(spec.driver)
    if not issubclass(driver, ProcessBalancer):
        raise DockerLabError(
            f"driver {spec.driver} runs no balancer of its own, so it has no container; use --backend local"
        )
    balancer = type(f"Container{driver.__name__}", (driver, ContainerBalancer), {})(spec, run_dir)
    balancer.containers = containers
    return balancer


class DockerLab:
    def __init__(
        self,
        spec: BalancerSpec,
        run_dir: Path,
        network: LabNetwork,
        *,
        time_scale: float = 1.0,
        key_seed: str | None = None,
        vip_host_name: str = "mail.caslab.test",
        oab_skew: bool = False,
    ) -> None:
        self.spec = spec
        self.run_dir = run_dir = run_dir.resolve()  # mounted at the same path in the containers
        self.containers = LabContainers(connect(), network, run_dir)
        self.balancer: Balancer = container_balancer(spec, run_dir, self.containers)
        self.farm_key = secrets.token_bytes(32)
        self.time_scale = time_scale
        self.key_seed = key_seed
        self.vip_host_name = vip_host_name
        self.oab_skew = oab_skew
        # CAS serve HTTPS themselves only when the balancer re-encrypts (bridge) or passes TLS through.
        self.cas_tls = spec.tls_files if spec.tls in ("bridge", "passthrough") else None
        self.cas: dict[str, Container] = {}
        self.running: set[str] = set()
        self._ledger_next: dict[str, int] = {}
        self.ledger_rows: list[dict] = []

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
        ensure_images(self.containers.client, [CAS_IMAGE, self.balancer.image, LOADGEN_IMAGE])
        self.containers.create_network()
        log.info("starting %d CAS on %s", len(self.servers), self.containers.network.subnet)
        for e in self.servers:
            args = self._cas_args(e)
            self.cas[e.name] = self.containers.run(
                e.name.lower(), CAS_IMAGE, e.host, command=args, mounts=self._tls_mounts()
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
        return args

    def _tls_mounts(self) -> list[Mount]:
        return [bind(self.cas_tls.server_cert.parent, read_only=True)] if self.cas_tls else []

    def _wait_healthy(self, e: CasEndpoint, deadline: float) -> None:
        """Poll the CAS's admin health URL (its admin port opens after all others)."""
        url = f"{e.admin_url}/caslab/health"
        container = self.cas[e.name]
        while True:
            try:
                http_get_json(url, timeout=1.0)
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
        second. The event log goes to `events_path`, which must be in the run folder (it is mounted)."""
        from loadgen.container_run import client_addresses, plan_to_json

        if not events_path.resolve().is_relative_to(self.run_dir.resolve()):
            raise DockerLabError(f"the event log must be in the run folder {self.run_dir}, not {events_path}")
        make_room_for_neighbours(len(client_addresses(plan)))
        args = ["--user", self.containers.user, "--events", str(events_path),
                "--duration", str(duration_s), "--ramp", str(ramp_s), plan_to_json(plan)]  # fmt: skip
        container = self.containers.run(
            "loadgen",
            LOADGEN_IMAGE,
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
                    break
                self.ledger_rows.extend(page["rows"])
                self._ledger_next[name] = page["next"]
                if not page["rows"]:
                    break

    def collect_ledgers(self) -> list[dict]:
        """Every ledger row so far, open channels closed first (the list grows if stop() finds more)."""
        self._collect(sorted(self.running), close=True)
        return self.ledger_rows

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
