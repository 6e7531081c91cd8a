"""What the benchmarks that print HTTPS beside HTTP share: the `--scheme http|https|both` option, the
run's CA and certificate for local CAS (as a lab run makes them), a fresh farm of them serving both
schemes on core 0, each scheme's URL, and the HTTPS/HTTP ratio of a figure.

Import it after Locust where Locust runs: Locust patches the process with gevent, and lab.farm imports
the standard library's networking modules.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from caslab.vocab import HTTP_PORT, HTTPS_PORT
from lab.certs import make_tls_files
from lab.farm import LocalFarm
from lab.model import CasEndpoint, TlsFiles, Vip

SCHEMES = ("http", "https")


def add_scheme_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheme",
        choices=("http", "https", "both"),
        default="both",
        help="measure over HTTP, HTTPS or both side by side (default: both)",
    )


def schemes(choice: str) -> tuple[str, ...]:
    """The schemes a `--scheme http|https|both` option names, HTTP first."""
    return SCHEMES if choice == "both" else (choice,)


def https_ratio(figures: dict[str, float]) -> str:
    """HTTPS / HTTP of one figure (like CPU time per request), when both were measured."""
    return f"{figures['https'] / figures['http']:.2f}" if len(figures) == 2 else ""


def tls_files(directory: Path, servers: list[CasEndpoint]) -> TlsFiles:
    """The run's CA (ca.pem, which the clients verify) and a server certificate naming every server."""
    vip_host = servers[0].host.rsplit(".", 1)[0] + ".1"  # the VIP of a farm on 127.0.X.11: 127.0.X.1
    return make_tls_files(directory, Vip(host=vip_host), servers)


def cas_tls_args(tls: TlsFiles) -> list[str]:
    """The `caslab cas` arguments that make it serve HTTPS with the run's certificate on its https port."""
    return ["--cert", str(tls.server_cert), "--key", str(tls.server_key)]


def base_url(scheme: str, host: str) -> str:
    """Where a server on `host` answers over `scheme`, on the lab's ports (a CAS serves HTTPS itself)."""
    return f"{scheme}://{host}:{HTTPS_PORT if scheme == 'https' else HTTP_PORT}"


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
