"""`caslab up` / `caslab down`: a lab to explore by hand — a farm behind a real balancer, no load.

`up` starts the farm and the balancer on the local backend (processes on loopback) or the docker one
(containers on a lab network, which this host reaches directly), prints where to point a browser, curl
or Outlook, and stays in the foreground until Ctrl-C or `caslab down` (which signals it through the
state file .caslab/lab.json); either way it tears everything down, as a run does.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from lab.balancers.presets import resolve
from lab.certs import make_tls_files
from lab.model import BalancerSpec
from lab.run import lab_addresses, make_lab

STATE = Path(".caslab") / "lab.json"


def up(
    servers: int,
    driver: str,
    preset: str,
    tls: str,
    run_dir: Path,
    say: Callable[[str], None] = print,
    backend: str = "local",
) -> int:
    if STATE.exists():
        pid = json.loads(STATE.read_text()).get("pid")
        if pid and _alive(pid):
            say(f"caslab up: a lab is already running (pid {pid}); stop it with `caslab down`")
            return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    endpoints, vip, network = lab_addresses(backend, servers)
    tls_files = make_tls_files(run_dir / "tls", vip, endpoints) if tls != "none" else None
    spec = BalancerSpec(driver=driver, persistence=resolve(preset), servers=endpoints, vip=vip, tls=tls,
                        tls_files=tls_files, preset=preset)  # fmt: skip
    lab = make_lab(spec, run_dir, network)
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    try:
        lab.start()
        STATE.parent.mkdir(exist_ok=True)
        STATE.write_text(json.dumps({"pid": os.getpid(), "run_dir": str(run_dir)}))
        scheme, port = ("https", vip.https_port) if tls != "none" else ("http", vip.http_port)
        where = f"containers on {network.subnet}" if network else "loopback"
        say(f"caslab up: {servers} CAS behind {driver} ({preset}), {where}; config in {run_dir / 'balancer'}")
        say(f"  OWA          {scheme}://{vip.host}:{port}/owa/   (user1@caslab.test / caslab)")
        say(f"  MAPI / AB    {vip.host}:{vip.mapi_port} / {vip.ab_port}")
        for e in endpoints:
            say(f"  {e.name}        {e.host}  admin {e.admin_url}/caslab/stats")
        if tls_files:
            say(f"  CA           {tls_files.ca_pem}")
        say("  stop with Ctrl-C or `caslab down`")
        while not stopping:
            time.sleep(0.5)
    finally:
        lab.stop()
        if STATE.exists() and json.loads(STATE.read_text()).get("pid") == os.getpid():
            STATE.unlink()
    say("caslab up: stopped")
    return 0


def down(say: Callable[[str], None] = print, timeout: float = 30.0) -> int:
    if not STATE.exists():
        say("caslab down: no lab is running here (no .caslab/lab.json)")
        return 0
    pid = json.loads(STATE.read_text()).get("pid")
    if not pid or not _alive(pid):
        STATE.unlink()
        say("caslab down: the lab was gone already")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        say(f"caslab down: pid {pid} did not stop in {timeout:.0f}s")
        return 2
    say("caslab down: stopped")
    return 0


def _alive(pid: int) -> bool:
    """Whether the process runs; one that exited but was not yet reaped by its parent (a zombie, e.g. a
    `caslab up` started by a test) has stopped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
