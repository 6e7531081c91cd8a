"""The images a docker lab runs, built from this checkout's sources by compose/build-images (DESIGN.md
section 11), which rebuilds only what changed."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import docker
import docker.errors

from lab.backends.docker.engine import DockerLabError

log = logging.getLogger("caslab.lab")

BUILD_IMAGES = Path(__file__).resolve().parents[3] / "compose" / "build-images"
CAS_IMAGE, LOADGEN_IMAGE = "caslab-cas:latest", "caslab-loadgen:latest"


def balancer_image(driver: str) -> str:
    """The image that runs a driver's balancer (compose/Dockerfile has one target per driver)."""
    return f"caslab-{driver}:latest"


def ensure_images(client: docker.DockerClient, images: list[str]) -> None:
    """Run compose/build-images (it rebuilds only what changed), then check that every image is there."""

    def missing() -> list[str]:
        out = []
        for image in images:
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                out.append(image)
        return out

    if BUILD_IMAGES.exists():
        if missing():
            print(f"caslab: building the images ({BUILD_IMAGES}; minutes the first time)", file=sys.stderr)
        done = subprocess.run([str(BUILD_IMAGES)], capture_output=True, text=True)
        for line in done.stdout.splitlines():
            log.info("%s", line)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise DockerLabError(f"{BUILD_IMAGES} failed (logs in .caslab/docker/):\n{tail}")
    absent = missing()
    if absent:
        raise DockerLabError(f"no image {', '.join(absent)}; build them with compose/build-images of caslab")
