"""How long the docker backend's lab takes to come up and go away (prints figures, asserts nothing).

Times, for each round: compose/build-images when nothing changed, DockerLab.start() (lab network, three
CAS containers healthy, the balancer container ready), the first answer through the VIP, and stop()
(ledgers read, output kept, every container and the network removed). The lab network is picked in
10.221.0.0/16 as in a run. About 10 s a round; images must be built (compose/build-images).

    .venv/bin/python bench/bench_docker_backend.py [--rounds 2] [--driver envoy]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from lab.backends.docker import BUILD_IMAGES, DockerLab, LabNetwork
from lab.backends.state import LabRecord
from lab.balancers.presets import resolve
from lab.model import BalancerSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--driver", default="envoy", choices=["haproxy", "nginx", "envoy", "traefik"])
    args = parser.parse_args()
    preset = "none-all" if args.driver == "traefik" else "recommended"  # Traefik refuses `recommended`

    print(f"driver {args.driver}, preset {preset}, 3 CAS; seconds per step")
    print(f"{'round':>5} {'build-images':>13} {'start':>6} {'1st answer':>11} {'stop':>6}")
    for n in range(1, args.rounds + 1):
        began = time.perf_counter()
        subprocess.run([str(BUILD_IMAGES)], check=True, capture_output=True)
        build = time.perf_counter() - began
        network = LabNetwork.pick(0)
        spec = BalancerSpec(args.driver, resolve(preset), network.servers(3), network.vip, preset=preset)
        with tempfile.TemporaryDirectory() as run_dir:
            record = LabRecord.create(Path(run_dir), "run", "docker")  # in this checkout's .caslab/labs/
            lab = DockerLab(spec, Path(run_dir), network, record)
            try:
                began = time.perf_counter()
                lab.start()
                start = time.perf_counter() - began
                began = time.perf_counter()
                with urllib.request.urlopen(
                    f"http://{network.vip.host}:8080/owa/auth/logon.aspx", timeout=10
                ) as r:
                    r.read()
                answer = time.perf_counter() - began
            finally:
                began = time.perf_counter()
                lab.stop()
                stop = time.perf_counter() - began
                record.remove()
        print(f"{n:>5} {build:>13.2f} {start:>6.2f} {answer:>11.3f} {stop:>6.2f}")


if __name__ == "__main__":
    main()
