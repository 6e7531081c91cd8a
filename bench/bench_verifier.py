"""Benchmark: the verifier on 1,000,000 synthetic client events (goal: under 5 s). Prints figures only.

The synthetic run: 3 CAS, 20,000 users of two populations, each user in a few sessions of the nine
services; a session mostly stays on its CAS and now and then moves (so splits, moves and breaks exist),
a CAS is stopped a third of the way in and started again two thirds in; every event has a ledger row
except the transport failures.

    .venv/bin/python bench/bench_verifier.py [--events N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from caslab.vocab import SERVICES
from lab.scenario import parse_scenario
from lab.verifier import FaultFact, RunFacts, verify

SCENARIO = """
name = "bench"
duration = "10m"
[farm]
servers = 3
[[population]]
kind = "tenant-nat"
users = 12000
[[population]]
kind = "intranet"
users = 8000
[[fault]]
at = "200s"
server = "CAS02"
action = "stop"
[[fault]]
at = "400s"
server = "CAS02"
action = "start"
[thresholds]
hard_breaks = 0
split_sessions_pct = { eas = 5 }
balance_max_over_mean = 1.25
error_rate_pct = 1
fault_collateral_breaks = 0
"""


def synthetic_run(n: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    t0, servers = 1_700_000_000.0, np.array(["CAS01", "CAS02", "CAS03"])
    n_units = max(1, n // 20)
    unit = rng.integers(0, n_units, n)
    unit_user = rng.integers(0, 20_000, n_units)
    unit_svc = rng.integers(0, len(SERVICES), n_units)
    unit_home = rng.integers(0, 3, n_units)
    ts = t0 + rng.uniform(0, 600, n)
    server_code = np.where(rng.random(n) < 0.02, rng.integers(0, 3, n), unit_home[unit])
    outcome = rng.choice(
        np.array(["ok", "foreign", "cold", "error", "transport"]), n, p=[0.95, 0.01, 0.02, 0.01, 0.01]
    )
    server = np.where(outcome == "transport", "", servers[server_code])
    user_names = np.array([f"user{i}" for i in range(20_000)])
    session_names = np.array([f"s{i}" for i in range(n_units)])
    events = pd.DataFrame(
        {
            "ts": ts,
            "population": np.where(unit_user[unit] < 12_000, "tenant-nat", "intranet"),
            "user": user_names[unit_user[unit]],
            "client_kind": "browser",
            "service": np.array(SERVICES)[unit_svc[unit]],
            "session": session_names[unit],
            "source_ip": "127.64.1.10",
            "server": server,
            "status": 200,
            "outcome": outcome,
            "latency_ms": rng.gamma(2.0, 10.0, n),
            "request_id": [f"r{i}" for i in range(n)],
            "detail": "",
        }
    )
    kept = events[events["outcome"] != "transport"]
    ledger = pd.DataFrame(
        {
            "seq": np.arange(len(kept)),
            "ts": kept["ts"].to_numpy() + 0.001,
            "server": kept["server"].to_numpy(),
            "service": kept["service"].to_numpy(),
            "session_key": kept["session"].to_numpy(),
            "client_ip": "127.64.1.10",
            "state": "own",
            "status": 200,
            "request_id": kept["request_id"].to_numpy(),
            "run_id": "",
            "detail": "",
            "latency_ms": kept["latency_ms"].to_numpy(),
        }
    )
    return events, ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    scenario = parse_scenario(SCENARIO, "bench")
    started = time.perf_counter()
    events, ledger = synthetic_run(args.events)
    made = time.perf_counter() - started
    t0 = float(events["ts"].min())
    facts = RunFacts(
        driver="synthetic",
        started_ts=t0,
        faults=[FaultFact("CAS02", "stop", t0 + 200), FaultFact("CAS02", "start", t0 + 400)],
    )
    started = time.perf_counter()
    analysis = verify(events, ledger, scenario, facts)
    took = time.perf_counter() - started
    print(f"synthetic data: {len(events):,} events, {len(ledger):,} ledger rows, made in {made:.2f} s")
    print(f"verify: {took:.2f} s, {len(events) / took:,.0f} events/s (goal: under 5 s)")
    print(
        f"verdict {analysis.verdict}; sessions {analysis.totals['sessions']:,}; "
        f"balance max/mean {analysis.balance['max_over_mean']}"
    )


if __name__ == "__main__":
    main()
