"""Rules that involve more than one key of a scenario, checked after reading and again after the
command line's overrides: persistence methods against the TLS mode and the services' protocols, the
fault schedule against the farm and the load phase, and last what the chosen driver refuses.

A driver's refusals are records (lab.balancers.Refusal: service, method, tls, setting), so the key to
blame is read from the record: the TLS mode, a [balancer] setting (a service's own timeout, else the
scenario's), the service's persistence override, else the preset.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NoReturn

from caslab.vocab import TCP_SERVICES
from lab.balancers import DRIVERS as REGISTERED_DRIVERS
from lab.balancers import Refusal
from lab.model import TlsFiles, local_farm
from lab.scenario.durations import format_duration
from lab.scenario.model import Scenario, ScenarioError

# Methods that read HTTP (cookies, headers): impossible on plain TCP and through TLS passthrough.
HTTP_METHODS = ("lb-cookie", "app-cookie", "cookie-hash", "header")


def check_scenario(s: Scenario, origin: str) -> None:
    """Raise ScenarioError for the first rule `s` breaks; `origin` names where it came from. With a user's
    own balancer config, the methods are the file's: only whether the driver can read one is checked."""
    if s.balancer.config is not None:
        _check_config(s, origin)
        _check_faults(s, origin)
        return
    _check_methods(s, origin)
    _check_faults(s, origin)
    _check_driver(s, origin)


def _check_config(s: Scenario, origin: str) -> None:
    from lab.balancers.userconfig import READERS

    if s.balancer.driver not in READERS:
        have = ", ".join(READERS)
        key = "--config" if "config" in s.overrides else "balancer.config"
        raise ScenarioError(
            origin, key, f"caslab reads configs for {have}, not for driver {s.balancer.driver}"
        )


def _check_methods(s: Scenario, origin: str) -> None:
    def fail(key: str, problem: str) -> NoReturn:
        raise ScenarioError(origin, key, problem)

    for service, p in s.balancer.methods().items():
        key = f"balancer.persistence.{service}" if service in s.balancer.persistence else "balancer.preset"
        for method in [p.method] + ([p.fallback.method] if p.fallback else []):
            if service in TCP_SERVICES and (method in HTTP_METHODS or method == "ssl-session-id"):
                fail(
                    key,
                    f"{service} is plain TCP: {method} cannot apply to it; "
                    "allowed there: none, leastconn, source-ip",
                )
            if method == "ssl-session-id" and s.farm.tls != "passthrough":
                fail(key, f'ssl-session-id for {service} needs farm.tls = "passthrough", not "{s.farm.tls}"')
            if s.farm.tls == "passthrough" and method in HTTP_METHODS:
                fail(
                    key,
                    f"{method} for {service} reads HTTP, which a balancer cannot see with "
                    'farm.tls = "passthrough"; allowed then: none, leastconn, source-ip, ssl-session-id',
                )


def _check_faults(s: Scenario, origin: str) -> None:
    def fail(key: str, problem: str) -> NoReturn:
        raise ScenarioError(origin, key, problem)

    servers = s.farm.server_names
    down: set[str] = set()  # servers stopped, drained or health-down at this point of the schedule
    for index in sorted(range(len(s.faults)), key=lambda i: s.faults[i].at_s):
        fault = s.faults[index]
        if fault.server not in servers:
            fail(
                f"fault[{index}].server", f"{fault.server!r} is not in the farm; it has {', '.join(servers)}"
            )
        if fault.at_s >= s.duration_s:
            fail(
                f"fault[{index}].at",
                f"{format_duration(fault.at_s)} is at or after the end of the load "
                f"phase (duration {format_duration(s.duration_s)})",
            )
        if fault.action in ("start", "health-up") and fault.server not in down:
            fail(
                f"fault[{index}].action", f"{fault.action} of {fault.server}, which no earlier fault took out"
            )
        if fault.action in ("stop", "drain", "health-down"):
            if fault.server in down:
                fail(
                    f"fault[{index}].action",
                    f"{fault.server} is out already at {format_duration(fault.at_s)}",
                )
            down.add(fault.server)
        else:
            down.discard(fault.server)
    if s.thresholds.fault_collateral_breaks is not None and not s.faults:
        fail("thresholds.fault_collateral_breaks", "needs at least one [[fault]]")


def _check_driver(s: Scenario, origin: str) -> None:
    """Ask the chosen driver what it refuses of this spec (its own contract, lab.balancers), and blame the
    key that asked for the first refusal."""
    if s.balancer.driver not in REGISTERED_DRIVERS:
        return  # a driver of the design that is not installed here: the run says so when it starts
    dummy = Path("unused.pem")
    tls_files = TlsFiles(dummy, dummy, dummy, dummy) if s.farm.tls != "none" else None
    # First in Exchange time (time_scale 1), so that a refusal quotes the scenario's own values; then in
    # the lab's time, as the run will have it, for the one refusal that depends on the scale: an idle
    # timeout too short for the driver's timers (lab.balancers.Balancer.timer_slack_s).
    driver, farm = REGISTERED_DRIVERS[s.balancer.driver], local_farm(s.farm.servers)
    exchange_time = dataclasses.replace(s, time_scale=1.0).balancer_spec(farm, tls_files=tls_files)
    refusals = driver(exchange_time, Path(".")).refusals()
    refusals = refusals or driver(s.balancer_spec(farm, tls_files=tls_files), Path(".")).refusals()
    if refusals:
        raise ScenarioError(
            origin,
            _blamed_key(s, refusals[0]),
            f"driver {s.balancer.driver} refuses: {'; '.join(map(str, refusals))}",
        )


def _blamed_key(s: Scenario, refusal: Refusal) -> str:
    """The key that asked for what the driver refused: the TLS mode, a balancer setting (a service's
    own value of it, else the scenario's), a service's persistence override, else the preset that chose
    the service's method."""
    if refusal.tls is not None:
        return "farm.tls"
    if refusal.setting is not None:
        group, _, name = refusal.setting.rpartition(".")
        own = s.balancer.timeouts.services.get(refusal.service or "")
        if group == "timeouts" and getattr(own, f"{name}_s", None) is not None:
            return f"balancer.timeouts.{refusal.service}.{name}"
        return f"balancer.{refusal.setting}"
    if refusal.service in s.balancer.persistence:
        return f"balancer.persistence.{refusal.service}"
    return "balancer.preset"
