"""Throughput of `caslab run --workers 1` against `--workers 2` on the same scenario and machine, over HTTP
and over HTTPS offload (prints figures, asserts nothing).

The scenario is a busy hosted tenant behind HAProxy (browsers, EWS applications and phones on several
NAT addresses, time scaled so that one Locust process cannot keep up): what one more worker buys is
the figure. Requests per second are the run's answered requests over its load time (ramp included,
the same for both); the verdict line says whether the run was valid (a saturated worker is named).
At this time scale sessions expire between a user's actions (OWA's 15 minutes are half a second), so
the verdict fails on hard breaks: only the throughput and the validity count here.
On a 2-core machine the farm and the balancer share the cores with the workers, so the ratio is
bounded well below 2. Run it in a namespace of its own:

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/bench_workers.py [--duration 20s]'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCENARIO = """
name = "bench-workers"
duration = "{duration}"
ramp = "3s"
time_scale = {time_scale}
seed = 1

[farm]
servers = 3
tls = "{tls}"

[balancer]
driver = "haproxy"
preset = "recommended"

[[population]]
kind = "tenant-nat"
users = {users}
source_ips = 8
clients = {{ browser = 0.6, ews-app = 0.3, eas-device = 0.3 }}
"""


def one_run(folder: Path, tls: str, workers: int, args: argparse.Namespace) -> dict:
    """Requests per second, requests, and the verdict line of one run."""
    text = SCENARIO.format(duration=args.duration, time_scale=args.time_scale, tls=tls, users=args.users)
    scenario = folder / f"bench-{tls}.toml"
    scenario.write_text(text)
    out = folder / f"{tls}-w{workers}"
    command = [
        sys.executable,
        "-m",
        "lab.cli",
        "run",
        str(scenario),
        "--out",
        str(out),
        "--workers",
        str(workers),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    run_dirs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
    if done.returncode not in (0, 1, 2) or not run_dirs or not (run_dirs[0] / "summary.json").exists():
        sys.exit(f"the run could not go (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    facts = json.loads((run_dirs[0] / "facts.json").read_text())["facts"]
    seconds = facts["ended_ts"] - facts["started_ts"]
    requests = summary["totals"]["answered"]
    verdict = f"{summary['verdict']}: {summary['verdict_reason']}"
    return {"rps": requests / seconds, "requests": requests, "verdict": verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="20s")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--time-scale", type=float, default=2000)
    parser.add_argument("--tls", default="none,offload", help="comma-separated farm tls modes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="caslab-bench-workers-") as tmp:
        for tls in args.tls.split(","):
            runs = {w: one_run(Path(tmp), tls, w, args) for w in (1, 2)}
            for w, r in runs.items():
                rate = f"{r['rps']:7.0f} requests/s ({r['requests']} answered)"
                print(f"tls={tls:8} workers={w}  {rate}  {r['verdict']}")
            print(f"tls={tls:8} workers 2 / workers 1 = {runs[2]['rps'] / runs[1]['rps']:.2f}")


if __name__ == "__main__":
    main()
