"""The ready container lab (compose/docker-compose.yml, DESIGN.md section 11): one `docker compose up
--wait` gives three CAS behind HAProxy and Locust's web UI; `down -v` leaves nothing of the lab behind.

Needs a Docker engine with Compose v2 and caslab's images: `scripts/setup --test` installs and starts the
engine and builds the images, and the module's first fixture makes sure of both again (each step is near
instant when done, and build-images rebuilds what the working tree changed).

Each test is its own compose project with a unique name, its ports published on a free address of
127.0.20.0/24 and its network in a free /24 of 10.220.0.0/16, so it collides neither with a lab someone
started by hand (127.0.0.1, 10.213.0.0/24) nor with another test run.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.scenario import load_scenario

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
# Debian's client: the newer one that may come first on PATH lacks buildx (compose/build-images).
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
# The lab's published ports (compose/docker-compose.yml): VIP HTTP, MAPI, Address Book, HAProxy stats,
# Locust's web UI, the three CAS admin ports.
PUBLISHED_PORTS = (8080, 59531, 59532, 8404, 8089, 8111, 8112, 8113)
SERVICE_OF_CONTAINER = '{{.Label "com.docker.compose.service"}}'
# One container each, but Locust's workers: CASLAB_WORKERS of them (lab.yml's default 2).
LAB_CONTAINERS = ["balancer", "cas01", "cas02", "cas03", "loadgen", "loadgen-worker", "loadgen-worker"]


def docker(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> str:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, f"docker {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module", autouse=True)
def image_tag() -> str:
    """dockerd answers, and the images match the working tree; their tag (CASLAB_IMAGE_TAG)."""
    for script in ("scripts/docker-engine", "compose/build-images"):
        done = subprocess.run([str(ROOT / script)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{script} failed:\n{done.stdout}{done.stderr}"
    done = subprocess.run([str(ROOT / "compose/build-images"), "--print-tag"], capture_output=True, text=True)
    return done.stdout.strip()


def free_publish_address() -> str:
    """An address of 127.0.20.0/24 on which every published port of the lab is free."""
    for host in random.sample(range(10, 250), 20):
        address = f"127.0.20.{host}"
        try:
            for port in PUBLISHED_PORTS:
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return address
    raise AssertionError("no address of 127.0.20.0/24 has the lab's ports free")


def free_lab_net() -> str:
    """The first three octets of a /24 in 10.220.0.0/16 that no Docker network uses."""
    ids = docker("network", "ls", "--quiet").split()
    used = [
        ipaddress.ip_network(config["Subnet"])
        for network in json.loads(docker("network", "inspect", *ids))
        for config in (network["IPAM"]["Config"] or [])
        if "Subnet" in config
    ]
    for third in random.sample(range(256), 256):
        candidate = ipaddress.ip_network(f"10.220.{third}.0/24")
        if not any(candidate.overlaps(net) for net in used):
            return f"10.220.{third}"
    raise AssertionError("every /24 of 10.220.0.0/16 is taken by a Docker network")


@dataclass
class Lab:
    project: str
    publish_host: str
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 180) -> str:
        command = ("compose", "-f", str(COMPOSE_FILE), "-p", self.project, *args)
        return docker(*command, env=self.env, timeout=timeout)

    def owned(self, kind: str) -> list[str]:
        """This project's containers (by service), networks or volumes (by name): Compose labels each."""
        label = f"label=com.docker.compose.project={self.project}"
        listing = {
            "container": ("ps", "--all", "--filter", label, "--format", SERVICE_OF_CONTAINER),
            "network": ("network", "ls", "--filter", label, "--format", "{{.Name}}"),
            "volume": ("volume", "ls", "--filter", label, "--format", "{{.Name}}"),
        }[kind]
        return docker(*listing).split()


@pytest.fixture
def lab(image_tag: str) -> Iterator[Lab]:
    """The ready lab of this checkout's images, up and healthy; torn down with its volumes afterwards,
    whatever happened."""
    env = {
        **os.environ,
        "CASLAB_IMAGE_TAG": image_tag,
        "CASLAB_DRIVER": "haproxy",
        "CASLAB_PRESET": "recommended",
        "CASLAB_PUBLISH_HOST": free_publish_address(),
        "CASLAB_NET": free_lab_net(),
    }
    started = Lab(f"caslab-test-{uuid.uuid4().hex[:10]}", env["CASLAB_PUBLISH_HOST"], env)
    try:
        started.compose("up", "--wait", "--wait-timeout", "120")
        yield started
    finally:
        started.compose("down", "--volumes", "--timeout", "5")


def get(url: str) -> tuple[int, dict[str, list[str]], str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        headers: dict[str, list[str]] = {}
        for name, value in response.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        return response.status, headers, response.read().decode(errors="replace")


def test_ready_lab_answers_through_haproxy_from_all_three_cas(lab: Lab) -> None:
    seen: set[str] = set()
    for _ in range(30):  # without cookies each request is a new OWA visitor: round robin over the farm
        status, headers, body = get(f"http://{lab.publish_host}:8080/owa/auth/logon.aspx")
        assert status == 200 and "Outlook Web App" in body
        # HAProxy's balancer cookie of the recommended preset proves the answer came through it.
        assert any(c.startswith("lb_owa_ecp=") for c in headers.get("set-cookie", [])), headers
        seen.update(headers["x-caslab-server"])
        if len(seen) == 3:
            break
    assert seen == {"CAS01", "CAS02", "CAS03"}
    # Every CAS runs the scenario's clock (`caslab cas --scenario`), as the balancer and Locust do.
    time_scale = load_scenario("quickstart").time_scale
    for port in (8111, 8112, 8113):
        stats = json.loads(get(f"http://{lab.publish_host}:{port}/caslab/stats")[2])
        assert stats["time_scale"] == time_scale, stats

    status, _, body = get(f"http://{lab.publish_host}:8404/")
    assert status == 200 and "HAProxy" in body
    status, _, body = get(f"http://{lab.publish_host}:8089/")
    assert status == 200 and "Locust" in body


def test_workers_in_the_balancers_namespace_send_from_their_populations_addresses(lab: Lab) -> None:
    """Locust's workers share the balancer's network namespace under Compose (compose/lab.yml): their
    clients bind the scenario's 127.x source addresses, which reach the VIP over loopback there, so the
    CAS see each population's own addresses (forwarded by the balancer)."""
    locust = f"http://{lab.publish_host}:8089"
    deadline = time.monotonic() + 60
    while json.loads(get(f"{locust}/stats/requests")[2])["worker_count"] != 2:
        assert time.monotonic() < deadline, "Locust's two workers did not connect to its master"
        time.sleep(0.5)  # poll interval: the loop ends as soon as both workers are there
    form = urllib.parse.urlencode({"user_count": 16, "spawn_rate": 16}).encode()
    with urllib.request.urlopen(f"{locust}/swarm", data=form, timeout=10) as response:
        assert json.loads(response.read())["success"]

    populations = ipaddress.ip_network("127.64.0.0/10")  # loadgen.addresses: 127.<64 + population>.x.y
    deadline = time.monotonic() + 60
    while True:
        clients = {
            ipaddress.ip_address(row["client_ip"])
            for port in (8111, 8112, 8113)
            for row in json.loads(get(f"http://{lab.publish_host}:{port}/caslab/ledger")[2])["rows"]
        }
        if any(client in populations for client in clients):
            break
        assert time.monotonic() < deadline, f"no request from a population's address: {clients}"
        time.sleep(0.5)  # poll interval: the loop ends at the first such request


def test_down_volumes_leaves_no_container_network_or_volume(lab: Lab) -> None:
    assert sorted(lab.owned("container")) == LAB_CONTAINERS
    images = docker("ps", "--all", "--filter", f"label=com.docker.compose.project={lab.project}",
                    "--format", "{{.Image}}").split()  # fmt: skip
    assert {image.split(":")[1] for image in images} == {lab.env["CASLAB_IMAGE_TAG"]}
    assert lab.owned("network") == [f"{lab.project}_default"]

    lab.compose("down", "--volumes", "--timeout", "5")

    assert lab.owned("container") == []
    assert lab.owned("network") == []
    assert lab.owned("volume") == []
