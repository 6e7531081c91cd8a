"""Start time and requests/s through each balancer driver to a 3-CAS farm, beside direct requests to one
CAS in the same run, over HTTP and HTTPS (prints figures, asserts nothing).

Start time: from launching the process until `wait_ready` returns and a first request through the VIP
reaches a CAS (median of --starts). Throughput: wrk (keep-alive, --connections, one thread) for --seconds
on `GET /owa/auth/logon.aspx` (the probe page: small, no state), round robin (`none-all`). HTTPS is TLS
offloaded at the balancer (`tls = "offload"`, the run's trustme certificate; plain HTTP to the CAS), and
direct HTTPS goes to the CAS's own https port (what wrk's HTTPS figure is: bench/wrk.py); each HTTPS
row says HTTPS / HTTP of its requests/s. The machine's two cores are shared by wrk,
the balancer and the three CAS, so read the figures side by side, not as absolutes. Uses the balancer
tests' addresses (CAS 127.0.16.11-13, VIP 127.0.16.1). About 30 s per scheme.

    .venv/bin/python bench/bench_balancers.py [--seconds 3] [--connections 32] [--drivers haproxy,envoy]
        [--scheme http|https|both]
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlsfarm import add_scheme_option, schemes, tls_files  # bench/tlsfarm.py, beside this file

import mockcas  # noqa: F401 - before aiohttp anywhere
from lab.balancers import get_driver
from lab.balancers.presets import resolve
from lab.farm import LocalFarm
from lab.model import BalancerSpec, CasEndpoint, Vip, local_farm

VIP = Vip("127.0.16.1")
SERVERS = local_farm(3, "127.0.16")
PATH = "/owa/auth/logon.aspx"


def wrk(url: str, seconds: float, connections: int) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]  # wrk refuses "-d2.0s"
    out = subprocess.run(
        [*command, "-H", "Host: mail.caslab.test", url], capture_output=True, text=True, check=True
    ).stdout
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for label, key in (("50%", "p50"), ("99%", "p99")):
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
        figures[key] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return figures


def url(where: Vip | CasEndpoint, scheme: str) -> str:
    """The probe page on the VIP or a CAS, over `scheme`."""
    return f"{scheme}://{where.host}:{where.https_port if scheme == 'https' else where.http_port}{PATH}"


def first_answer(url: str, deadline: float, ca: ssl.SSLContext) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1, context=ca) as response:
                if response.headers.get("X-CasLab-Server"):
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no CAS answered {url}")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--drivers", default="haproxy,envoy,nginx,traefik")
    add_scheme_option(parser)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")
    chosen = schemes(args.scheme)
    with tempfile.TemporaryDirectory(prefix="caslab-bench-") as tmp:
        run = Path(tmp)
        tls = tls_files(run / "tls", SERVERS)  # VIP 127.0.16.1 in the certificate too
        ca = ssl.create_default_context(cafile=tls.ca_pem)
        farm = LocalFarm(SERVERS, farm_key=secrets.token_bytes(32), run_dir=run / "farm", tls_files=tls)
        farm.start()
        try:
            rows = []
            for scheme in chosen:
                direct = wrk(url(SERVERS[0], scheme), args.seconds, args.connections)
                rows.append(("direct to CAS01", scheme, "-", None, direct, None))
            for name in args.drivers.split(","):
                for scheme in chosen:
                    https = scheme == "https"  # TLS offloaded at the balancer
                    spec = BalancerSpec(
                        name, resolve("none-all"), SERVERS, VIP, preset="none-all",
                        tls="offload" if https else "none", tls_files=tls if https else None,
                    )  # fmt: skip
                    starts = []
                    for i in range(args.starts):
                        driver = get_driver(spec, run / f"{name}-{scheme}-{i}")
                        t0 = time.monotonic()
                        driver.start()
                        try:
                            driver.wait_ready()
                            first_answer(url(VIP, scheme), time.monotonic() + 20, ca)
                            starts.append((time.monotonic() - t0) * 1000)
                            if i < args.starts - 1:
                                continue
                            before = driver.counters()
                            figures = wrk(url(VIP, scheme), args.seconds, args.connections)
                            counted = {k: v - before[k] for k, v in driver.counters().items()}
                            median = statistics.median(starts)
                            rows.append((name, scheme, driver.version(), median, figures, counted))
                        finally:
                            driver.stop()
        finally:
            farm.stop()
    print(f"GET {PATH}, wrk 1 thread x {args.connections} connections x {args.seconds:g} s, 3 CAS")
    print(f"{'target':<16} {'':<6} {'version':<18} {'start ms':>8} {'req/s':>8} {'HTTPS/HTTP':>10} "
          f"{'p50 ms':>7} {'p99 ms':>7}  per CAS")  # fmt: skip
    rps = {(name, scheme): f["rps"] for name, scheme, _, _, f, _ in rows}
    for name, scheme, version, start, f, counted in rows:
        start_text = f"{start:8.0f}" if start is not None else f"{'-':>8}"
        ratio = f"{f['rps'] / rps[name, 'http']:.2f}" if scheme == "https" and (name, "http") in rps else ""
        per_cas = " ".join(f"{k}={v}" for k, v in counted.items()) if counted else ""
        bad = f"  non-2xx {f['non_2xx']:.0f}" if f["non_2xx"] else ""
        latency = f"{f['p50']:7.2f} {f['p99']:7.2f}"
        print(f"{name:<16} {scheme:<6} {version:<18} {start_text} {f['rps']:8.0f} {ratio:>10} {latency}  "
              f"{per_cas}{bad}")  # fmt: skip


if __name__ == "__main__":
    main()
