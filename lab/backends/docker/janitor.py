"""The docker half of the janitor (lab.backends.janitor): the labs on the engine whose owner is gone,
found by their labels (lab.backends.docker.engine), and their removal."""

from __future__ import annotations

import logging

import docker
import docker.errors

from lab.backends.docker.engine import RUN_LABEL, DockerLabError, connect, lab_things, labels_of, remove_run
from lab.backends.owner import Owner, ask_to_stop, checkout

log = logging.getLogger("caslab.lab")


def clean_engine(everything: bool = False) -> list[str]:
    """Remove the docker labs of this checkout whose owner is gone (`everything`: every caslab lab on the
    engine; a live owner on this host is asked to stop first); one line per lab removed. Nothing when the
    engine cannot be reached."""
    try:
        client = connect(timeout=10)
    except DockerLabError as err:
        log.info("the janitor looked at no docker lab: %s", err)
        return []
    runs: dict[str, dict[str, str]] = {}
    for things in lab_things(client):
        for thing in things:
            labels = labels_of(thing)
            runs.setdefault(labels[RUN_LABEL], labels)
    here = str(checkout())
    removed = []
    for run_id, labels in sorted(runs.items()):
        owner = Owner.from_labels(labels)
        gone = owner is not None and owner.gone()
        if not everything and not (gone and owner.checkout == here):
            continue
        if owner is not None and not gone:
            ask_to_stop(owner)  # on this host, it removes its own lab as it stops
        whose = f"owner {owner}" if owner else "no owner label"
        removed.append(f"lab {run_id} (docker, {whose}): {remove_docker_lab(run_id, client=client)}")
    return removed


def remove_docker_lab(run_id: str, timeout: float = 60.0, client: docker.DockerClient | None = None) -> str:
    """Remove every container, network and volume of one run; what went, in words."""
    try:
        client = client or connect(timeout=min(timeout, 10))
        containers, networks, volumes = remove_run(client, run_id, timeout)
    except (DockerLabError, docker.errors.APIError) as err:
        log.warning("could not remove docker lab %s: %s", run_id, err)
        return f"could not remove it: {err}"
    return ", ".join(
        _count(n, what) for n, what in [(containers, "container"), (networks, "network"), (volumes, "volume")]
    )


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"
