"""A fuzzing pass through a real balancer: damaged requests of every HTTP service sent to the VIP of a
3-CAS farm, then the figures that must be 0 (prints figures, asserts nothing; exit 1 when one is not 0).

Each request starts from a valid one of a service (OWA logon, pages and script calls, ECP calls, EWS SOAP
operations, ActiveSync WBXML commands, RPC/HTTP channel openings, OAB ranges, Autodiscover POX) and is
damaged at random, seeded: its method, path (case, dots, long, encoded), headers (credentials wrong or
garbage, Content-Length against the body, Expect: 100-continue, cookies of another CAS or garbage) and
body (bytes cut, repeated, replaced). It goes over a raw socket (so it can be malformed) with a short
timeout. Afterwards:
- process crashes: CAS or balancer processes that are no longer running;
- 500s that are not Exchange's own: answers with status 500 that are not an EWS SOAP fault (EWS answers a
  bad SOAP request 500 with a fault, as Exchange does), and ledger rows with detail "bug" (an exception
  that escaped a service).
Also printed: requests sent, answered, by status class, and the ledger rows per state.

    .venv/bin/python bench/fuzz_through_balancer.py [--requests 5000] [--driver haproxy] [--seed 1]
        [--preset recommended]

Addresses: CAS 127.0.45.11-13, VIP 127.0.45.1 (run inside `unshare -n` when other labs are about).
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import random
import secrets
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mockcas  # noqa: F401 - before aiohttp anywhere
from caslab import rts
from lab.balancers import get_driver
from lab.balancers.presets import resolve
from lab.farm import LocalFarm
from lab.model import BalancerSpec, Vip, local_farm
from loadgen.wire import autodiscover, eas, ews, owa

VIP = Vip("127.0.45.1")
SERVERS = local_farm(3, "127.0.45")
USER, PASSWORD = "user1@caslab.test", "caslab"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def valid_requests() -> list[tuple[str, str, dict[str, str], bytes]]:
    """(method, path, headers, body) of one valid request of each kind the clients send."""
    device = eas.Device(USER, PASSWORD, "FUZZ1")
    form = "&".join(f"{k}={v}" for k, v in owa.logon_form(USER, PASSWORD, "/owa/").items())
    soap = {"Authorization": BASIC, **ews.HEADERS}
    out = [
        ("GET", owa.HOME, {}, b""),
        ("GET", owa.LOGON_PAGE, {}, b""),
        ("POST", owa.LOGON_POST, {"Content-Type": "application/x-www-form-urlencoded"}, form.encode()),
        ("POST", owa.event_call(*owa.EVENTS[0]), owa.XHR_HEADERS, b"{}"),
        ("POST", owa.ecp_call(*owa.ECP_CALLS[0], "canary"), owa.XHR_HEADERS, b"{}"),
        ("POST", ews.PATH, soap, ews.subscribe()),
        ("POST", ews.PATH, soap, ews.get_folder(["inbox", "calendar"])),
        ("POST", ews.PATH, soap, ews.find_item()),
        ("POST", autodiscover.PATH, {"Authorization": BASIC, **autodiscover.HEADERS},
         autodiscover.outlook_request(USER)),
        ("GET", "/OAB/00000000-0000-0000-0000-000000000000/oab.xml", {"Authorization": BASIC}, b""),
        ("RPC_OUT_DATA", "/rpc/rpcproxy.dll?mail.caslab.test:6001", {"Authorization": BASIC},
         rts.conn_a1(rts.new_cookie(), rts.new_cookie(), 65536)),
        ("RPC_IN_DATA", "/rpc/rpcproxy.dll?mail.caslab.test:6001", {"Authorization": BASIC},
         rts.conn_b1(rts.new_cookie(), rts.new_cookie(), rts.new_cookie(), 1 << 30, 300_000)),
    ]  # fmt: skip
    for request in (eas.options(device), eas.provision(device), eas.folder_sync(device, "1"),
                    eas.ping(device, "1", 60, [("5", "Email")])):  # fmt: skip
        out.append((request.method, request.path, dict(request.headers), request.body))
    return out


METHODS = ["GET", "POST", "HEAD", "OPTIONS", "PUT", "RPC_IN_DATA", "RPC_OUT_DATA", "X" * 40]
CREDENTIALS = [
    "Basic " + base64.b64encode(b"user1@caslab.test:wrong").decode(),
    "Basic ???",
    "NTLM TlRMTVNT",
    "Basic " + base64.b64encode(b"user" + b"9" * 5000 + b":x").decode(),
]
COOKIES = [
    "cadata=" + "A" * 300,
    "cadata=%%%; sessionid=x",
    "OutlookSession=\x01",
    "exchangecookie=" + "z" * 32,
    "msExchEcpCanary=" + "c" * 80,
]
RUN_IDS = ["", "\xff\xfe", "r" * 2000]


def damaged(rng: random.Random, base: tuple[str, str, dict[str, str], bytes]) -> tuple[bytes, bool]:
    """One request on the wire, `base` damaged in up to three places, and whether it declares more body
    than it sends (its client then gives up: it closes its side instead of waiting for an answer)."""
    method, path, headers, body = base
    headers = {"Host": "mail.caslab.test", **headers}
    for _ in range(rng.randint(1, 3)):
        what = rng.randrange(9)
        if what == 0:
            method = rng.choice(METHODS)
        elif what == 1:
            bad_paths = [path.upper(), path + "/../../owa", path + "%00", path * 20, path + "?" + "a=" * 500,
                         path.replace("/", "//"), "/" + secrets.token_hex(8)]  # fmt: skip
            path = rng.choice(bad_paths)
        elif what == 2:
            headers["Authorization"] = rng.choice(CREDENTIALS)
        elif what == 3:
            headers["Expect"] = "100-continue"
        elif what == 4:
            headers["Cookie"] = rng.choice(COOKIES)
        elif what == 5 and body:
            at = rng.randrange(len(body) + 1)
            body = body[:at] + rng.randbytes(rng.randint(0, 16)) + body[at + rng.randint(0, 32) :]
        elif what == 6 and body:
            body = body[: rng.randrange(len(body) + 1)]
        elif what == 7:
            headers["X-CasLab-Run"] = rng.choice(RUN_IDS)
        else:
            body = body * rng.randint(2, 50)
    length = len(body) if rng.random() > 0.1 else rng.choice([0, len(body) + 7, 1 << 31])
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    return head.encode("latin-1", "replace") + body, length > len(body)


def send(raw: bytes, gives_up: bool, timeout: float) -> tuple[int, bytes]:
    """(status, first bytes of the answer) of one request; status 0 when nothing usable came back."""
    try:
        with socket.create_connection((VIP.host, VIP.http_port), timeout=timeout) as sock:
            sock.sendall(raw)
            if gives_up:
                sock.shutdown(socket.SHUT_WR)
            answer = b""
            while len(answer) < 65536 and (chunk := sock.recv(65536)):
                answer += chunk
                if b"\r\n\r\n" in answer and not answer.startswith(b"HTTP/1.1 100"):
                    break
    except OSError:
        return 0, b""
    for line in answer.split(b"\r\n\r\n"):  # skip a 100 Continue before the answer
        if line.startswith(b"HTTP/") and not line.startswith(b"HTTP/1.1 100"):
            try:
                return int(line.split()[1]), answer
            except (IndexError, ValueError):
                return 0, answer
    return 0, answer


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--driver", default="haproxy")
    parser.add_argument("--preset", default="recommended", help="persistence preset (traefik: none-all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--keep-logs", metavar="DIR", help="keep the CAS logs (tracebacks) in DIR")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    bases = valid_requests()
    with tempfile.TemporaryDirectory(prefix="caslab-fuzz-") as folder:
        run_dir = Path(folder)
        logs = Path(args.keep_logs) if args.keep_logs else run_dir / "farm"
        farm = LocalFarm(SERVERS, farm_key=secrets.token_bytes(32), run_dir=logs, time_scale=60)
        spec = BalancerSpec(args.driver, resolve(args.preset), SERVERS, VIP, preset=args.preset)
        balancer = get_driver(spec, run_dir)
        farm.start()
        try:
            balancer.start()
            balancer.wait_ready()
            statuses: collections.Counter[int] = collections.Counter()
            non_soap_500 = 0
            started = time.monotonic()
            for _ in range(args.requests):
                status, answer = send(*damaged(rng, rng.choice(bases)), args.timeout)
                statuses[status] += 1
                if status == 500 and b"soap:Fault" not in answer and b"s:Fault" not in answer:
                    non_soap_500 += 1
            elapsed = time.monotonic() - started
            crashed = [n for n, p in farm.processes.items() if p.poll() is not None]
            balancer_alive = balancer.process is not None and balancer.process.poll() is None
            rows = []
            for cas in SERVERS:
                if cas.name not in crashed:
                    with urllib.request.urlopen(f"{cas.admin_url}/caslab/ledger?since=0", timeout=10) as r:
                        rows += json.loads(r.read())["rows"]
        finally:
            balancer.stop()
            farm.stop()
    bugs = sum(r["detail"] == "bug" for r in rows)
    bug_services = collections.Counter(f"{r['service']} {r['status']}" for r in rows if r["detail"] == "bug")
    classes = collections.Counter(f"{s // 100}xx" if s else "no answer" for s in statuses.elements())
    print(f"fuzz through {args.driver}: {args.requests} requests in {elapsed:.1f} s (seed {args.seed})")
    server_errors = dict(sorted((s, n) for s, n in statuses.items() if s >= 500))
    print(f"  answers by class: {dict(sorted(classes.items()))}; 5xx: {server_errors}")
    print(f"  ledger rows: {len(rows)}, by state: {dict(collections.Counter(r['state'] for r in rows))}")
    print(f"  process crashes: {len(crashed) + (not balancer_alive)} (CAS: {crashed or 'none'}, "
          f"balancer {'alive' if balancer_alive else 'GONE'})")  # fmt: skip
    print(f"  500s that are not Exchange's own SOAP faults: {non_soap_500} answers, {bugs} ledger rows 'bug'"
          + (f" ({dict(bug_services)}; the CAS logs say where)" if bugs else ""))  # fmt: skip
    return 0 if not crashed and balancer_alive and not non_soap_500 and not bugs else 1


if __name__ == "__main__":
    sys.exit(main())
