"""The bundled timer scenarios on each balancer: verdict against the expected one, and the figures that
make it (prints a table, asserts nothing).

Each run is a fresh `python -m lab.cli run NAME --driver D` (DESIGN.md section 13, the known answers of
research-timers.md). Per scenario and driver it prints:

    verdict    the run's verdict / the one expected on that driver (summary.json `expected`, which
               `expect_by_driver` sets where a balancer truly differs); `refused` when the driver
               cannot render what the scenario asks (nothing started; the reason in `breaks`)
    cuts       cuts the clients saw, per service (summary.json services.<id>.cut)
    heartbeat  EAS heartbeat mean (s) and whether Exchange's event-1040 alert holds
    breaks     breaks by why the user moved (expired, evicted, cas-failed, no-persistence), all services
    wall       seconds the run took, start to exit
One row per run (--rounds runs each), and at the end how many runs gave the expected verdict.

Uses the lab's default layout (127.0.1.x): run it in a network namespace of its own, nothing else may
run a lab there meanwhile. About 8 s a run, 24 runs a round for everything.

    unshare -n bash -c 'ip link set lo up && exec .venv/bin/python bench/bench_timers.py \
        [--drivers haproxy,envoy,nginx] [--scenarios outlook-anywhere-idle-5m,...] [--rounds 1]'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMER_SCENARIOS = (
    "outlook-anywhere-idle-5m",
    "outlook-anywhere-idle-5m-keepalive-120s",
    "direct-push-idle-5m",
    "direct-push-idle-30m",
    "mapi-idle-60m",
    "mapi-idle-60m-keepalive-30m",
    "persistence-table-too-small",
    "persistence-timeout-short",
)
DRIVERS = ("haproxy", "envoy", "nginx")
CAUSES = ("expired", "evicted", "cas-failed", "no-persistence")


@dataclass
class Outcome:
    verdict: str  # pass, fail, invalid, or refused (the driver could not render the scenario)
    expected: str
    cuts: str
    heartbeat: str
    breaks: str
    wall_s: float


def one_run(scenario: str, driver: str) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="caslab-bench-") as out:
        command = [sys.executable, "-m", "lab.cli", "run", scenario, "--driver", driver, "--out", out]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        wall = time.monotonic() - started
        folders = [p for p in Path(out).iterdir() if (p / "summary.json").is_file()]
        if not folders:
            if done.returncode == 0:
                sys.exit(f"{scenario} on {driver}: exit 0 without a summary:\n{done.stdout}{done.stderr}")
            said = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
            return Outcome("refused", "", "", "", said[:90], wall)
        summary = json.loads((folders[0] / "summary.json").read_text())
    services = summary["services"]
    cuts = ", ".join(f"{name} {s['cut']}" for name, s in services.items() if s.get("cut"))
    heartbeat = summary.get("eas_heartbeat")
    beat = f"{heartbeat['mean_s']:.0f} s{' ALERT' if heartbeat['alert'] else ''}" if heartbeat else "–"
    totals = {c: sum(s.get("breaks_by_cause", {}).get(c, 0) for s in services.values()) for c in CAUSES}
    breaks = ", ".join(f"{c} {n}" for c, n in totals.items() if n)
    return Outcome(summary["verdict"], summary["expected"] or "", cuts or "0", beat, breaks or "0", wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drivers", default=",".join(DRIVERS), help="comma-separated balancer drivers")
    parser.add_argument("--scenarios", default=",".join(TIMER_SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each scenario on each driver")
    args = parser.parse_args()
    header = f"{'driver':8} {'verdict':14} {'cuts':30} {'heartbeat':11} {'breaks':22} wall"
    judged = []  # per run that went: whether its verdict was the expected one
    for scenario in args.scenarios.split(","):
        print(f"\n{scenario}\n  {header}", flush=True)
        for driver in args.drivers.split(","):
            for _ in range(args.rounds):
                o = one_run(scenario, driver)
                verdict = o.verdict if o.verdict == "refused" else f"{o.verdict}/{o.expected}"
                if o.verdict != "refused":
                    judged.append(o.verdict == o.expected)
                print(
                    f"  {driver:8} {verdict:14} {o.cuts:30} {o.heartbeat:11} {o.breaks:22} {o.wall_s:4.1f}s",
                    flush=True,
                )
    print(f"\n{sum(judged)} of {len(judged)} runs gave the expected verdict", flush=True)


if __name__ == "__main__":
    main()
