"""What the single-CAS benchmarks share: wrk pinned to core 1, a process's CPU time from /proc (steadier
than wall-clock rates on a shared machine), and HTTP beside HTTPS. Needs Debian's `wrk` (apt-get install
wrk).

Over HTTPS wrk does not verify the server's certificate (a server-side cost is measured, not a client's
trust), and it keeps its connections alive: the HTTPS figures are the steady cost of TLS records, not of
handshakes (bench_tls.py measures those)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.model import TlsFiles

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
SCHEMES = ("http", "https")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def wrk(
    url: str, seconds: int, connections: int, *, headers: Sequence[str] = (), script: str | None = None
) -> tuple[float, int, int]:
    """(requests/s, requests, answers not 2xx/3xx) of one wrk run on core 1, with extra request
    `headers` ("Name: value") or a Lua `script` that builds the requests."""
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for header in headers:
        command += ["-H", header]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script is not None:
            lua.write(script)
            lua.flush()
            command += ["-s", lua.name]
        out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    not_ok = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, total, int(not_ok.group(1)) if not_ok else 0


def measure(pid: int, url: str, seconds: int, connections: int, script: str) -> tuple[float, float, int]:
    """(requests/s, the server's CPU microseconds per request, answers not 2xx/3xx) of one wrk run of
    `script` against the server process `pid`, after a one-second warm-up."""
    wrk(url, 1, connections, script=script)
    before = cpu_seconds(pid)
    rps, total, not_ok = wrk(url, seconds, connections, script=script)
    return rps, (cpu_seconds(pid) - before) / max(total, 1) * 1e6, not_ok


def add_scheme_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheme",
        choices=("http", "https", "both"),
        default="both",
        help="measure over HTTP, HTTPS or both side by side (default: both)",
    )


def chosen_schemes(choice: str) -> tuple[str, ...]:
    """The schemes of --scheme, HTTP first."""
    return SCHEMES if choice == "both" else (choice,)


def cas_tls(directory: Path, host: str) -> tuple[TlsFiles, list[str]]:
    """The run's CA and a server certificate for a CAS on `host` (lab.certs), written to `directory`,
    and the `caslab cas` arguments that make it serve HTTPS with them on its https port."""
    from lab.certs import make_tls_files
    from lab.model import CasEndpoint, Vip

    tls = make_tls_files(directory, Vip(host=host), [CasEndpoint(name="CAS01", host=host)])
    return tls, ["--cert", str(tls.server_cert), "--key", str(tls.server_key)]


def base_url(scheme: str, host: str) -> str:
    """Where a CAS on `host` answers over `scheme`, on the lab's default ports."""
    from caslab.vocab import HTTP_PORT, HTTPS_PORT

    return f"{scheme}://{host}:{HTTP_PORT if scheme == 'http' else HTTPS_PORT}"


def https_ratio(figures: dict[str, float]) -> str:
    """HTTPS / HTTP of one figure (like CPU time per request), when both were measured."""
    return f"{figures['https'] / figures['http']:.2f}" if len(figures) == 2 else ""
