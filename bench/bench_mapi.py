"""How fast one mock CAS answers the MAPI and Address Book line protocol, seen from one blocking client.

Starts one CAS in-process on 127.0.15.11 and runs the client in a second process (so the two do not
share one interpreter lock), then prints figures: round trips per second on one connection, latency
percentiles, and the cost of an Address Book bind that needs a referral.

    .venv/bin/python bench/bench_mapi.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HOST, CLIENT = "127.0.15.11", "127.0.15.200"
MAPI, AB = 59531, 59532


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(cuts[49], 3), "p99_ms": round(cuts[98], 3)}


def run_client(seconds: float) -> dict:
    from loadgen.wire.mapi import AddressBookConnection, MapiConnection

    figures: dict = {}
    with MapiConnection((HOST, MAPI), source_ip=CLIENT, session="bench") as conn:
        handle = conn.logon("user1", "caslab").reply["handle"]
        latencies, deadline = [], time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            ex = conn.rop(handle, "x" * 100)
            assert ex.outcome == "ok", ex
            latencies.append(ex.latency_ms)
        figures["rop_one_connection"] = {"per_s": round(len(latencies) / seconds), **percentiles(latencies)}

    logons, t0 = 0, time.perf_counter()
    deadline = t0 + seconds / 2
    while time.perf_counter() < deadline or logons < 40:  # a new connection each, as a fresh Outlook's
        with MapiConnection((HOST, MAPI), source_ip=CLIENT) as conn:
            assert conn.logon(f"user{logons % 1000 + 1}", "caslab").outcome == "ok"
        logons += 1
    figures["connect_and_logon"] = {"per_s": round(logons / (time.perf_counter() - t0))}

    for label, users in (("ab_bind_own", range(1, 41)), ("ab_bind_cold", range(50_001, 50_041))):
        latencies = []
        for n in users:  # users 1..40 logged on above; 50001.. have no session on this CAS
            with AddressBookConnection((HOST, AB), source_ip=CLIENT) as ab:
                ex = ab.bind(f"user{n}", "caslab")
                assert ex.ok and ex.reply["referred"] == (label == "ab_bind_cold"), ex
                latencies.append(ex.latency_ms)
        figures[label] = percentiles(latencies)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(run_client(args.seconds)))
        return

    import mockcas  # noqa: F401 - before aiohttp, as everywhere
    from mockcas.config import CasConfig
    from mockcas.embedded import EmbeddedFarm

    with EmbeddedFarm([CasConfig(name="CAS01", host=HOST)]) as farm:
        done = subprocess.run(
            [sys.executable, __file__, "--client", "--seconds", str(args.seconds)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).resolve().parent.parent,
        )
        if done.returncode:
            sys.exit(done.stderr)
        figures = json.loads(done.stdout)
        figures["ledger_rows"] = len(farm["CAS01"].ledger)
        figures["referral_cost_ms"] = farm["CAS01"].config.ab_referral_cost_ms
    for name, value in figures.items():
        print(f"{name:22} {value}")


if __name__ == "__main__":
    main()
