"""Balancer drivers: real HAProxy, nginx, Envoy and Traefik processes, or an external VIP.

The contract (one narrow interface, like an httpx transport; one module per driver):

    driver = get_driver(spec, run_dir)      # spec: lab.model.BalancerSpec
    driver.refusals()                       # [] or one message per thing the driver cannot do
    files = driver.render()                 # {file name: text}; written into run_dir/balancer/
    driver.start(); driver.wait_ready(t)    # the real process, listening on the VIP (loopback only)
    driver.counters()                       # {server name: requests} as the balancer counted them
    driver.stop()                           # always safe to call, also after a failed start
    driver.version()                        # what runs (for reports)

A method a driver cannot do faithfully is refused (`Unsupported`, naming the service, the method and
the methods this driver has for that service) — never silently approximated. What every driver builds
(listeners, pools, routes) is decided once in `layout`; what the drivers share as processes (config
files, logs and sockets in the run folder, readiness, stopping) is `ProcessBalancer`. Counters are
requests for HTTP pools and connections for TCP pools (MAPI, Address Book, TLS passthrough); health
probes are never counted. Drivers register with `@register`.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import subprocess
import time
from pathlib import Path
from typing import ClassVar

from lab.balancers.layout import Layout, allowed_methods, build_layout, shape_problems
from lab.model import METHODS, SERVICES, TCP_SERVICES, BalancerSpec


class Unsupported(ValueError):
    """The driver cannot do what the spec asks; the message says what it can do instead."""


class BalancerError(RuntimeError):
    """The balancer process could not be started, or did not become ready."""


class Balancer:
    name: ClassVar[str]
    # Persistence methods this driver does faithfully (lab.model.METHODS keys), and the TLS modes.
    methods: ClassVar[frozenset[str]]
    tls_modes: ClassVar[frozenset[str]] = frozenset({"none", "offload", "bridge", "passthrough"})
    active_health_checks: ClassVar[bool] = True
    # Why this driver lacks a method, for the refusal message (method -> reason).
    reasons: ClassVar[dict[str, str]] = {}
    # Methods on TCP pools (MAPI, Address Book, TLS passthrough) when fewer than on HTTP, and why.
    tcp_methods: ClassVar[frozenset[str] | None] = None
    tcp_reason: ClassVar[str] = ""

    def __init__(self, spec: BalancerSpec, run_dir: Path) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.config_dir = run_dir / "balancer"

    @property
    def layout(self) -> Layout:
        return build_layout(self.spec)

    def refusals(self) -> list[str]:
        """What this driver cannot do of the spec, one message each (empty when all is fine)."""
        out = []
        if self.spec.tls not in self.tls_modes:
            out.append(
                f"{self.name} cannot do tls '{self.spec.tls}'; it can do: {', '.join(sorted(self.tls_modes))}"
            )
        for service in SERVICES:
            p = self.spec.persistence[service]
            possible, context = allowed_methods(self.spec, service)
            tcp = service in TCP_SERVICES or self.spec.tls == "passthrough"
            methods = self.tcp_methods if tcp and self.tcp_methods is not None else self.methods
            mine = [m for m in METHODS if m in possible and m in methods]
            for method in [p.method] + ([p.fallback.method] if p.fallback else []):
                if method in mine:
                    continue
                if method not in possible:
                    why = context
                elif method in self.methods:  # this driver has it, only not on TCP
                    why = self.tcp_reason
                else:
                    why = self.reasons.get(method, "")
                out.append(
                    f"{self.name} cannot do '{method}' persistence for {service}"
                    + (f" ({why})" if why else "")
                    + f"; for {service} it can do: {', '.join(mine)}"
                )
        return out + [f"{self.name}: {problem}" for problem in shape_problems(self.spec)]

    def check(self) -> None:
        """Raise Unsupported listing every refusal."""
        problems = self.refusals()
        if problems:
            raise Unsupported("; ".join(problems))

    def render(self) -> dict[str, str]:
        raise NotImplementedError

    def write_config(self) -> dict[str, Path]:
        """Render and write the config files into run_dir/balancer/; returns their paths."""
        self.check()
        self.config_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, text in self.render().items():
            path = self.config_dir / name
            path.write_text(text)
            paths[name] = path
        return paths

    def start(self) -> None:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 20.0) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError


class ProcessBalancer(Balancer):
    """A balancer that is one local process, run in the foreground with its files in run_dir/balancer/.

    Subclasses give `command()` and may extend `wait_ready` with their own readiness signal.
    Readiness starts with the kernel's table of listening sockets (/proc/net/tcp), not with test
    connections: a connection to a TCP listener would reach a CAS and be counted.
    """

    def __init__(self, spec: BalancerSpec, run_dir: Path) -> None:
        super().__init__(spec, run_dir)
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def validate_command(self) -> list[str] | None:
        """The binary's own config check (haproxy -c, nginx -t, envoy --mode validate), if it has one."""
        return None

    def validate(self) -> None:
        """Write the config and have the real binary check it; BalancerError with its output if it
        refuses."""
        self.write_config()
        command = self.validate_command()
        if command is None:
            return
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.config_dir, timeout=60)
        if done.returncode != 0:
            raise BalancerError(f"{self.name} rejects its config:\n{done.stdout}{done.stderr}".rstrip())

    @property
    def log_path(self) -> Path:
        return self.config_dir / f"{self.name}.log"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise BalancerError(f"{self.name} is running already")
        self.write_config()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.config_dir,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the process listens on every VIP address and port of the layout."""
        wanted = {(listener.host, listener.port) for listener in self.layout.listeners}
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            missing = wanted - self.listening()
            if not missing:
                return
            if time.monotonic() > deadline:
                where = ", ".join(f"{h}:{p}" for h, p in sorted(missing))
                raise BalancerError(
                    f"{self.name} did not listen on {where} in {timeout:g} s; see {self.log_path}"
                )
            time.sleep(0.02)

    def listening(self) -> set[tuple[str, int]]:
        """The listening TCP sockets where the balancer runs (a container's are elsewhere)."""
        return listening_sockets()

    def _check_alive(self) -> None:
        if self.process is None:
            raise BalancerError(f"{self.name} was not started")
        if self.process.poll() is not None:
            raise BalancerError(f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


def listening_sockets(table_path: str = "/proc/net/tcp") -> set[tuple[str, int]]:
    """(IPv4 address, port) of every TCP socket in LISTEN state in this process's network namespace, or
    in another process's one through /proc/<pid>/net/tcp."""
    out = set()
    with open(table_path) as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            octets = bytes.fromhex(addr_hex)[::-1]  # the kernel prints the address little-endian
            out.add((".".join(str(b) for b in octets), int(port_hex, 16)))
    return out


DRIVERS: dict[str, type[Balancer]] = {}


def register(cls: type[Balancer]) -> type[Balancer]:
    DRIVERS[cls.name] = cls
    return cls


def load_all() -> None:
    """Import every module of this package, so each driver registers itself."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def driver_class(name: str) -> type[Balancer]:
    load_all()
    if name not in DRIVERS:
        raise Unsupported(f"unknown balancer driver {name!r}; allowed: {', '.join(sorted(DRIVERS))}")
    return DRIVERS[name]


def get_driver(spec: BalancerSpec, run_dir: Path) -> Balancer:
    return driver_class(spec.driver)(spec, run_dir)
