"""What one user of each client kind costs the load generator, and what its held connections cost the
mock CAS: memory (RSS) and open file descriptors, the figures lab/capacity.py estimates a run from
(prints them, asserts nothing).

For each kind, in a fresh process: one `caslab cas` on 127.0.1.11 over HTTP, Locust users of that kind
(one direct population, an address each) started FIRST at a time, left to finish their set-up (logon,
RPC/HTTP channels, subscriptions, Pings) and think (real Exchange time: minutes), and both processes'
RSS and descriptors read at FIRST users and again at `--users`; the difference over the added users is
the cost of one user (what all users share falls out). HTTP only: `bench/bench_tls.py memory` measures
the same way, over HTTP and over HTTPS, the load generator's memory and connections per user and the
CAS's memory per held connection (lab/capacity.py takes its HTTPS costs from there; TLS adds no
descriptor, it runs on the same connections). Run it in a namespace of its own:

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/bench_capacity.py [--users 300]'
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("browser", "outlook2010-rpchttp", "outlook2007-rpchttp", "outlook-mapi", "eas-device", "ews-app")
FIRST = 50
CAS_HOST = "127.0.1.11"


def usage(pid: int) -> tuple[int, int]:
    """(RSS bytes, open descriptors) of a process."""
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def start_cas() -> subprocess.Popen:
    cas = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "cas", "--name", "CAS01", "--host", CAS_HOST],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{CAS_HOST}:8099/caslab/health", timeout=1):
                return cas
        except OSError:
            time.sleep(0.2)
    cas.kill()
    raise SystemExit("the CAS did not come up")


def measure(kind: str, users: int) -> dict:
    """One kind in this process (which Locust patches with gevent)."""
    import gevent
    from locust.env import Environment

    from caslab.vocab import HTTP_PORT
    from loadgen.addresses import AddressPlan
    from loadgen.plan import Endpoints, LoadPlan, PopulationPlan, user_classes

    cas = start_cas()
    try:
        population = PopulationPlan("direct#0", AddressPlan(0, "direct", users, 0), {kind: users})
        plan = LoadPlan([population], Endpoints.from_url(f"http://{CAS_HOST}:{HTTP_PORT}"), time_scale=1.0)
        plan.start_time = time.time()
        classes = user_classes(plan)
        classes[0].fixed_count = 0  # by weight, so that a second start adds users to the first ones
        env = Environment(user_classes=classes)
        runner = env.create_local_runner()
        readings = []
        for count in (FIRST, users):
            runner.start(count, spawn_rate=50)
            settle(env, count)
            readings.append((usage(os.getpid()), usage(cas.pid)))
        (lg0, cas0), (lg1, cas1) = readings
        added = users - FIRST
        result = {
            "kind": kind,
            "loadgen_kb_per_user": (lg1[0] - lg0[0]) / added / 1024,
            "loadgen_fds_per_user": (lg1[1] - lg0[1]) / added,
            "cas_kb_per_user": (cas1[0] - cas0[0]) / added / 1024,
            "cas_fds_per_user": (cas1[1] - cas0[1]) / added,
            "failures": env.stats.total.num_failures,
            "requests": env.stats.total.num_requests,
        }
        runner.quit()
        gevent.sleep(0)
        return result
    finally:
        cas.kill()
        cas.wait()


def settle(env: object, target: int, window_s: float = 3.0, limit_s: float = 90.0) -> None:
    """Wait until every user has started and finished its set-up: a window of `window_s` with about one
    request per 100 users at most."""
    import gevent

    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = env.stats.total.num_requests
        gevent.sleep(window_s)
        if env.runner.user_count >= target and env.stats.total.num_requests - before <= max(1, target // 100):
            return
    raise SystemExit(f"users did not settle: {env.runner.user_count} of {target} started")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: measure this kind, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.users)))
        return
    print(f"{'kind':22} {'loadgen KB/user':>16} {'fds/user':>9} {'CAS KB/user':>12} {'CAS fds/user':>13}")
    for kind in args.kinds.split(","):
        done = subprocess.run(
            [sys.executable, __file__, "--one", kind, "--users", str(args.users)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(f"{kind:22} failed: {done.stderr.strip()[-500:]}")
            continue
        r = json.loads(done.stdout.splitlines()[-1])
        print(
            f"{kind:22} {r['loadgen_kb_per_user']:16.1f} {r['loadgen_fds_per_user']:9.2f} "
            f"{r['cas_kb_per_user']:12.1f} {r['cas_fds_per_user']:13.2f}  "
            f"({r['failures']} of {r['requests']} requests failed)"
        )


if __name__ == "__main__":
    main()
