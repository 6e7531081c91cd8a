"""A Locust worker in one of the docker backend's loadgen containers (`caslab run --backend docker
--workers N`, lab.backends.docker.workers):

    python -m loadgen.container_worker --master HOST:PORT --events RUN_DIR/events.csv \
        --user UID:GID ADDRESS...

As loadgen.container_run does for the single container: as root, it puts ADDRESS... on the container's
interface (the container has NET_ADMIN), here only the source addresses of its own share of the users
(loadgen.split.share_addresses), so no address is on two containers; then it drops to UID:GID, the
host's user, so that the event log it writes into the mounted run folder is theirs, and serves the
master as `caslab worker` does (loadgen.worker.run_worker). Locust's log goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadgen.container_run import add_addresses, drop_privileges
from loadgen.worker import parse_host_port, run_worker  # Locust is imported in run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadgen.container_worker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("addresses", nargs="*", metavar="ADDRESS", help="this worker's client addresses")
    parser.add_argument("--master", required=True, metavar="HOST:PORT", help="the run's Locust master")
    parser.add_argument("--events", required=True, type=Path, help="the run's event log (see loadgen.worker)")
    parser.add_argument("--user", help="UID:GID to run as, after the addresses are added")
    args = parser.parse_args(argv)
    try:
        host, port = parse_host_port(args.master)
    except ValueError as err:
        parser.error(str(err))
    if args.addresses:
        add_addresses(args.addresses)
    if args.user:
        uid, gid = (int(part) for part in args.user.split(":"))
        drop_privileges(uid, gid)
    return run_worker(host, port, args.events)


if __name__ == "__main__":
    sys.exit(main())
