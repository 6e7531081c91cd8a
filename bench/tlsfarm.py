"""What the benchmarks that print HTTPS beside HTTP share: the run's CA and certificate for local CAS
(as a lab run makes them), a fresh farm of them serving both schemes on core 0, and each scheme's URL.

Import it after Locust where Locust runs: Locust patches the process with gevent, and lab.farm imports
the standard library's networking modules.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from lab.certs import make_tls_files
from lab.farm import LocalFarm
from lab.model import CasEndpoint, TlsFiles, Vip

SCHEMES = ("http", "https")


def schemes(choice: str) -> tuple[str, ...]:
    """The schemes a `--scheme http|https|both` option names."""
    return SCHEMES if choice == "both" else (choice,)


def tls_files(directory: Path, servers: list[CasEndpoint]) -> TlsFiles:
    """The run's CA (ca.pem, which the clients verify) and a server certificate naming every server."""
    vip_host = servers[0].host.rsplit(".", 1)[0] + ".1"  # the VIP of a farm on 127.0.X.11: 127.0.X.1
    return make_tls_files(directory, Vip(host=vip_host), servers)


def base_url(server: CasEndpoint, scheme: str) -> str:
    """Where clients reach `server` over `scheme`: the CAS serves HTTPS itself (no balancer)."""
    port = server.https_port if scheme == "https" else server.http_port
    return f"{scheme}://{server.host}:{port}"


@contextlib.contextmanager
def cas_running(server: CasEndpoint, tls: TlsFiles) -> Iterator[LocalFarm]:
    """A fresh CAS on core 0, serving HTTP and HTTPS with the run's kind of certificate. Fresh so that a
    memory reading starts from a process that freed nothing yet (one that did grows less, and would
    hide the cost)."""
    farm = LocalFarm(
        [server], farm_key=secrets.token_bytes(32), run_dir=tls.ca_pem.parent.parent / "farm", tls_files=tls
    )
    farm.start()
    try:
        os.sched_setaffinity(farm.processes[server.name].pid, {0})
        yield farm
    finally:
        farm.stop()
