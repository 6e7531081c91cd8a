"""The one host setting a docker lab may need: room in the kernel's neighbour (ARP) table for every
client address (research-docker.md)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("caslab.lab")

NEIGHBOUR_SYSCTLS = Path("/proc/sys/net/ipv4/neigh/default")


def make_room_for_neighbours(addresses: int) -> None:
    """The balancer keeps an ARP entry for every client address, and the kernel's neighbour table (one for
    all network namespaces) evicts entries past gc_thresh2 and refuses them past gc_thresh3 (512 and 1024
    by default): requests then time out. When the plan's addresses, with room for the rest of the
    machine, do not fit under gc_thresh2, raise the thresholds; never lower them."""
    entries = addresses + 256
    if entries <= int((NEIGHBOUR_SYSCTLS / "gc_thresh2").read_text()):
        return
    wanted = {"gc_thresh1": entries, "gc_thresh2": 2 * entries, "gc_thresh3": 4 * entries}
    for name, value in wanted.items():
        path = NEIGHBOUR_SYSCTLS / name
        if int(path.read_text()) >= value:
            continue
        try:
            path.write_text(str(value))
            log.info("raised net.ipv4.neigh.default.%s to %d for %d client addresses", name, value, addresses)
        except OSError as err:
            log.warning(
                "cannot raise net.ipv4.neigh.default.%s to %d (%s): with %d client addresses requests may "
                "time out; run `sysctl -w net.ipv4.neigh.default.%s=%d` as root",
                name, value, err, addresses, name, value,
            )  # fmt: skip
