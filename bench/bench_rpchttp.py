"""How fast one mock CAS serves Outlook Anywhere, seen from the lab's blocking client.

Starts one CAS in-process on 127.0.14.11 and runs the client in a second process (so the two do not
share one interpreter lock), then prints figures: virtual connections opened and closed per second,
RPC round trips per second on one virtual connection (small and fragmented stubs) with latency
percentiles, and what each open virtual connection (two held channels) costs the CAS in memory.

    .venv/bin/python bench/bench_rpchttp.py [--seconds 2] [--held 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HOST, CLIENT = "127.0.14.11", "127.0.14.200"


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(cuts[49], 3), "p99_ms": round(cuts[98], 3)}


def run_client(seconds: float, held: int) -> dict:
    from loadgen.binding import SourceAddress
    from loadgen.wire.rpchttp import VirtualConnection

    source = SourceAddress(CLIENT)

    def connection() -> VirtualConnection:
        return VirtualConnection((HOST, 8080), source=source, user="user1", password="caslab")

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--held", type=int, default=200, help="virtual connections held open at once")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(run_client(args.seconds, args.held)))
        return

    import mockcas  # noqa: F401 - before aiohttp, as everywhere
    from mockcas.config import CasConfig
    from mockcas.embedded import EmbeddedFarm

    with EmbeddedFarm([CasConfig(name="CAS01", host=HOST)]) as farm:
        client = subprocess.Popen(
            [sys.executable, __file__, "--client", "--seconds", str(args.seconds), "--held", str(args.held)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
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
        "virtual_connections": args.held,
        "channels_in_flight_on_cas": inflight,
        "cas_rss_kb_per_virtual_connection": round(held_kb / args.held, 1),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
