"""The ready lab as a Docker Swarm stack (compose/lab.yml; compose/README.md, "Swarm stack") on a
one-node swarm: `docker stack deploy` of this checkout's images, Locust's master with its replicated
workers, load through the balancer to all three CAS, the balancer following a CAS task the swarm
replaced to its new address, and `docker stack rm` leaving no task or network.

The swarm is the engine's own when it is in one (it must be a manager); otherwise the test makes a
one-node swarm on 127.0.0.1, its address pool 10.222.0.0/16 (beside the docker tests' 10.220.0.0/16),
and leaves it afterwards. A lock file keeps two test sessions from making and leaving it at once.

The stack publishes no port (a swarm publishes on every interface): the test reaches Locust's web API,
the balancer and the CAS from inside, with `docker exec` into this stack's own Locust master task.
Each service's image is named by its ID in an override file: a swarm task pulls an image named by tag
before it falls back to the local one (unless dockerd runs with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1),
an image named by ID never.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.test_compose import DOCKER, ROOT, docker, free_lab_net, image_tag  # noqa: F401 - fixture

pytestmark = pytest.mark.docker

LAB_FILE = ROOT / "compose" / "lab.yml"
IMAGE_OF_SERVICE = {"cas01": "cas", "cas02": "cas", "cas03": "cas", "balancer": "haproxy",
                    "loadgen": "loadgen", "loadgen-worker": "loadgen"}  # fmt: skip
WORKERS = 2
SWARM_POOL = "10.222.0.0/16"
SWARM_LOCK = Path(tempfile.gettempdir()) / "caslab-swarm.lock"
TIMEOUT_S = 120.0
POLL_S = 0.5
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout_s: float = TIMEOUT_S, stack: str = "") -> T:
    """Poll `check()` until it returns something true, which is returned; fail naming `what` (and showing
    the tasks of `stack`, the swarm's word on what went wrong)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tasks = docker("stack", "ps", "--no-trunc", stack) if stack else ""
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{tasks}")
        time.sleep(POLL_S)  # poll interval, not a wait for readiness: the loop ends as soon as it holds


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    """The engine as a swarm manager, for the module; made here and left afterwards if it was not one,
    with the bridge a swarm adds for its tasks' outside traffic (docker_gwbridge) if that was made too."""
    with SWARM_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}").split()
        made = state[0] == "inactive"
        had_gwbridge = "docker_gwbridge" in docker("network", "ls", "--format", "{{.Name}}").split()
        if made:
            docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377",
                   "--default-addr-pool", SWARM_POOL)  # fmt: skip
        else:
            assert state == ["active", "true"], f"the engine is in a swarm but not its manager: {state}"
        try:
            yield
        finally:
            if made:
                docker("swarm", "leave", "--force")
                if not had_gwbridge:
                    docker("network", "rm", "docker_gwbridge")


@dataclass
class Stack:
    name: str

    def containers(self) -> list[str]:
        """Ids of this stack's task containers, running or not."""
        label = f"label=com.docker.stack.namespace={self.name}"
        return docker("ps", "--all", "--quiet", "--filter", label).split()

    def networks(self) -> list[str]:
        label = f"label=com.docker.stack.namespace={self.name}"
        return docker("network", "ls", "--quiet", "--filter", label).split()

    def running(self, service: str) -> list[str]:
        """Ids of the running task containers of one of this stack's services."""
        label = f"label=com.docker.swarm.service.name={self.name}_{service}"
        return docker("ps", "--quiet", "--filter", label).split()

    def address(self, container: str) -> str:
        """A task container's address on the stack's network."""
        networks = json.loads(docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", container))
        return networks[f"{self.name}_default"]["IPAddress"]

    def curl(self, url: str, *options: str) -> subprocess.CompletedProcess[str]:
        """`curl URL` in this stack's Locust master task (its image has curl), on the stack's network."""
        (master,) = self.running("loadgen")
        command = [DOCKER, "exec", master, "curl", "-fsS", *options, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=30)

    def get_json(self, url: str, *options: str) -> dict:
        done = self.curl(url, *options)
        assert done.returncode == 0, f"{url}: {done.stderr}"
        return json.loads(done.stdout)

    def remove(self) -> None:
        """`docker stack rm` until it removes everything, then wait for the tasks and network to go.

        The swarm stops a removed service's tasks after `docker stack rm` returns, and the network of a
        task still stopping cannot go yet: that `stack rm` fails with "network ... is in use by task"
        (moby/moby#30942; Engine 20.10 has no `stack rm --detach=false`). Running it again once the tasks
        are gone removes the rest, as compose/README.md tells its users. Any other failure fails here."""

        def removed_all() -> bool:
            command = [DOCKER, "stack", "rm", self.name]
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            output = done.stdout + done.stderr
            assert done.returncode == 0 or "is in use by task" in output, f"docker stack rm:\n{output}"
            return done.returncode == 0

        wait_for("`docker stack rm` removing all of the stack", removed_all)
        wait_for("the stack's tasks and network gone", lambda: not self.containers() + self.networks())

    def locust(self) -> dict | None:
        """Locust's /stats/requests, or None while its master has no running task or does not answer."""
        if len(self.running("loadgen")) != 1:
            return None
        done = self.curl("http://127.0.0.1:8089/stats/requests")
        return json.loads(done.stdout) if done.returncode == 0 else None


@pytest.fixture
def stack(swarm: None, image_tag: str, tmp_path: Path) -> Iterator[Stack]:  # noqa: F811 - the fixture
    """The lab deployed as a stack of this checkout's images (by ID), removed afterwards whatever
    happened."""
    ids = {image: docker("image", "inspect", "--format", "{{.Id}}", f"caslab-{image}:{image_tag}").strip()
           for image in set(IMAGE_OF_SERVICE.values())}  # fmt: skip
    pinned = tmp_path / "images-by-id.yml"
    pinned.write_text('version: "3.9"\nservices:\n' + "".join(
        f'  {service}: {{image: "{ids[image]}"}}\n' for service, image in IMAGE_OF_SERVICE.items()
    ))  # fmt: skip
    env = {**os.environ, "CASLAB_IMAGE_TAG": image_tag, "CASLAB_NET": free_lab_net(),
           "CASLAB_WORKERS": str(WORKERS)}  # fmt: skip
    deployed = Stack(f"caslab-test-{uuid.uuid4().hex[:10]}")
    try:
        docker("stack", "deploy", "--compose-file", str(LAB_FILE), "--compose-file", str(pinned),
               "--resolve-image", "never", deployed.name, env=env)  # fmt: skip
        yield deployed
    finally:
        deployed.remove()


def test_stack_runs_load_from_replicated_workers_through_the_balancer_to_all_three_cas_and_follows_one_moved(
    stack: Stack,
) -> None:
    def master_with_every_worker() -> dict | None:
        stats = stack.locust()
        return stats if stats and stats["state"] == "ready" and stats["worker_count"] == WORKERS else None

    wait_for("Locust's master with every worker connected", master_with_every_worker, stack=stack.name)
    workers = {stack.address(container) for container in stack.running("loadgen-worker")}
    assert len(workers) == WORKERS, workers

    started = stack.get_json(
        "http://127.0.0.1:8089/swarm", "-X", "POST", "-d", "user_count=16", "-d", "spawn_rate=16"
    )
    assert started["success"], started

    def ledger_clients(cas: str) -> set[str] | None:
        """The client addresses in one CAS's ledger; None while it does not answer, or while the swarm's
        DNS does not know its name yet (measured once in CI: "Could not resolve host: cas02" after the
        master had every worker; a CAS that never answers fails the wait, with the stack's tasks)."""
        done = stack.curl(f"http://{cas}:8099/caslab/ledger")
        return {row["client_ip"] for row in json.loads(done.stdout)["rows"]} if done.returncode == 0 else None

    def clients_of_each_cas() -> dict[str, set[str]] | None:
        """Each CAS's client addresses, once every CAS has had a worker's request and every worker has
        reached a CAS. The ledger's client address is the one the balancer forwards (a worker's here:
        the stack's clients connect from their worker's own address), so these came through it."""
        seen = {cas: ledger_clients(cas) for cas in ("cas01", "cas02", "cas03")}
        if None in seen.values():
            return None
        reached_all = all(clients & workers for clients in seen.values())
        return seen if reached_all and workers <= set().union(*seen.values()) else None

    seen = wait_for("requests of every worker, reaching all three CAS", clients_of_each_cas, 60, stack.name)
    assert all(clients & workers for clients in seen.values()), seen

    def requests_counted_by_the_master() -> int:
        """The requests the workers reported to the master (they report every few seconds)."""
        stats = stack.locust()
        assert stats and stats["worker_count"] == WORKERS, stats
        return next(row for row in stats["stats"] if row["name"] == "Aggregated")["num_requests"]

    wait_for("the workers' requests in the master's figures", requests_counted_by_the_master, 30, stack.name)

    # The swarm replaces cas02's task, which comes back at another address; the balancer follows it
    # (lab/balancers/container.py), so the workers' requests reach the new task through the balancer.
    (old_task,) = stack.running("cas02")
    old_address = stack.address(old_task)
    docker("service", "update", "--force", "--detach", f"{stack.name}_cas02")

    def new_cas02_served() -> bool:
        """cas02's one running task is a new one, at another address, and the workers' requests reached
        it (read from the task's own address: the name may still answer with the old one for a while)."""
        running = stack.running("cas02")
        if running in ([], [old_task]) or len(running) > 1:
            return False
        address = stack.address(running[0])
        done = stack.curl(f"http://{address}:8099/caslab/ledger")
        clients = (
            {row["client_ip"] for row in json.loads(done.stdout)["rows"]} if done.returncode == 0 else set()
        )
        return address != old_address and bool(clients & workers)

    wait_for("the workers' requests reaching cas02's new task through the balancer", new_cas02_served, 90,
             stack.name)  # fmt: skip

    stack.get_json("http://127.0.0.1:8089/stop", "-X", "POST")
    stack.remove()
    assert not stack.containers() + stack.networks()
