"""Time to verdict of `caslab run quickstart` from a cold start (prints figures, asserts nothing).

Each round starts a fresh `python -m lab.cli run quickstart` (the default driver, Envoy, unless --driver
says otherwise) and splits its wall time into phases, read from the run's lab.log and facts.json and
from when summary.json and report.html were written:

    start-up    process start and imports, until the farm starts
    farm        the CAS processes, until each answers its health URL
    balancer    the balancer process, until it listens, plus Locust's start
    load        ramp + load phase (the scenario's; --duration shortens it)
    verify      stopping the users, reading the ledgers, the verifier and summary.json
    report      report.html (the plots)
    exit        tearing the lab down and exiting

The goal is a verdict in under 60 s. Uses the lab's default layout (127.0.1.x): nothing else may run a
lab there meanwhile. About 35 s a round.

    .venv/bin/python bench/bench_quickstart.py [--rounds 1] [--driver envoy] [--duration 20s]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("start-up", "farm", "balancer", "load", "verify", "report", "exit")


def log_times(lab_log: str, marker: str) -> list[float]:
    """Epoch seconds of the lab.log lines containing `marker` (the log writes local time, in ms)."""
    return [
        dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in lab_log.splitlines()
        if marker in line
    ]


def one_round(driver: str | None, duration: str | None) -> tuple[int, dict[str, float], float]:
    """(exit code, seconds per phase, total seconds) of one cold run."""
    with tempfile.TemporaryDirectory(prefix="caslab-bench-") as out:
        command = [sys.executable, "-m", "lab.cli", "run", "quickstart", "--out", out]
        command += ["--driver", driver] if driver else []
        command += ["--duration", duration] if duration else []
        started = time.time()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        ended = time.time()
        if done.returncode not in (0, 1):
            sys.exit(f"the run could not go (exit {done.returncode}):\n{done.stdout}{done.stderr}")
        run_dir = next(p for p in Path(out).iterdir() if p.is_dir())
        lab_log = (run_dir / "lab.log").read_text()
        facts = json.loads((run_dir / "facts.json").read_text())["facts"]
        farm_start, balancer_start = log_times(lab_log, "caslab.lab: starting ")[:2]  # the CAS, the balancer
        marks = [
            started,
            farm_start,
            balancer_start,
            facts["started_ts"],
            facts["ended_ts"],
            (run_dir / "summary.json").stat().st_mtime,
            (run_dir / "report.html").stat().st_mtime,
            ended,
        ]
        phases = {name: b - a for name, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True)}
        return done.returncode, phases, ended - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--driver", help="balancer driver (default: the scenario's, Envoy)")
    parser.add_argument("--duration", help="override the load phase, e.g. 10s")
    args = parser.parse_args()

    print("seconds per phase of `caslab run quickstart` from a fresh process; goal: total under 60 s")
    print(f"{'round':>5} " + " ".join(f"{name:>9}" for name in PHASES) + f" {'total':>7}  verdict")
    for n in range(1, args.rounds + 1):
        code, phases, total = one_round(args.driver, args.duration)
        verdict = {0: "pass", 1: "fail"}[code]
        print(f"{n:>5} " + " ".join(f"{phases[p]:>9.2f}" for p in PHASES) + f" {total:>7.2f}  {verdict}")


if __name__ == "__main__":
    main()
