"""How fast one mock CAS serves Outlook Anywhere, seen from the lab's blocking client, over HTTP and
over HTTPS.

Starts one CAS in-process on 127.0.14.11 and runs the client in a second process (so the two do not
share one interpreter lock), then prints figures: virtual connections opened and closed per second,
RPC round trips per second on one virtual connection (small and fragmented stubs) with latency
percentiles, and what each open virtual connection (two held channels) costs the CAS in memory.
Over HTTPS the CAS serves it itself with the run's kind of certificate, and the client verifies it
against the run's CA and resumes its TLS sessions as Outlook does (loadgen.tls): a new virtual
connection's two channels resume the session of the one before. Each scheme runs in a fresh process
pair (a CAS that freed the memory of the other scheme's channels would grow less); `https_over_http`
gives the HTTPS figure over the HTTP one.

    .venv/bin/python bench/bench_rpchttp.py [--seconds 2] [--held 200] [--scheme http|https|both]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST, CLIENT = "127.0.14.11", "127.0.14.200"
SCHEMES = ("http", "https")


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(cuts[49], 3), "p99_ms": round(cuts[98], 3)}


def run_client(seconds: float, held: int, port: int, ca_pem: str) -> dict:
    """The client process: against `port`, over TLS verified against `ca_pem` if there is one."""
    from loadgen.binding import SourceAddress
    from loadgen.tls import TlsSessions, client_context
    from loadgen.wire.rpchttp import VirtualConnection

    source = SourceAddress(CLIENT)
    tls = client_context("outlook2010-rpchttp", ca_pem) if ca_pem else None
    sessions = TlsSessions()  # Outlook's one cache for its process

    def connection() -> VirtualConnection:
        return VirtualConnection(
            (HOST, port),
            source=source,
            user="user1",
            password="caslab",
            ssl_context=tls,
            tls_sessions=sessions,
        )

    figures: dict = {}
    opened, t0 = 0, time.perf_counter()
    while time.perf_counter() < t0 + seconds / 2 or opened < 20:
        with connection() as vc:
            assert vc.connect().joined
        opened += 1
    figures["connect_and_close"] = {"per_s": round(opened / (time.perf_counter() - t0))}

    with connection() as vc:
        assert vc.connect().joined
        for label, stub in (("call_100_bytes", b"x" * 100), ("call_20_kb_fragmented", b"x" * 20_000)):
            latencies, deadline = [], time.perf_counter() + seconds / 2
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                assert vc.call(1, stub) == stub
                latencies.append((time.perf_counter() - started) * 1000)
            figures[label] = {"per_s": round(len(latencies) / (seconds / 2)), **percentiles(latencies)}

    print("ready", flush=True)  # the parent measures the CAS before ...
    sys.stdin.readline()
    connections = [connection() for _ in range(held)]
    for vc in connections:
        assert vc.connect().joined
    print("held", flush=True)  # ... and after the virtual connections are opened and held
    sys.stdin.readline()
    for vc in connections:
        vc.close()
    return figures


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(scheme: str, seconds: float, held: int) -> dict:
    """The figures of one scheme: a CAS in this process, the client in a child."""
    from tlsfarm import tls_files  # bench/tlsfarm.py, beside this file

    import mockcas  # noqa: F401 - before aiohttp, as everywhere
    from lab.model import local_farm
    from mockcas.config import CasConfig
    from mockcas.embedded import EmbeddedFarm

    with tempfile.TemporaryDirectory(prefix="bench-rpchttp-") as scratch:
        tls = tls_files(Path(scratch) / "tls", local_farm(1, HOST.rsplit(".", 1)[0]))
        config = CasConfig(name="CAS01", host=HOST, cert_file=tls.server_cert, key_file=tls.server_key)
        port = config.https_port if scheme == "https" else config.http_port
        client_args = ["--seconds", str(seconds), "--held", str(held), "--port", str(port)]
        if scheme == "https":
            client_args += ["--ca", str(tls.ca_pem)]
        with EmbeddedFarm([config]) as farm:
            client = subprocess.Popen(
                [sys.executable, __file__, "--client", *client_args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            try:
                assert client.stdout.readline().strip() == "ready"
                before = rss_kb()
                client.stdin.write("\n")
                client.stdin.flush()
                assert client.stdout.readline().strip() == "held"
                held_kb = rss_kb() - before
                inflight = farm["CAS01"].inflight
                output, _ = client.communicate("\n", timeout=60)
            finally:
                if client.poll() is None:
                    client.kill()
    figures = json.loads(output)
    figures["held_open"] = {
        "virtual_connections": held,
        "channels_in_flight_on_cas": inflight,
        "cas_rss_kb_per_virtual_connection": round(held_kb / held, 1),
    }
    return figures


def main() -> None:
    from tlsfarm import add_scheme_option  # bench/tlsfarm.py, beside this file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--held", type=int, default=200, help="virtual connections held open at once")
    add_scheme_option(parser)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)  # the client's: the CAS's port
    parser.add_argument("--ca", type=Path, help=argparse.SUPPRESS)  # the client's: the run's CA, if HTTPS
    args = parser.parse_args()
    if args.client:
        ca_pem = args.ca.read_text() if args.ca else ""
        print(json.dumps(run_client(args.seconds, args.held, args.port, ca_pem)))
        return
    if args.scheme != "both":
        print(json.dumps({args.scheme: measure(args.scheme, args.seconds, args.held)}, indent=2))
        return
    figures = {}
    for scheme in SCHEMES:  # each in a fresh process: see the module docstring
        one = [sys.executable, __file__, "--scheme", scheme, "--seconds", str(args.seconds)]
        done = subprocess.run([*one, "--held", str(args.held)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{scheme} failed:\n{done.stderr[-3000:]}")
        figures |= json.loads(done.stdout)
    figures["https_over_http"] = {
        name: round(figures["https"][name][key] / figures["http"][name][key], 2)
        for name, key in (
            ("connect_and_close", "per_s"),
            ("call_100_bytes", "per_s"),
            ("call_20_kb_fragmented", "per_s"),
            ("held_open", "cas_rss_kb_per_virtual_connection"),
        )
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
