"""Benchmark: `caslab scenario from-logs` reading a day of IIS logs of a 10,000-user farm (goal: at
least 1,000,000 lines per second per core, memory flat). Prints figures only.

A synthetic day is written to a temporary folder (several GB; deleted afterwards) by a child process,
so the reader's peak memory is its own: IIS W3C lines as the mock CAS writes them, behind a balancer
that logs X-Forwarded-For, from 10,000 users: a tenant behind 40 NAT addresses (browsers, Outlook 2010
and 2007 over RPC/HTTP, phones on the office Wi-Fi), phones on a carrier moving among 200 addresses,
intranet Outlook over MAPI, home users. Lines come in time order over 24 hours; each client makes
requests at its kind's own pace. Then the reading (files -> tally) and the inference are timed apart:
lines per second per core is lines over the reader's CPU seconds.

    .venv/bin/python bench/bench_fromlogs.py [--gb 3] [--gzip] [--keep DIR]

`--lab-rates` instead measures what the lab's client kinds make (lab/fromlogs/lab_rates.py): it runs a
scenario of every kind for --seconds at time_scale 120 (run it in a network namespace of its own:
`unshare -n bash -c 'ip link set lo up && exec .venv/bin/python bench/bench_fromlogs.py --lab-rates'`)
and prints each kind's requests per client per hour as from-logs reads them from the run's IIS logs.
"""

from __future__ import annotations

import argparse
import gzip
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lab.fromlogs.infer import infer
from lab.fromlogs.read import read_logs

USERS = 10_000
DAY = 1_704_412_800  # 2024-01-05 00:00:00 UTC
HEADER = (
    "#Software: Microsoft Internet Information Services 7.5\n#Version: 1.0\n#Date: 2024-01-05 00:00:00\n"
    "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) "
    "sc-status sc-substatus sc-win32-status time-taken cs(X-Forwarded-For)\n"
)
O10 = "Microsoft+Office/14.0+(Windows+NT+6.1;+Microsoft+Outlook+14.0.7113;+Pro)"
O07 = "Microsoft+Office/12.0+(Windows+NT+6.1;+Microsoft+Office+Outlook+12.0.6662;+Pro)"
BROWSER = "Mozilla/5.0+(compatible;+MSIE+9.0;+Windows+NT+6.1;+WOW64;+Trident/5.0)"
IPHONE = "Apple-iPhone4C1/1002.329"
# (kind, requests per client per hour, [(stem, query, agent), ...]): a request of a client picks one.
KINDS = {
    "browser": (40, [("/owa/ev.owa", "oeh=1&ns=PendingRequest&ev=PendingNotificationRequest", BROWSER),
                     ("/owa/", "ae=Folder&t=IPF.Note", BROWSER), ("/ecp/", "-", BROWSER)]),
    "outlook2010": (30, [("/rpc/rpcproxy.dll", "cas01.contoso.com:6001", "MSRPC"),
                         ("/EWS/Exchange.asmx", "-", O10), ("/Autodiscover/Autodiscover.xml", "-", O10),
                         ("/OAB/3a5c1d2e-1111-4f4f-8a8a-0123456789ab/oab.xml", "-", "Microsoft+BITS/7.5")]),
    "outlook2007": (30, [("/rpc/rpcproxy.dll", "cas01.contoso.com:6004", "MSRPC"),
                         ("/EWS/Exchange.asmx", "-", O07)]),
    "mapi": (8, [("/EWS/Exchange.asmx", "-", O10), ("/Autodiscover/Autodiscover.xml", "-", O10)]),
    "phone": (20, [("/Microsoft-Server-ActiveSync/default.eas",
                    "Cmd=Ping&User={user}&DeviceId=APPL{n:08d}&DeviceType=iPhone&Log=V141_Hb975_", IPHONE)]),
}  # fmt: skip


def generate(path: Path, gigabytes: float, seed: int = 1) -> int:
    """Write a synthetic day to `path` (gzipped when it ends in .gz); returns its request lines."""
    rng = np.random.default_rng(seed)
    users = np.arange(1, USERS + 1)
    # Each user: a kind, and the address it comes from (carrier phones move: see below).
    kind_names = list(KINDS)
    kinds = rng.choice(len(kind_names), USERS, p=[0.35, 0.2, 0.05, 0.2, 0.2])
    home = np.where(users < 6000, 0, 1)  # 0: behind the tenant's NATs, 1: intranet / home / carrier
    rates = np.array([KINDS[kind_names[k]][0] for k in kinds], float)
    per_day = rates * 12  # active about 12 hours a day
    target_lines = int(gigabytes * 1e9 / 192)  # the lines are about 192 bytes long
    chunk = 1_000_000
    opener = gzip.open if path.suffix == ".gz" else open
    written = 0
    with opener(path, "wt", encoding="utf-8") as out:
        out.write(HEADER)
        step = 86400 / -(-target_lines // chunk)  # chunks of lines, each a slice of the day
        t = 0.0
        while written < target_lines:
            n = min(chunk, target_lines - written)
            who = rng.choice(USERS, n, p=per_day / per_day.sum())
            when = np.sort(rng.uniform(t, t + step, n)).astype(np.int64)
            pick = rng.integers(0, 12, n)  # which of its kind's requests (12: a multiple of 1..4)
            t += step
            lines = (
                _line(u, s, kind_names[kinds[u]], home[u], p)
                for u, s, p in zip(who.tolist(), when.tolist(), pick.tolist(), strict=True)
            )
            out.write("".join(lines))
            written += n
    return written


def _line(index: int, t: int, kind: str, home: int, pick: int) -> str:
    user = index + 1
    requests = KINDS[kind][1]
    stem, query, agent = requests[pick % len(requests)]
    if kind == "phone":
        query = query.format(user=f"user{user}", n=user)
        slot = (user + (t + user * 37) // 3600) % 200  # a carrier's phone moves once an hour
        address = f"198.51.{100 + slot // 100}.{slot % 100 + 1}" if home else f"203.0.113.{user % 40 + 1}"
    elif home == 0:
        address = f"203.0.113.{user % 40 + 1}"
    elif kind == "mapi":
        address = f"10.{user // 65536 % 256}.{user // 256 % 256}.{user % 256}"
    else:
        address = f"192.0.{user // 256 % 256}.{user % 256}"
    second = t % 86400
    hh, mm, ss = second // 3600, second // 60 % 60, second % 60
    return (
        f"2024-01-05 {hh:02d}:{mm:02d}:{ss:02d} 10.0.0.11 POST {stem} {query} 443 CONTOSO\\user{user} "
        f"10.0.0.5 {agent} 200 0 0 {t % 997} {address}\n"
    )


def read(path: Path) -> None:
    """Read and infer `path`, printing the figures."""
    wall, cpu = time.perf_counter(), time.process_time()
    observed = read_logs([path])
    read_wall, read_cpu = time.perf_counter() - wall, time.process_time() - cpu
    lines = sum(f.requests for f in observed.files)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = time.perf_counter(), time.process_time()
    inference = infer(observed)
    infer_wall = time.perf_counter() - wall
    size = path.stat().st_size
    print(
        f"file:      {size / 1e9:.2f} GB{' (gzip)' if path.suffix == '.gz' else ''}, {lines:,} request lines"
    )
    print(
        f"read:      {read_wall:.1f} s wall, {read_cpu:.1f} s CPU -> {lines / read_cpu:,.0f} lines/s "
        f"per core ({lines / read_wall:,.0f} lines/s wall)"
    )
    rows = len(observed.activity)
    print(f"infer:     {infer_wall:.1f} s ({inference.clients:,} clients, {rows:,} activity rows)")
    print(f"peak RSS:  {peak_mb:,.0f} MB (reading and inference)")
    print("populations: " + ", ".join(f"{p.name} {p.users:,} users on {p.addresses:,} addresses"
                                      for p in inference.populations))  # fmt: skip


LAB_RATES_SCENARIO = """
name = "lab-rates"
duration = "{seconds}s"
ramp = "4s"
time_scale = 120
seed = 3
[farm]
servers = 2
[balancer]
driver = "haproxy"
[[population]]
kind = "direct"
users = 12
clients = {{ browser = 1, outlook2010-rpchttp = 1, eas-device = 1, ews-app = 1 }}
[[population]]
kind = "tenant-nat"
users = 12
clients = {{ outlook2007-rpchttp = 1 }}
[[population]]
kind = "intranet"
users = 12
clients = {{ outlook-mapi = 1 }}
"""


def lab_rates(seconds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="caslab-lab-rates-") as folder:
        scenario = Path(folder) / "lab-rates.toml"
        scenario.write_text(LAB_RATES_SCENARIO.format(seconds=seconds))
        subprocess.run([sys.executable, "-m", "lab.cli", "run", str(scenario), "--out", folder], check=False)
        logs = sorted(Path(folder).glob("lab-rates-*/farm/*/u_ex*.log"))
        inference = infer(read_logs(logs, time_scale=120))
    print(f"requests per client per hour of Exchange time, {seconds} s at time_scale 120:")
    for kind, rate in sorted(inference.rates.items()):
        print(f"    {kind!r}: {rate.per_hour:.1f},  # {rate.clients} clients")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gb", type=float, default=3.0, help="size of the synthetic day (default 3 GB)")
    parser.add_argument("--gzip", action="store_true", help="write and read it gzipped")
    parser.add_argument(
        "--keep", help="write the day into this folder and keep it (default: a temporary one)"
    )
    parser.add_argument("--generate", help=argparse.SUPPRESS)  # the child process that writes the day
    parser.add_argument("--lab-rates", action="store_true", help="measure the lab's client kinds instead")
    parser.add_argument(
        "--seconds", type=int, default=240, help="--lab-rates: load phase (default 240: 8 Exchange hours)"
    )
    args = parser.parse_args()
    if args.generate:
        print(generate(Path(args.generate), args.gb))
        return
    if args.lab_rates:
        lab_rates(args.seconds)
        return
    folder = Path(args.keep or tempfile.mkdtemp(prefix="caslab-bench-fromlogs-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("u_ex240105.log.gz" if args.gzip else "u_ex240105.log")
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--gb", str(args.gb), "--generate", str(path)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        print(f"generated: {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s")
        read(path)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
