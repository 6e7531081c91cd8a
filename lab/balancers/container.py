"""The balancer container's start in the ready lab (compose/lab.yml), under Docker Compose or in a swarm:

    CASLAB_SCENARIO=quickstart CASLAB_DRIVER=haproxy CASLAB_SERVERS="CAS01=cas01 CAS02=cas02" \
        python -m lab.balancers.container

The balancer is the scenario's (CASLAB_SCENARIO, default quickstart; its preset, persistence and idle
timeouts, run its time_scale faster, as in `caslab run`), on the driver CASLAB_DRIVER, with the preset
CASLAB_PRESET instead of the scenario's when set, over plain HTTP (the compose lab has no certificates).
The CAS and the load generators of the lab take the same scenario, so time runs at one speed in all.

Waits until every CAS's name resolves and the CAS answers its health URL, renders the driver's config for
those addresses with the VIP on 0.0.0.0 (what `caslab balancer config` prints), then runs the balancer
(the driver's command) and watches the names. Waiting here means no service has to start before
another (a swarm starts a stack's services in no order), and the balancer starts with the whole farm up,
so none of its first health checks marks a CAS down that was only still starting.

A CAS task that a swarm replaces (a CAS that failed, `docker service update`, a stack deployed again with
other settings) comes back with another address. Every WATCH_S the names are looked up again; when a
CAS's address is no longer among its name's answers and the CAS at a new one is up, the config is
rendered for the new addresses and the balancer restarted on it, saying so (a restart cuts the
balancer's connections and empties its stick tables: the clients connect again). The balancer's exit
ends this process with its status; SIGTERM is passed on to it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from lab.balancers import Unsupported, get_driver
from lab.model import BalancerSpec, CasEndpoint, Vip
from lab.scenario import ScenarioError, load_scenario

CONFIG_ROOT = Path("/etc/caslab")  # the driver writes into CONFIG_ROOT/balancer, as the images expect
FARM_TIMEOUT_S = 180.0  # a swarm may first have to start the CAS tasks on other nodes
POLL_S = 0.5
WATCH_S = 2.0  # how often the CAS names are looked up again once the balancer runs


def addresses_of(host: str) -> list[str]:
    """The IPv4 addresses a name resolves to (a swarm's DNS answers with every task's: endpoint_mode
    dnsrr); none while it does not resolve."""
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET)})
    except OSError:
        return []


def is_up(address: str) -> bool:
    """Whether the CAS at `address` says it is up."""
    try:
        with urllib.request.urlopen(
            f"{CasEndpoint('', address).admin_url}/caslab/health", timeout=2
        ) as answer:
            return bool(json.load(answer).get("ok"))
    except OSError:  # not listening yet, or an HTTP error
        return False


def healthy_at(host: str) -> str | None:
    """The address of the CAS named `host` if the name resolves and the CAS there says it is up."""
    return next((address for address in addresses_of(host) if is_up(address)), None)


def wait_for_farm(hosts: list[str], timeout_s: float) -> dict[str, str]:
    """Each CAS host name's address, once every one is up; SystemExit naming the ones that were not."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for host in hosts:
            if host not in found and (address := healthy_at(host)):
                found[host] = address
        missing = [host for host in hosts if host not in found]
        if not missing:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"balancer: {', '.join(missing)} not up after {timeout_s:.0f} s")
        time.sleep(POLL_S)  # poll interval: the loop returns as soon as the whole farm is up


def balancer_spec(environ: Mapping[str, str], servers: list[CasEndpoint]) -> BalancerSpec:
    """The balancer of the scenario CASLAB_SCENARIO on CASLAB_DRIVER (and CASLAB_PRESET, if set), over
    plain HTTP, for `servers`; SystemExit saying what is wrong with the scenario or the choice."""
    try:
        scenario = load_scenario(environ.get("CASLAB_SCENARIO") or "quickstart").with_overrides(
            driver=environ["CASLAB_DRIVER"], preset=environ.get("CASLAB_PRESET") or None, tls="none"
        )
    except ScenarioError as err:
        raise SystemExit(f"balancer: {err}") from None
    return scenario.balancer_spec(servers, Vip(host="0.0.0.0"))


def moved(addresses: dict[str, str]) -> dict[str, str] | None:
    """The farm's addresses after a CAS moved: its name no longer answers with its address, and a CAS
    is up at one it does answer with (a swarm replaced the task). None while nothing moved; a name with
    no answer, or whose new CAS is not up yet, keeps its address until it has one."""
    now = dict(addresses)
    for host, address in addresses.items():
        answers = addresses_of(host)
        if answers and address not in answers and (new := next((a for a in answers if is_up(a)), None)):
            now[host] = new
    return now if now != addresses else None


def start_balancer(pairs: list[list[str]], addresses: dict[str, str]) -> subprocess.Popen:
    """The driver's config for the CAS at `addresses` (CASLAB_SERVERS' name=host `pairs`), written, and
    the balancer started on it."""
    servers = [CasEndpoint(name, addresses[host]) for name, host in pairs]
    print("balancer: " + ", ".join(f"{s.name} at {s.host}" for s in servers), flush=True)
    spec = balancer_spec(os.environ, servers)
    driver = get_driver(spec, CONFIG_ROOT)
    try:
        driver.write_config()
    except Unsupported as err:
        raise SystemExit(f"balancer: {spec.driver} cannot do the preset {spec.preset}: {err}") from None
    (driver.config_dir / "temp").mkdir(exist_ok=True)  # nginx's temp paths (its driver's start makes it)
    # Relative paths in a config (the stats socket) are the config folder's.
    return subprocess.Popen(driver.command(), cwd=driver.config_dir)


def main() -> None:
    pairs = [pair.split("=", 1) for pair in os.environ["CASLAB_SERVERS"].split()]
    addresses = wait_for_farm([host for _, host in pairs], FARM_TIMEOUT_S)
    balancer = start_balancer(pairs, addresses)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        balancer.terminate()

    signal.signal(signal.SIGTERM, stop)
    while True:
        try:
            status = balancer.wait(timeout=WATCH_S)
            break
        except subprocess.TimeoutExpired:
            pass  # the balancer runs: look the names up again
        now = moved(addresses)
        if now is None or stopping:
            continue
        changes = ", ".join(
            f"{host} {addresses[host]} -> {now[host]}" for host in now if now[host] != addresses[host]
        )
        print(f"balancer: a CAS moved ({changes}): restarting the balancer on the new addresses", flush=True)
        balancer.terminate()
        balancer.wait()
        addresses = now
        if not stopping:
            balancer = start_balancer(pairs, addresses)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
