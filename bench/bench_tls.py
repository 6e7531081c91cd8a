"""What TLS and long-lived connections cost: the load generator per user, the mock CAS per held channel
and Ping, and new TLS connections per load-generator core (prints figures, asserts nothing).

1. memory: for each client kind, the Locust process's memory per user over HTTP and over HTTPS (the CAS
   serves both itself: HTTPS with the run's kind of certificate, verified by the clients), and the CAS
   process's memory per held connection. Each measurement runs in a fresh process: users of one kind
   start, do their set-up (logon, channels, subscriptions, Pings) and then think (real Exchange time:
   minutes), and the process's RSS is read at 100 users and again at `--users`; the difference over the
   added users is the cost of one user (what every user shares, like the kind's one TLS context, falls
   out). The CAS's memory per held RPC/HTTP channel (two per virtual connection, four per Outlook) and
   per held Ping is read the same way. Goal: HTTPS <= 1.3 x HTTP per user. TLS 1.3 by default, as a
   run's clients offer it; `--tls 1.2` for the other (bench_tls_floor.py says what each costs).
2. handshakes: new TLS connections per CPU-second of the client process (`--tls` 1.2 by default, the
   version whose resumption by session ID the lab models): a plain Python `ssl` loop doing only that
   (connect, handshake, close with close_notify) against the caslab client path (a browser user's
   connection pool opening a new connection each time: from the user's source address, with the kind's
   TLS context and the session the user kept, closed with close_notify), both full handshakes and
   resumed ones. Goal: the client path >= 0.8 x the plain loop, full against full.

The CAS runs on core 0, the clients on core 1. The machine is shared: run it when `uptime` shows little
load, and more than once (`--rounds`).

    .venv/bin/python bench/bench_tls.py [memory|handshakes|both] [--users 600] [--kinds a,b] [--rounds 3]
        [--seconds 3] [--tls 1.2|1.3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.model import TlsFiles

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("browser", "outlook2010-rpchttp", "outlook2007-rpchttp", "outlook-mapi", "eas-device", "ews-app")
FIRST = 100  # users before the first reading: one-time costs (imports, contexts, pools) fall before it


def on_core_1() -> None:
    os.sched_setaffinity(0, {1})  # the clients' core (the CAS has core 0)


def settle(env: object, window_s: float = 3.0, limit_s: float = 300.0) -> None:
    """Wait until every user has started and finished its set-up: a window of `window_s` with about one
    request per 100 users at most (set-up is several requests per user at once; afterwards users think
    for minutes, but some user always acts, so "no request at all" may never come with hundreds)."""
    import gevent

    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = env.stats.total.num_requests
        gevent.sleep(window_s)
        spawned = env.runner.user_count >= env.runner.target_user_count
        if spawned and env.stats.total.num_requests - before <= max(1, env.runner.target_user_count // 100):
            return
    raise SystemExit(
        f"users did not settle in {limit_s:g} s: {env.runner.user_count} of {env.runner.target_user_count} "
        f"started, {env.stats.total.num_requests} requests, {env.stats.total.num_failures} failed"
    )


def run_on_core_1(*args: str) -> dict:
    """This script with `args` in a fresh process on the clients' core; its JSON answer."""
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, preexec_fn=on_core_1
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_memory(kind: str, base: str, users: int, ca: str, admin: str, version: str) -> dict:
    """In this (fresh) process: memory per user of `kind` against `base`, and the CAS's per connection."""
    import gc

    import psutil
    from locust.env import Environment

    from lab.farm import http_get_json
    from loadgen.addresses import AddressPlan
    from loadgen.plan import Endpoints, LoadPlan, PopulationPlan, user_classes

    population = PopulationPlan(
        name="bench",
        addresses=AddressPlan(0, "intranet", users=users, source_ips=users),
        clients={kind: users},
    )
    plan = LoadPlan(
        [population], Endpoints.from_url(base), time_scale=1.0, ca_pem=ca, tls_max_version=version
    )
    plan.start_time = time.time()
    env = Environment(user_classes=user_classes(plan))
    runner = env.create_local_runner()
    me = psutil.Process()
    cas = psutil.Process(http_get_json(f"{admin}/caslab/health")["pid"])
    readings = []
    for count in (FIRST, users):
        runner.start(count, spawn_rate=200)
        settle(env)
        gc.collect()
        time.sleep(0.5)
        readings.append((me.memory_info().rss, cas.memory_info().rss, len(me.net_connections("tcp"))))
    failures = env.stats.total.num_failures
    runner.quit()
    (rss1, cas1, fds1), (rss2, cas2, fds2) = readings
    added = users - FIRST
    return {
        "kind": kind,
        "scheme": base.split(":")[0],
        "kb_per_user": (rss2 - rss1) / added / 1024,
        "connections_per_user": (fds2 - fds1) / added,
        "cas_kb_per_user": (cas2 - cas1) / added / 1024,
        "failures": failures,
    }


def memory(args: argparse.Namespace, server: object, tls: TlsFiles) -> None:
    from tlsfarm import SCHEMES, base_url, cas_running

    rows: dict[tuple[str, str], list[dict]] = {}
    kinds = args.kinds.split(",") if args.kinds else KINDS
    version = args.tls or "1.3"  # what a run's clients offer
    for _ in range(args.rounds):
        for kind in kinds:
            for scheme in SCHEMES:
                base = base_url(scheme, server.host)
                with cas_running(server, tls):
                    answer = run_on_core_1(
                        "--one-memory",
                        kind,
                        base,
                        str(args.users),
                        str(tls.ca_pem),
                        server.admin_url,
                        version,
                    )
                rows.setdefault((kind, scheme), []).append(answer)
    print(
        f"\nmemory: TLS {version}, {args.users} users per kind (per user: {FIRST} -> {args.users}), "
        f"{args.rounds} round(s)"
    )
    print(f"{'kind':<22}{'HTTP KB/user':>14}{'HTTPS KB/user':>15}{'HTTPS/HTTP':>12}{'per round':>22}"
          f"{'conns/user':>12}{'CAS KB/conn http':>18}{'https':>8}")  # fmt: skip
    for kind in kinds:
        http, https = rows[(kind, "http")], rows[(kind, "https")]
        ratios = [s["kb_per_user"] / h["kb_per_user"] for h, s in zip(http, https, strict=True)]
        h_kb = statistics.median(r["kb_per_user"] for r in http)
        s_kb = statistics.median(r["kb_per_user"] for r in https)
        conns = statistics.median(r["connections_per_user"] for r in https)
        per_conn = [statistics.median(r["cas_kb_per_user"] for r in x) / max(conns, 1) for x in (http, https)]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        print(f"{kind:<22}{h_kb:>14.1f}{s_kb:>15.1f}{s_kb / h_kb:>12.2f}{spread:>22}{conns:>12.1f}"
              f"{per_conn[0]:>18.1f}{per_conn[1]:>8.1f}")  # fmt: skip
    failures = sum(r["failures"] for rs in rows.values() for r in rs)
    print(f"(failed requests in all runs: {failures}; goal HTTPS <= 1.3 x HTTP)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", nargs="?", default="both", choices=["memory", "handshakes", "both"])
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--kinds", default="", help="comma-separated kinds (default: all)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0, help="each handshake window")
    parser.add_argument("--one-memory", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument(
        "--tls",
        choices=["1.2", "1.3"],
        help="the highest TLS version (handshakes: 1.2 by default, resumption by session ID as the lab "
        "models it; memory: 1.3 by default, as a run's clients offer)",
    )
    parser.add_argument("--one-handshakes", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_handshakes:
        mode, base, ca_path, seconds, version = args.one_handshakes
        print(json.dumps(one_handshakes(mode, base, Path(ca_path).read_text(), float(seconds), version)))
        return
    if args.one_memory:
        kind, base, users, ca_path, admin, version = args.one_memory
        print(json.dumps(one_memory(kind, base, int(users), Path(ca_path).read_text(), admin, version)))
        return

    from tlsfarm import cas_running, tls_files  # bench/tlsfarm.py, beside this file

    from lab.model import local_farm

    server = local_farm(1, "127.0.23")[0]
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as scratch:
        tls = tls_files(Path(scratch) / "tls", [server])
        if args.part in ("memory", "both"):
            memory(args, server, tls)
        if args.part in ("handshakes", "both"):
            with cas_running(server, tls):
                handshakes(args, server, tls)


def one_handshakes(mode: str, base: str, ca: str, seconds: float, version: str) -> dict:
    """In this (fresh) process: new TLS connections to `base` for `seconds`, per CPU-second of this
    process. `mode` is plain-full, plain-resumed, client-full or client-resumed."""
    how, kind = mode.split("-")
    host, port = base.split("//")[1].split(":")
    if how == "client":  # Locust first: it patches the process with gevent, as in a run
        from geventhttpclient.url import URL
        from locust.env import Environment

        from loadgen.addresses import AddressPlan
        from loadgen.plan import Endpoints, LoadPlan, PopulationPlan, user_classes

        population = PopulationPlan(
            name="bench", addresses=AddressPlan(0, "intranet", users=1, source_ips=1), clients={"browser": 1}
        )
        plan = LoadPlan(
            [population], Endpoints.from_url(base), time_scale=1.0, ca_pem=ca, tls_max_version=version
        )
        plan.start_time = time.time()
        user = user_classes(plan)[0](Environment(user_classes=user_classes(plan)))
        pool = user.client.client.clientpool.get_client(URL(base))._connection_pool
        user.tls_sessions.resumes = kind == "resumed"
        pool.return_socket(pool.get_socket())  # the first connection: its session is kept

        def connect_once() -> bool:
            sock = pool.get_socket()  # a new connection: connect, bind, TLS with the kept session
            reused = sock.session_reused
            pool.release_socket(sock)  # closed with close_notify
            return reused
    else:
        import socket
        import ssl

        from loadgen.tls import TLS_VERSIONS, close_tls

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=ca)
        context.options |= ssl.OP_NO_TICKET
        context.maximum_version = ssl.TLSVersion[TLS_VERSIONS[version]]
        first = context.wrap_socket(socket.create_connection((host, int(port))), server_hostname=host)
        session = first.session if kind == "resumed" else None
        close_tls(first)

        def connect_once() -> bool:
            sock = socket.create_connection((host, int(port)))
            sock = context.wrap_socket(sock, server_hostname=host, session=session)
            reused = sock.session_reused
            close_tls(sock)
            return reused

    count = reused = 0
    cpu0, end = time.process_time(), time.monotonic() + seconds
    while time.monotonic() < end:
        reused += connect_once()
        count += 1
    cpu = time.process_time() - cpu0
    return {"mode": mode, "count": count, "cpu_s": cpu, "per_cpu_s": count / cpu, "reused": reused / count}


def handshakes(args: argparse.Namespace, server: object, tls: TlsFiles) -> None:
    from tlsfarm import base_url

    base, ca = base_url("https", server.host), str(tls.ca_pem)
    rows: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for mode in ("plain-full", "client-full", "plain-resumed", "client-resumed"):
            answer = run_on_core_1("--one-handshakes", mode, base, ca, str(args.seconds), args.tls or "1.2")
            rows.setdefault(mode, []).append(answer)
    print(f"\nhandshakes: TLS {args.tls or '1.2'}, connections per client CPU-second, {args.rounds} round(s)")
    print(
        f"{'':<10}{'plain loop':>12}{'client path':>12}{'client/plain':>14}{'reused: plain':>15}{'client':>8}"
    )
    for kind in ("full", "resumed"):
        per_s, reused = {}, {}
        for how in ("plain", "client"):
            per_s[how] = statistics.median(r["per_cpu_s"] for r in rows[f"{how}-{kind}"])
            reused[how] = statistics.median(r["reused"] for r in rows[f"{how}-{kind}"])
        ratio = per_s["client"] / per_s["plain"]
        print(f"{kind:<10}{per_s['plain']:>12.0f}{per_s['client']:>12.0f}{ratio:>14.2f}"
              f"{reused['plain']:>15.0%}{reused['client']:>8.0%}")  # fmt: skip
    print("(goal: client path >= 0.8 x the plain loop, full against full)")


if __name__ == "__main__":
    main()
