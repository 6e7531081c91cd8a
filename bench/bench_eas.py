"""How fast the WBXML codec runs and one mock CAS answers EAS (prints figures, asserts nothing).

1. The codec in this process: encode and decode of a Sync answer carrying 25 messages (about 20 KB).
2. One mock CAS on core 0 (`taskset -c 0`), wrk on core 1, every request authenticated and written to
   the ledger, as in a lab run:
   - Sync of an Inbox with nothing new, by a device this CAS has warm (`own`): a device's steady poll;
   - Sync bringing 25 messages (a sync key 25 messages behind, WindowSize 25);
   - FolderSync with nothing new;
   - Provision by a new device on every request (`new`: each pays the warm-up, 40 ms by default, so
     the rate is bounded by connections / cost; the CPU time per request is the figure to read).
Each target is measured over HTTP and then over HTTPS, the CAS serving both itself (what wrk's HTTPS
figure is: bench/wrk.py). Prints requests/s, the server's CPU time per request and HTTPS / HTTP of that
CPU time. Runs about 25 s per scheme.

    .venv/bin/python bench/bench_eas.py [--seconds 4] [--connections 20] [--scheme http|https|both]
"""

from __future__ import annotations

import argparse
import os
import secrets
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
from caslab import wbxml  # noqa: E402
from lab.farm import wait_until_healthy  # noqa: E402
from lab.model import CasEndpoint  # noqa: E402
from loadgen.wire import eas  # noqa: E402
from mockcas.sealing import Sealer  # noqa: E402

CAS_HOST = "127.0.13.41"
BASE = base_url("http", CAS_HOST)  # the set-up requests
DEVICE = eas.Device("user1@caslab.test", "caslab", "BenchDevice1")


def send(request: eas.EasRequest) -> bytes:
    http = urllib.request.Request(
        BASE + request.path, data=request.body or None, headers=request.headers, method=request.method
    )
    with urllib.request.urlopen(http, timeout=5) as response:
        return response.read()


def lua_script(request: eas.EasRequest, body_file: str, new_device_each_time: bool) -> str:
    """A wrk script sending `request` (its body read from a file: WBXML is binary). New devices are
    named after a random tag of the wrk process, so no run meets a device that an earlier run (the
    warm-up, the other scheme) made warm."""
    lines = [f'local f = io.open("{body_file}", "rb")', "local body = f:read('*a')", "f:close()"]
    lines += ["local headers = {}"] + [f'headers["{k}"] = "{v}"' for k, v in request.headers.items()]
    if new_device_each_time:
        before, after = request.path.split(DEVICE.device_id)
        lines += ['local uuid = io.open("/proc/sys/kernel/random/uuid")',
                  'local tag = uuid:read("*l"):gsub("-", ""):sub(1, 12)', "uuid:close()"]  # fmt: skip
        lines += ["local n = 0", "request = function()", "  n = n + 1"]
        lines += [f'  return wrk.format("POST", "{before}N" .. tag .. n .. "{after}", headers, body)', "end"]
    else:
        lines += [f'request = function() return wrk.format("POST", "{request.path}", headers, body) end']
    return "\n".join(lines) + "\n"


def bench_codec(answer: bytes, seconds: float = 1.0) -> None:
    tree = wbxml.decode(answer)
    for label, work in (("decode", lambda: wbxml.decode(answer)), ("encode", lambda: wbxml.encode(tree))):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            work()
            count += 1
        rate = count / (time.perf_counter() - started)
        print(f"codec {label} of a {len(answer) / 1000:.1f} KB Sync answer: {rate:8.0f}/s"
              f" ({rate * len(answer) / 1e6:.1f} MB/s)")  # fmt: skip


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
    farm_key = secrets.token_bytes(32)
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}
    scratch = tempfile.TemporaryDirectory(prefix="bench-eas-")
    https = cas_tls_args(tls_files(Path(scratch.name), [CasEndpoint(name="CAS01", host=CAS_HOST)]))
    command = [sys.executable, "-m", "lab.cli", "cas", "--name", "CAS01", "--host", CAS_HOST, *https]
    command += ["--farm-key", farm_key.hex(), "--log-level", "WARNING"]
    cas = subprocess.Popen(
        ["taskset", "-c", "0", *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_healthy(CasEndpoint(name="CAS01", host=CAS_HOST), time.monotonic() + 20, cas)
        temporary = eas.parse_provision(send(eas.provision(DEVICE))).policy_key or ""
        key = eas.parse_provision(send(eas.provision_ack(DEVICE, temporary))).policy_key or ""
        folder_key = eas.parse_folder_sync(send(eas.folder_sync(DEVICE, key))).sync_key or ""
        start = eas.parse_sync(send(eas.sync(DEVICE, key, [("5", "0")]))).collections[0].sync_key or ""
        current = eas.parse_sync(send(eas.sync(DEVICE, key, [("5", start)], window_size=100)))
        current_key = current.collections[0].sync_key or ""
        newest = Sealer(farm_key).unseal(current_key)["w"]  # type: ignore[index]
        behind = Sealer(farm_key).seal({"w": newest - 25})
        catch_up = eas.sync(DEVICE, key, [("5", behind)], window_size=25)
        big_answer = send(catch_up)
        bench_codec(big_answer)

        targets = [
            ("Sync, nothing new (own)", eas.sync(DEVICE, key, [("5", current_key)]), False),
            ("Sync bringing 25 messages (own)", catch_up, False),
            ("FolderSync, nothing new (own)", eas.folder_sync(DEVICE, key, folder_key), False),
            ("Provision, a new device each request (new)", eas.provision(DEVICE), True),
        ]  # fmt: skip
        print(f"wrk -t1 -c{args.connections} on core 1, one mock CAS on core 0; {args.seconds} s per target")
        print(f"{'':<44} {'':<6} {'req/s':>8} {'CPU us/req':>11} {'not 2xx':>8} {'HTTPS/HTTP CPU':>15}")
        for n, (label, request, new_devices) in enumerate(targets):
            body_file = f"{scratch.name}/body{n}"
            Path(body_file).write_bytes(request.body)
            script = lua_script(request, body_file, new_devices)
            cpu: dict[str, float] = {}
            for scheme in chosen:
                url = base_url(scheme, CAS_HOST)
                rps, cpu[scheme], not_ok = measure(cas.pid, url, args.seconds, args.connections, script)
                name, ratio = (label, "") if scheme == chosen[0] else ("", https_ratio(cpu))
                print(f"{name:<44} {scheme:<6} {rps:8.0f} {cpu[scheme]:11.1f} {not_ok:8d} {ratio:>15}")
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
