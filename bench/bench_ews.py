"""How fast one mock CAS answers EWS, Autodiscover and OAB requests (prints figures, asserts nothing).

The CAS runs on core 0 (`taskset -c 0`), wrk on core 1 with a small Lua script for the POST bodies.
Every request is authenticated (Basic) and writes a ledger row, as in a lab run:
- EWS GetEvents on one pull subscription held by this CAS (StatusEvent answers: the subscription
  watches only CreatedEvent, so no made-up mail grows the answers);
- EWS GetFolder (stateless);
- Autodiscover, outlook schema;
- OAB: a 64 KB range of the Full Details file.
Each target is measured over HTTP and then over HTTPS, the CAS serving both itself (what wrk's HTTPS
figure is: bench/wrk.py). Prints requests/s, the server's CPU time per request and HTTPS / HTTP of that
CPU time. Runs about 25 s per scheme.

    .venv/bin/python bench/bench_ews.py [--seconds 4] [--connections 20] [--scheme http|https|both]
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tlsfarm import add_scheme_option, base_url, cas_tls_args, https_ratio, schemes, tls_files  # noqa: E402
from wrk import measure  # noqa: E402 - bench/wrk.py, beside this file

import mockcas  # noqa: E402, F401 - before anything imports aiohttp (the mock needs the pure parser)
from lab.farm import wait_until_healthy  # noqa: E402
from lab.model import CasEndpoint  # noqa: E402
from loadgen.wire import autodiscover, ews, oab  # noqa: E402

CAS_HOST = "127.0.12.41"
BASE = base_url("http", CAS_HOST)  # the set-up requests
AUTHORIZATION = "Basic " + base64.b64encode(b"user1@caslab.test:caslab").decode()


def post(path: str, body: bytes) -> bytes:
    request = urllib.request.Request(
        BASE + path, data=body, headers={**ews.HEADERS, "Authorization": AUTHORIZATION}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def get(path: str) -> bytes:
    request = urllib.request.Request(BASE + path, headers={"Authorization": AUTHORIZATION})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def lua_script(method: str, body: bytes, headers: dict[str, str]) -> str:
    lines = [f'wrk.method = "{method}"', f"wrk.body = [==[{body.decode()}]==]"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=4, help="length of each measured wrk run")
    parser.add_argument("--connections", type=int, default=20)
    add_scheme_option(parser)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2

    chosen = schemes(args.scheme)
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}
    scratch = tempfile.TemporaryDirectory(prefix="bench-ews-")
    https = cas_tls_args(tls_files(Path(scratch.name), [CasEndpoint(name="CAS01", host=CAS_HOST)]))
    command = [sys.executable, "-m", "lab.cli", "cas", "--name", "CAS01", "--host", CAS_HOST, *https]
    cas = subprocess.Popen(
        ["taskset", "-c", "0", *command, "--log-level", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_healthy(CasEndpoint(name="CAS01", host=CAS_HOST), time.monotonic() + 20, cas)
        sub = ews.parse(post(ews.PATH, ews.subscribe(event_types=("CreatedEvent",), timeout_minutes=1440)))
        answer = autodiscover.parse(
            post(autodiscover.PATH, autodiscover.outlook_request("user1@caslab.test"))
        )
        files = oab.parse_manifest(get(oab.manifest_path(answer.oab_url)))
        full = next(f for f in files if f.kind == "Full")
        soap = {**ews.HEADERS, "Authorization": AUTHORIZATION}
        targets = [
            ("EWS GetEvents (subscription held here)", ews.PATH,
             lua_script("POST", ews.get_events(sub.subscription_id, sub.watermark), soap)),
            ("EWS GetFolder inbox", ews.PATH, lua_script("POST", ews.get_folder(), soap)),
            ("Autodiscover, outlook schema", autodiscover.PATH,
             lua_script("POST", autodiscover.outlook_request("user1@caslab.test"), soap)),
            ("OAB 64 KB range of the Full file", oab.oab_path(answer.oab_url) + full.name,
             lua_script("GET", b"", {"Authorization": AUTHORIZATION, "Range": "bytes=65536-131071"})),
        ]  # fmt: skip
        print(f"wrk -t1 -c{args.connections} on core 1, one mock CAS on core 0; {args.seconds} s per target")
        print(f"{'':<42} {'':<6} {'req/s':>8} {'CPU us/req':>11} {'not 2xx':>8} {'HTTPS/HTTP CPU':>15}")
        for label, path, script in targets:
            cpu: dict[str, float] = {}
            for scheme in chosen:
                url = base_url(scheme, CAS_HOST) + path
                rps, cpu[scheme], not_ok = measure(cas.pid, url, args.seconds, args.connections, script)
                name, ratio = (label, "") if scheme == chosen[0] else ("", https_ratio(cpu))
                print(f"{name:<42} {scheme:<6} {rps:8.0f} {cpu[scheme]:11.1f} {not_ok:8d} {ratio:>15}")
    finally:
        cas.terminate()
        try:
            cas.wait(5)
        except subprocess.TimeoutExpired:
            cas.kill()
            cas.wait()
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
