"""The load generator's entry point in the docker backend's loadgen container (lab/backends/docker/lab.py)
with --workers 1 (loadgen.container_worker is the entry point of each of N > 1):

    python -m loadgen.container_run --user UID:GID --events RUN_DIR/events.csv \
        --duration 20 --ramp 3 PLAN_JSON

It starts as root only to put the plan's client addresses on the container's interface (the container
has NET_ADMIN): a NAT-ed tenant's one address, every intranet user's own, a carrier's pool. Then it
drops to UID:GID, the host's user, so that the event log it writes into the mounted run folder is
theirs, and runs loadgen.runner.run_load.

It tells the lab how the run goes on stdout, one JSON object a line: {"progress": {...}} about once a
second (the lab fires the scenario's faults on these and shows them) and {"result": {...}} at the end.
Locust's own log goes to stderr.

`plan_to_json` / `plan_from_json` carry the LoadPlan from the lab to here; this module imports Locust
only in `main`, so the lab can use them without being patched by gevent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from loadgen.addresses import AddressPlan, SubnetAddresses
from loadgen.plan import Endpoints, LoadPlan, PopulationPlan

# Docker names a container's interface on its first network eth0.
INTERFACE = "eth0"


def plan_to_json(plan: LoadPlan) -> str:
    return json.dumps(dataclasses.asdict(plan))


def plan_from_json(text: str) -> LoadPlan:
    data = json.loads(text)
    populations = []
    for p in data.pop("populations"):
        addresses = p.pop("addresses")
        space = addresses.pop("space")
        if space is not None:
            space = SubnetAddresses(space["network"], tuple(space["pool_sizes"]))
        populations.append(PopulationPlan(addresses=AddressPlan(**addresses, space=space), **p))
    endpoints = data.pop("endpoints")
    tcp = {service: (host, port) for service, (host, port) in endpoints["tcp"].items()}
    return LoadPlan(populations=populations, endpoints=Endpoints(endpoints["base_urls"], tcp), **data)


def client_addresses(plan: LoadPlan) -> list[str]:
    """Every source address the plan's users take, each once."""
    return list(dict.fromkeys(a for p in plan.populations for a in p.addresses.pool()))


def add_addresses(addresses: list[str]) -> None:
    """Put the addresses on the container's interface, all in one `ip -batch` (thousands take a second)."""
    commands = "".join(f"address add {a}/32 dev {INTERFACE}\n" for a in addresses)
    subprocess.run(["ip", "-batch", "-"], input=commands, text=True, check=True)


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def say(kind: str, data: object) -> None:
    print(json.dumps({kind: dataclasses.asdict(data)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadgen.container_run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("plan", metavar="PLAN_JSON", help="the LoadPlan, as plan_to_json writes it")
    parser.add_argument("--events", required=True, type=Path, help="where the client event log goes")
    parser.add_argument("--duration", required=True, type=float, help="seconds of load after the ramp")
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds over which users are spawned")
    parser.add_argument("--user", help="UID:GID to run the load as, after the addresses are added")
    args = parser.parse_args(argv)
    plan = plan_from_json(args.plan)
    add_addresses(client_addresses(plan))
    if args.user:
        uid, gid = (int(part) for part in args.user.split(":"))
        drop_privileges(uid, gid)
    from loadgen.runner import run_load  # imports Locust, which patches the process with gevent

    result = run_load(plan, args.events, args.duration, args.ramp, on_progress=lambda p: say("progress", p))
    say("result", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
