"""Balancer drivers: the contract every driver keeps, and the registry that finds them by name.

One narrow interface, like an httpx transport; one module per driver in `lab.balancers.drivers`:

    driver = get_driver(spec, run_dir)      # spec: lab.model.BalancerSpec; run_dir: the run's folder
    driver.refusals()                       # [] or one Refusal per thing the driver cannot do
    driver.check()                          # raise Unsupported naming every refusal
    files = driver.render()                 # {file name: text}, for files in run_dir/balancer/
    driver.write_config()                   # check, render and write them; {file name: path}
    driver.start(); driver.wait_ready(t)    # the real process, listening on the VIP (loopback only)
    driver.counters()                       # {server name: requests} as the balancer counted them
    driver.unenforced()                     # [] or a sentence per part of the spec it runs but cannot enforce
    driver.sample()                         # during the load, about once a second: what it keeps no peak of
    driver.limits_reached()                 # [] or a sentence per limit it ran into (its connection limit)
    driver.stopped()                        # None, or how it stopped (or lost processes) since it started
    driver.processes()                      # how many processes share its connections (a classmethod)
    driver.stop()                           # always safe to call, also after a failed start
    driver.version()                        # what runs (for reports); reads no state of the driver

A spec with `config` (the user's own file, adopted by lab.balancers.userconfig) makes every driver run
that file instead of its own: `write_config` writes the adopted files, `refusals` is empty (the file's
methods are the user's), readiness waits for the file's listeners and counters name the CAS its servers
became (`cas_of`). Start, readiness and stop are the driver's as for its own config.

A driver subclasses `Balancer`, sets the class attributes below and implements `render`, `start`,
`wait_ready`, `stop`, `counters` and `version`; drivers that run a local process subclass
`lab.balancers.process.ProcessBalancer`, which does start/wait_ready/stop for them from `command()`.
What it may assume: the spec passed `refusals()` before `render` or `start` is called; the farm is up
and answering before `start`; `run_dir` exists and is this run's alone. What it must do: listen only on
the spec's VIP addresses (and the VIP's stats port), connect only to the spec's CAS, refuse what it
cannot do faithfully instead of approximating it, never count health probes in `counters`, and leave no
process behind after `stop`.

Class attributes of a driver:
- `name`: its name in `caslab.vocab.DRIVERS` (the scenario's `balancer.driver`);
- `methods`: the persistence methods (`caslab.vocab.METHODS` keys) it does faithfully;
- `tls_modes`: the TLS modes it can do (default all four);
- `active_health_checks`: whether it probes the CAS itself (else it notices a dead CAS from failures);
- `reasons`: method -> why this driver lacks it, for refusals;
- `tcp_methods`, `tcp_reason`: the methods on TCP pools (MAPI, Address Book, TLS passthrough) when fewer
  than `methods`, and why;
- `client_idle_per_route`: whether it can give the services of one listener different client idle
  timeouts (else `client_idle_reason` says why not);
- `tcp_timeouts_reason`: set when it cannot close idle TCP streams at all (MAPI, Address Book, TLS
  passthrough), saying why;
- `table_methods`: the persistence methods for which it keeps a table whose size
  `spec.persistence_table_size` sets (else `table_reason` says why it keeps none);
- `timer_slack_s`, `timer_slack_reason`: how early its idle timeouts may end (0: to the millisecond), and
  why. An idle timeout shorter than TIMER_SLACK_FACTOR times that is refused: divided by a high
  time_scale, the slack would be minutes of Exchange time, and a keep-alive sent in time would be cut.
- `lb_cookie_timeout_reason`: set when its balancer cookie has no idle timeout, saying why; lb-cookie is
  still done (refusing it would refuse the presets), and `unenforced` puts this in every run's notes.

What every driver builds (listeners, pools, routes) is decided once in `lab.balancers.layout`; the
persistence presets are `lab.balancers.presets`; which idle timeout goes where is decided there too
(`lab.model.Timeouts`, already divided by the scenario's time_scale). A spec that sets no timeouts and no
table size renders as it did before they existed: every driver keeps its long defaults then. Counters are
requests for HTTP pools and connections for TCP pools (MAPI, Address Book, TLS passthrough).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from caslab.registry import NotRegistered, Registry
from caslab.vocab import DRIVERS as DRIVER_NAMES
from caslab.vocab import METHODS, SERVICES, TCP_SERVICES, TLS_MODES
from lab.balancers.layout import Layout, Listener, allowed_methods, build_layout, shape_problems
from lab.model import BalancerSpec


class BalancerError(RuntimeError):
    """The balancer process could not be started, or did not become ready."""


@dataclass(frozen=True)
class Refusal:
    """One thing a driver cannot do of a spec, as a record: a persistence `method` for a `service`, a
    `tls` mode, a balancer `setting` (a key under the scenario's [balancer], e.g. "timeouts.client_idle"
    or "persistence_table_size"; `service` when a service's own value asked for it), or a combination of
    settings that no driver can render (only `reason` then, and the service it is about, if one).
    `alternatives` are what the driver can do instead. `str()` is the sentence a user reads."""

    driver: str
    service: str | None = None
    method: str | None = None
    tls: str | None = None
    reason: str = ""
    alternatives: tuple[str, ...] = ()
    setting: str | None = None

    def __str__(self) -> str:
        if self.setting is not None:
            about = f" for {self.service}" if self.service else ""
            instead = f"; instead: {', or '.join(self.alternatives)}" if self.alternatives else ""
            return f"{self.driver} cannot do {self.setting}{about}: {self.reason}{instead}"
        if self.tls is not None:
            return f"{self.driver} cannot do tls '{self.tls}'; it can do: {', '.join(self.alternatives)}"
        if self.method is not None:
            why = f" ({self.reason})" if self.reason else ""
            return (
                f"{self.driver} cannot do '{self.method}' persistence for {self.service}{why}; "
                f"for {self.service} it can do: {', '.join(self.alternatives)}"
            )
        return f"{self.driver}: {self.reason}"


class Unsupported(ValueError):
    """The driver cannot do what the spec asks; `refusals` says what and what it can do instead."""

    def __init__(self, message: str, refusals: tuple[Refusal, ...] = ()) -> None:
        super().__init__(message)
        self.refusals = refusals


# An idle timeout must be this many times the driver's timer slack, so that the slack is at most a third of
# it (lab.balancers.Balancer.timer_slack_s).
TIMER_SLACK_FACTOR = 3


class Balancer:
    """The driver contract (see the module docstring)."""

    name: ClassVar[str]
    methods: ClassVar[frozenset[str]]
    tls_modes: ClassVar[frozenset[str]] = frozenset(TLS_MODES)
    active_health_checks: ClassVar[bool] = True
    reasons: ClassVar[dict[str, str]] = {}
    tcp_methods: ClassVar[frozenset[str] | None] = None
    tcp_reason: ClassVar[str] = ""
    client_idle_per_route: ClassVar[bool] = True
    client_idle_reason: ClassVar[str] = ""
    tcp_timeouts_reason: ClassVar[str] = ""
    table_methods: ClassVar[frozenset[str]] = frozenset()
    table_reason: ClassVar[str] = ""
    timer_slack_s: ClassVar[float] = 0.0
    timer_slack_reason: ClassVar[str] = ""
    lb_cookie_timeout_reason: ClassVar[str] = ""

    def __init__(self, spec: BalancerSpec, run_dir: Path) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.config_dir = run_dir / "balancer"

    @property
    def layout(self) -> Layout:
        return build_layout(self.spec)

    def refusals(self) -> list[Refusal]:
        """What this driver cannot do of the spec, one record each (empty when all is fine)."""
        if self.spec.config is not None:
            return []  # the user's file: its reader refused what cannot run in the lab
        out = []
        if self.spec.tls not in self.tls_modes:
            out.append(Refusal(self.name, tls=self.spec.tls, alternatives=tuple(sorted(self.tls_modes))))
        for service in SERVICES:
            p = self.spec.persistence[service]
            possible, context = allowed_methods(self.spec, service)
            tcp = service in TCP_SERVICES or self.spec.tls == "passthrough"
            methods = self.tcp_methods if tcp and self.tcp_methods is not None else self.methods
            mine = tuple(m for m in METHODS if m in possible and m in methods)
            for method in [p.method] + ([p.fallback.method] if p.fallback else []):
                if method in mine:
                    continue
                if method not in possible:
                    why = context
                elif method in self.methods:  # this driver has it, only not on TCP
                    why = self.tcp_reason
                else:
                    why = self.reasons.get(method, "")
                out.append(Refusal(self.name, service, method, reason=why, alternatives=mine))
        shape = [
            Refusal(self.name, p.service, reason=p.text, setting=p.setting) for p in shape_problems(self.spec)
        ]
        return out + shape + self._timer_refusals()

    def _timer_refusals(self) -> list[Refusal]:
        """What this driver cannot do of the spec's idle timeouts and table size."""
        out = []
        size = self.spec.persistence_table_size
        if size is not None and not self._keeps_a_table():
            reason = self.table_reason or (
                f"{self.name} keeps a persistence table only for {', '.join(sorted(self.table_methods))}, "
                "and no service here has one of them"
            )
            out.append(
                Refusal(
                    self.name,
                    setting="persistence_table_size",
                    reason=reason,
                    alternatives=(
                        "leave persistence_table_size out",
                        f"{' or '.join(sorted(self.table_methods))} persistence for a service"
                        if self.table_methods
                        else "driver haproxy (stick tables) or external",
                    ),
                )
            )
        for listener in self.layout.listeners:
            if listener.kind == "tcp" and self.tcp_timeouts_reason:
                for side in ("client_idle", "server_idle"):
                    asked = self._asked(listener.default.services, side)
                    if asked:
                        out.append(
                            Refusal(
                                self.name,
                                asked[0],
                                setting=f"timeouts.{side}",
                                reason=f"{' and '.join(listener.services)} "
                                f"{'is' if len(listener.services) == 1 else 'are'} TCP here, and "
                                f"{self.tcp_timeouts_reason}",
                                alternatives=(
                                    "driver haproxy, nginx or envoy",
                                    f"{side} per HTTP service only ([balancer.timeouts] <service> = "
                                    f'{{ {side} = "..." }})',
                                ),
                            )
                        )
            if listener.client_idle_varies and not self.client_idle_per_route:
                out.append(self._one_client_idle(listener))
        return out + self._slack_refusals()

    def _slack_refusals(self) -> list[Refusal]:
        """The idle timeouts too short for this driver's timer slack, one refusal per setting."""
        shortest = TIMER_SLACK_FACTOR * self.timer_slack_s
        timeouts = self.spec.timeouts
        out = []
        for service in (None, *sorted(timeouts.services)):
            own = timeouts.services[service] if service else timeouts
            for side in ("client_idle", "server_idle"):
                value = getattr(own, f"{side}_s")
                if value is not None and value < shortest:
                    out.append(
                        Refusal(
                            self.name,
                            service,
                            setting=f"timeouts.{side}",
                            reason=f"it is {value:g} s of the lab's time (Exchange time divided by "
                            f"time_scale); {self.timer_slack_reason}: a keep-alive sent in time could be cut",
                            alternatives=(f"a lower time_scale, so that it is at least {shortest:g} s",),
                        )
                    )
        return out

    def _keeps_a_table(self) -> bool:
        methods = {p.persistence.method for p in self.layout.pools}
        methods |= {p.persistence.fallback.method for p in self.layout.pools if p.persistence.fallback}
        return bool(methods & self.table_methods)

    def _asked(self, services: tuple[str, ...], side: str) -> list[str | None]:
        """Who set `side` for `services`: the services whose own override sets it, else None (the
        scenario's [balancer.timeouts] itself), or [] when it is not set for them at all."""
        timeouts = self.spec.timeouts
        if not any(getattr(timeouts.of(s), f"{side}_s") is not None for s in services):
            return []
        own = [s for s in services if getattr(timeouts.services.get(s), f"{side}_s", None) is not None]
        return own or [None]

    def _one_client_idle(self, listener: Listener) -> Refusal:
        services = listener.services
        alternatives = [f"one client_idle for {', '.join(services)}"]
        if self.spec.topology == "single-vip":
            alternatives.insert(0, "topology vip-per-service (one listener per service group)")
            alternatives[-1] += " and paths no service owns ([balancer.timeouts] client_idle)"
        return Refusal(
            self.name,
            self._asked(services, "client_idle")[0],
            setting="timeouts.client_idle",
            reason=f"{self.client_idle_reason}, and {', '.join(services)} share the listener {listener.name}",
            alternatives=tuple(alternatives),
        )

    def check(self) -> None:
        """Raise Unsupported listing every refusal."""
        problems = self.refusals()
        if problems:
            raise Unsupported("; ".join(map(str, problems)), tuple(problems))

    def render(self) -> dict[str, str]:
        raise NotImplementedError

    def files(self) -> dict[str, str]:
        """The config files to run: the user's adopted files when the spec has them, else render()."""
        return self.spec.config.as_run() if self.spec.config is not None else self.render()

    def listen_addresses(self) -> set[tuple[str, int]]:
        """Every (address, port) the balancer listens on once ready (the stats port aside)."""
        if self.spec.config is not None:
            return set(self.spec.config.listeners)
        return {(listener.host, listener.port) for listener in self.layout.listeners}

    def cas_of(self, pool: str, server: str) -> str | None:
        """The CAS a server of a pool (by their names in the config) is; None for no CAS of the farm."""
        if self.spec.config is not None:
            return self.spec.config.cas_of(pool, server)
        return server if server in {cas.name for cas in self.spec.servers} else None

    def write_config(self) -> dict[str, Path]:
        """Render and write the config files into run_dir/balancer/; returns their paths."""
        self.check()
        self.config_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, text in self.files().items():
            path = self.config_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)  # a user's config may name files in folders
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

    def unenforced(self) -> list[str]:
        """A sentence for each part of the spec this driver runs without enforcing it, for the run's notes
        (a run must not pass quietly on what it did not test): the idle timeout of its balancer cookie
        when it has none (`lb_cookie_timeout_reason`). A user's own config enforces what it says."""
        services = sorted(s for s, p in self.spec.persistence.items() if p.method == "lb-cookie")
        if not self.lb_cookie_timeout_reason or not services or self.spec.config is not None:
            return []
        return [
            f"{self.name} does not expire its balancer cookie (lb-cookie on {', '.join(services)}) after the "
            f"persistence timeout: {self.lb_cookie_timeout_reason}"
        ]

    @classmethod
    def processes(cls) -> int:
        """How many processes of this machine share the balancer's connections, each with an open-file
        limit of its own (lab.capacity sizes the balancer's descriptors by it): 1 by default (HAProxy,
        Envoy and Traefik are one process, whatever their threads), 0 for a balancer that is not the
        lab's."""
        return 1

    def sample(self) -> None:
        """During the load, about once a second: read what the balancer keeps no peak of, for
        `limits_reached` after the load (HAProxy's count of connections under its global maxconn). Quick,
        and may raise OSError when the balancer does not answer (the caller goes on). Default: nothing."""

    def limits_reached(self) -> list[str]:
        """After the load: a sentence for each limit of the balancer's own that the load reached, such as
        a connection limit that HAProxy sized from this machine's open-file limit (connections beyond it
        wait in the accept queue). A run that reached one and broke sessions cannot say whether the
        persistence or the limit broke them (lab/verifier/limits.py). Default: none known."""
        return []

    def stopped(self) -> str | None:
        """After the load: None while the balancer runs as it started, else a sentence on what ended it
        (its exit code) or cut its connections (nginx's master restarting a worker that crashed).
        Requests after that failed for the lab's reason, so such a run is invalid. Default: None (a
        balancer the lab does not run, whose process it cannot see)."""
        return None

    def version(self) -> str:
        raise NotImplementedError


def times(count: int) -> str:
    """How often, in a limit's sentence: "once", "2 times", "1,234 times"."""
    return "once" if count == 1 else f"{count:,} times"


DRIVERS: Registry[type[Balancer]] = Registry(
    "balancer driver", DRIVER_NAMES, f"{__name__}.drivers", lambda cls: cls.name
)
register = DRIVERS.register


def driver_class(name: str) -> type[Balancer]:
    try:
        return DRIVERS[name]
    except NotRegistered as err:
        raise Unsupported(str(err)) from None


def get_driver(spec: BalancerSpec, run_dir: Path) -> Balancer:
    return driver_class(spec.driver)(spec, run_dir)
