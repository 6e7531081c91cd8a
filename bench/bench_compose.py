"""How long the container lab takes once its images are built (prints figures, asserts nothing).

Times, for each round: compose/build-images when nothing changed (it only compares input hashes),
`docker compose up --wait` of compose/docker-compose.yml until every service is healthy, the first answer
through the balancer, and `down --volumes`. Also prints the images' size (they share all but a few
layers). Building from nothing is not timed here (minutes, and it would throw the images away): run
`compose/build-images --force` for that, which prints each step's time.

Publishes on 127.0.20.250 and uses the network 10.220.250.0/24 (the docker tests' blocks). About 10 s a
round.

    .venv/bin/python bench/bench_compose.py [--rounds 2] [--driver haproxy]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
PUBLISH_HOST, LAB_NET = "127.0.20.250", "10.220.250"


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--driver", default="haproxy", choices=["haproxy", "nginx", "envoy"])
    args = parser.parse_args()

    env = {**os.environ, "CASLAB_DRIVER": args.driver, "CASLAB_PUBLISH_HOST": PUBLISH_HOST,
           "CASLAB_NET": LAB_NET}  # fmt: skip
    subprocess.run([ROOT / "compose" / "build-images"], check=True, capture_output=True)  # now up to date
    sizes = subprocess.run(
        [DOCKER, "image", "ls", "--filter", "reference=caslab-*", "--format", "{{.Repository}} {{.Size}}"],
        check=True, capture_output=True, text=True,
    ).stdout.split("\n")  # fmt: skip
    print("images:", ", ".join(line for line in sizes if line))
    print(f"driver {args.driver}; seconds per step")
    print(f"{'round':>5} {'build-images':>13} {'up --wait':>10} {'1st answer':>11} {'down -v':>8}")
    for n in range(1, args.rounds + 1):
        compose = [DOCKER, "compose", "-f", str(COMPOSE_FILE), "-p", f"caslab-bench-{uuid.uuid4().hex[:8]}"]
        build = timed([str(ROOT / "compose" / "build-images")])
        try:
            up = timed([*compose, "up", "--wait"], env)
            start = time.perf_counter()
            with urllib.request.urlopen(f"http://{PUBLISH_HOST}:8080/owa/auth/logon.aspx", timeout=10) as r:
                r.read()
            first = time.perf_counter() - start
        finally:  # never leave the lab running, also when a step failed
            down = timed([*compose, "down", "--volumes", "--timeout", "5"], env)
        print(f"{n:>5} {build:>13.2f} {up:>10.2f} {first:>11.3f} {down:>8.2f}")


if __name__ == "__main__":
    main()
