"""The images a docker lab runs: built from this checkout's sources by compose/build-images (DESIGN.md
section 11), which rebuilds only what changed, and tagged by the hash of what went into them
(`caslab-cas:<tag>`), so that two checkouts on one engine each run their own sources."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from lab.backends.docker.engine import DockerLabError

log = logging.getLogger("caslab.lab")

BUILD_IMAGES = Path(__file__).resolve().parents[3] / "compose" / "build-images"
FALLBACK_TAG = "latest"  # without compose/build-images (caslab installed, not checked out): the last built


@dataclass(frozen=True)
class Images:
    """The images of one build: `of("cas")` is `caslab-cas:<tag>` (compose/Dockerfile's targets: cas,
    loadgen and one per balancer driver)."""

    tag: str

    def of(self, target: str) -> str:
        return f"caslab-{target}:{self.tag}"


def ensure_images(client: docker.DockerClient, targets: list[str]) -> Images:
    """Run compose/build-images (it rebuilds only what changed), then check that every target's image of
    this checkout's sources is there."""
    images = Images(FALLBACK_TAG)
    if BUILD_IMAGES.exists():
        images = Images(_build_images("--print-tag").strip())
        if _missing(client, images, targets):
            print(f"caslab: building the images ({BUILD_IMAGES}; minutes the first time)", file=sys.stderr)
        for line in _build_images().splitlines():
            log.info("%s", line)
        images = Images(_build_images("--print-tag").strip())  # the base image may be new
    absent = _missing(client, images, targets)
    if absent:
        raise DockerLabError(f"no image {', '.join(absent)}; build them with compose/build-images of caslab")
    return images


def _build_images(*options: str) -> str:
    done = subprocess.run([str(BUILD_IMAGES), *options], capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise DockerLabError(f"{BUILD_IMAGES} failed (logs in .caslab/docker/):\n{tail}")
    return done.stdout


def _missing(client: docker.DockerClient, images: Images, targets: list[str]) -> list[str]:
    out = []
    for target in targets:
        try:
            client.images.get(images.of(target))
        except docker.errors.ImageNotFound:
            out.append(images.of(target))
    return out
