"""Balancer drivers: real HAProxy, nginx, Envoy and Traefik processes, or an external VIP.

The contract (one narrow interface, like an httpx transport; one module per driver):

    driver = get_driver(spec, run_dir)      # spec: lab.model.BalancerSpec
    driver.refusals()                       # [] or one message per service the driver cannot do
    files = driver.render()                 # {file name: text}; written into run_dir/balancer/
    driver.start(); driver.wait_ready(t)    # the real process, listening on the VIP (loopback only)
    driver.counters()                       # {server name: requests} as the balancer counted them
    driver.stop()                           # always safe to call, also after a failed start

A method a driver cannot do faithfully is refused (`Unsupported`, naming the service, the method and
the methods this driver has) — never silently approximated. Drivers register with `@register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import ClassVar

from lab.model import BalancerSpec


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

    def __init__(self, spec: BalancerSpec, run_dir: Path) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.config_dir = run_dir / "balancer"

    def refusals(self) -> list[str]:
        """What this driver cannot do of the spec, one message per service (empty when all is fine)."""
        out = []
        for service, p in self.spec.persistence.items():
            for method in [p.method] + ([p.fallback.method] if p.fallback else []):
                if method not in self.methods:
                    out.append(
                        f"{self.name} cannot do '{method}' persistence for {service}; "
                        f"it can do: {', '.join(sorted(self.methods))}"
                    )
        if self.spec.tls not in self.tls_modes:
            out.append(
                f"{self.name} cannot do tls '{self.spec.tls}'; it can do: {', '.join(sorted(self.tls_modes))}"
            )
        return out

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


DRIVERS: dict[str, type[Balancer]] = {}


def register(cls: type[Balancer]) -> type[Balancer]:
    DRIVERS[cls.name] = cls
    return cls


def load_all() -> None:
    """Import every driver module of this package, so each registers itself."""
    for module in pkgutil.iter_modules(__path__):
        if module.name != "presets":
            importlib.import_module(f"{__name__}.{module.name}")


def driver_class(name: str) -> type[Balancer]:
    load_all()
    if name not in DRIVERS:
        raise Unsupported(f"unknown balancer driver {name!r}; allowed: {', '.join(sorted(DRIVERS))}")
    return DRIVERS[name]


def get_driver(spec: BalancerSpec, run_dir: Path) -> Balancer:
    return driver_class(spec.driver)(spec, run_dir)
