"""What the single-CAS benchmarks share: wrk pinned to core 1, a process's CPU time from /proc (steadier
than wall-clock rates on a shared machine), and HTTP beside HTTPS. Needs Debian's `wrk` (apt-get install
wrk).

Over HTTPS wrk does not verify the server's certificate (a server-side cost is measured, not a client's
trust), and it keeps its connections alive: the HTTPS figures are the steady cost of TLS records, not of
handshakes (bench_tls.py measures those). The `--scheme` option and the certificate: bench/tlsfarm.py."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


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
