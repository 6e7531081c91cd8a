"""A driver's balancer run in its image instead of as a local process (the docker backend's balancer)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors

from lab.backends.docker.engine import DockerLabError, LabContainers, bind
from lab.balancers import BalancerError, driver_class
from lab.balancers.process import ProcessBalancer, listening_sockets
from lab.model import BalancerSpec

if TYPE_CHECKING:
    from docker.models.containers import Container

BALANCER_CONFIG = "/etc/caslab/balancer"  # where the balancer images read their config (compose/Dockerfile)


class ContainerBalancer(ProcessBalancer):
    """A driver's balancer, run in its image instead of as a local process. Mixed in after the driver's
    class (see `container_balancer`), so the driver's own steps run around it unchanged: rendering and
    its preparations in start(), its readiness checks after the listening sockets in wait_ready(), and
    its counters.

    The driver renders its config into the run folder as it does locally, and that folder is mounted at
    the same path in the container. So every path in the config, and everything the driver reads back
    (HAProxy's stats socket, nginx's and Traefik's access logs), is the same on both sides. Containers
    run as the host's user, so they can read the run's TLS key and write into the run folder."""

    containers: LabContainers
    image: str = ""  # the lab sets it to its driver's image of this checkout's sources
    container: Container | None = None
    _version: str | None = None

    def start(self) -> None:
        if not self.image:
            raise BalancerError(f"no image is set for the {self.name} container")
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

    def stopped(self) -> str | None:
        if self.container is None:
            return None
        self.container.reload()
        if self.container.status == "running":
            return None
        code = self.container.attrs["State"]["ExitCode"]
        return f"{self.name}'s container exited with code {code} (its log: {self.log_path})"

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

    def log_count(self, message: str) -> int:
        """Counted in the container's output so far (saved to the log file first)."""
        self._save_log()
        return super().log_count(message)

    def stop(self) -> None:
        """Keep the balancer's output in its log file; the lab removes the container."""
        if self.container is not None:
            self._save_log()
            self.container = None

    def _save_log(self) -> None:
        if self.container is not None:
            with contextlib.suppress(docker.errors.APIError):
                self.log_path.write_bytes(self.container.logs())


def container_balancer(spec: BalancerSpec, run_dir: Path, containers: LabContainers) -> ContainerBalancer:
    """The driver's own class with ContainerBalancer mixed in, for `spec`'s driver."""
    driver = driver_class(spec.driver)
    if not issubclass(driver, ProcessBalancer):
        raise DockerLabError(
            f"driver {spec.driver} runs no balancer of its own, so it has no container; use --backend local"
        )
    balancer = type(f"Container{driver.__name__}", (driver, ContainerBalancer), {})(spec, run_dir)
    balancer.containers = containers
    return balancer
