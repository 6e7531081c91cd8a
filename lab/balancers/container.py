"""The balancer container's start in the ready lab (compose/lab.yml), under Docker Compose or in a swarm:

    CASLAB_SCENARIO=quickstart CASLAB_DRIVER=haproxy CASLAB_SERVERS="CAS01=cas01 CAS02=cas02" \
        python -m lab.balancers.container

The balancer is the scenario's (CASLAB_SCENARIO, default quickstart; its preset, persistence and idle
timeouts, run its time_scale faster, as in `caslab run`), on the driver CASLAB_DRIVER, with the preset
CASLAB_PRESET instead of the scenario's when set, over plain HTTP (the compose lab has no certificates).
The CAS and the load generators of the lab take the same scenario, so time runs at one speed in all.

Waits until every CAS's name resolves and the CAS answers its health URL, renders the driver's config for
those addresses with the VIP on 0.0.0.0 (what `caslab balancer config` prints), then becomes the
balancer (exec of the driver's command). Waiting here means no service has to start before another (a
swarm starts a stack's services in no order), and the balancer starts with the whole farm up, so none
of its first health checks marks a CAS down that was only still starting. A CAS task that is replaced
later gets a new address, which this config does not follow: restart the balancer then
(`docker service update --force caslab_balancer`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
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


def healthy_at(host: str) -> str | None:
    """The address of the CAS named `host` if the name resolves and the CAS there says it is up."""
    try:
        address = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
        health = f"{CasEndpoint('', address).admin_url}/caslab/health"
        with urllib.request.urlopen(health, timeout=2) as answer:
            return address if json.load(answer).get("ok") else None
    except OSError:  # not resolvable yet, not listening yet, or an HTTP error
        return None


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


def main() -> None:
    pairs = [pair.split("=", 1) for pair in os.environ["CASLAB_SERVERS"].split()]
    addresses = wait_for_farm([host for _, host in pairs], FARM_TIMEOUT_S)
    servers = [CasEndpoint(name, addresses[host]) for name, host in pairs]
    print("balancer: " + ", ".join(f"{s.name} at {s.host}" for s in servers), flush=True)
    spec = balancer_spec(os.environ, servers)
    driver = get_driver(spec, CONFIG_ROOT)
    try:
        driver.write_config()
    except Unsupported as err:
        raise SystemExit(f"balancer: {spec.driver} cannot do the preset {spec.preset}: {err}") from None
    (driver.config_dir / "temp").mkdir(exist_ok=True)  # nginx's temp paths (its driver's start makes it)
    command = driver.command()
    os.chdir(driver.config_dir)  # relative paths in a config (stats socket) are the config folder's
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
