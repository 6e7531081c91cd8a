"""How long `caslab run` takes to exit after its verdict and after Ctrl-C (prints figures, asserts nothing).

The bound is lab.backends.teardown.EXIT_BOUND_S (60 s after Ctrl-C; at once after the verdict). Cases,
each a fresh `python -m lab.cli run` (USERS: one population of a NAT-ed tenant on HAProxy, time scale
120):

    verdict     USERS users, 1 s ramp, 2 s load: seconds from the verdict line to the exit
    ctrl-c      USERS users: SIGINT 10 s after Locust starts spawning them; seconds to the exit
    stuck farm  quickstart (on its own driver) with its three CAS stopped (SIGSTOP) during the load,
                then SIGINT; seconds to the exit (the lab's own teardown cannot finish: the deadline
                removes the lab)

and, after Ctrl-C, how many of the lab's processes are left (the verdict comes after the teardown).
Run it in a network namespace of its own (it binds 127.0.236.x):
    unshare -n bash -c 'ip link set lo up && .venv/bin/python bench/bench_teardown.py'

    .venv/bin/python bench/bench_teardown.py [--users 300000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CASLAB_LOCAL_NET": "127.0.236", "PYTHONUNBUFFERED": "1"}
SCENARIO = """\
name = "teardown"
duration = "2s"
ramp = "1s"
time_scale = 120
seed = 1
[farm]
servers = 3
tls = "none"
[balancer]
driver = "haproxy"
preset = "recommended"
[[population]]
kind = "tenant-nat"
users = {users}
source_ips = 4
"""


def start(scenario: str, folder: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "lab.cli", "run", scenario, "--out", str(folder / "reports")]
    return subprocess.Popen(
        command, cwd=folder, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def lab_processes(folder: Path) -> list[psutil.Process]:
    out = []
    for state in (folder / ".caslab" / "labs").glob("*.json"):
        out += [psutil.Process(p["pid"]) for p in json.loads(state.read_text())["processes"].values()]
    return out


def left(processes: list[psutil.Process]) -> int:
    return sum(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


def wait_for(run: subprocess.Popen, text: str) -> None:
    for line in run.stdout:
        if text in line:
            return
    raise SystemExit(f"the run ended before it said {text!r}")


def after_verdict(users: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "big.toml").write_text(SCENARIO.format(users=users))
        run = start(str(folder / "big.toml"), folder)
        wait_for(run, "caslab: verdict")
        said = time.monotonic()
        run.communicate()
        return time.monotonic() - said


def after_ctrl_c(scenario: str, folder: Path, ready: str, stop_farm: bool) -> tuple[float, int]:
    run = start(scenario, folder)
    while not any(ready in log.read_text() for log in folder.glob("reports/*/lab.log")):
        time.sleep(0.2)
    processes = lab_processes(folder)
    if stop_farm:
        for p in processes:
            if "cas" in p.cmdline():
                p.suspend()
    else:
        time.sleep(10)
    interrupted = time.monotonic()
    run.send_signal(signal.SIGINT)
    run.communicate()
    return time.monotonic() - interrupted, left(processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300_000)
    args = parser.parse_args()
    print(f"{'case':<12} {'users':>9} {'seconds to exit':>16} {'processes left':>15}")
    took = after_verdict(args.users)
    print(f"{'verdict':<12} {args.users:>9} {took:>16.1f} {'(torn down)':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "big.toml").write_text(SCENARIO.format(users=args.users))
        took, n = after_ctrl_c(str(folder / "big.toml"), folder, "Ramping to", stop_farm=False)
    print(f"{'ctrl-c':<12} {args.users:>9} {took:>16.1f} {n:>15}")
    with tempfile.TemporaryDirectory() as tmp:
        took, n = after_ctrl_c("quickstart", Path(tmp), "Ramping to", stop_farm=True)
    print(f"{'stuck farm':<12} {70:>9} {took:>16.1f} {n:>15}")


if __name__ == "__main__":
    main()
