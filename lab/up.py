"""`caslab up` / `caslab down`: a lab to explore by hand — a farm behind a real balancer, no load.

`up` starts the farm and the balancer on the local backend (processes on loopback) or the docker one
(containers on a lab network, which this host reaches directly), prints where to point a browser, curl
or Outlook, and stays in the foreground until Ctrl-C or `caslab down`; either way it tears everything
down, as a run does. Its lab is recorded in the checkout's `.caslab/labs/` (lab.backends.state), like a
run's, which is how `down` finds it.

`down` stops this checkout's `caslab up` lab (SIGTERM to its owner, which tears the lab down) and then
removes whatever labs of this checkout left behind when their owner died (lab.backends.janitor): local
CAS and balancer processes, docker containers and networks. `down --all` removes every lab of this
checkout, running or not, and every caslab lab on the Docker engine.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from lab.backends.janitor import clean
from lab.backends.owner import OWNER_STOP_S, ask_to_stop
from lab.backends.state import LabRecord, labs_here
from lab.backends.teardown import Deadline
from lab.balancers.presets import resolve
from lab.capacity import raise_fd_limit
from lab.certs import make_tls_files
from lab.model import BalancerSpec
from lab.run import lab_addresses, make_lab


def up(
    servers: int,
    driver: str,
    preset: str,
    tls: str,
    run_dir: Path,
    say: Callable[[str], None] = print,
    backend: str = "local",
) -> int:
    running = [r for r in labs_here() if r.command == "up" and not r.owner.gone()]
    if running:
        say(f"caslab up: a lab is already running (pid {running[0].owner.pid}); stop it with `caslab down`")
        return 2
    for line in clean(docker=backend == "docker"):
        say(f"caslab up: removed what a lab whose owner is gone left: {line}")
    run_dir.mkdir(parents=True, exist_ok=True)
    before, files = raise_fd_limit()  # the CAS and the balancer inherit it: the load is the user's, unknown
    endpoints, vip, network = lab_addresses(backend, servers)
    tls_files = make_tls_files(run_dir / "tls", vip, endpoints) if tls != "none" else None
    spec = BalancerSpec(driver=driver, persistence=resolve(preset), servers=endpoints, vip=vip, tls=tls,
                        tls_files=tls_files, preset=preset)  # fmt: skip
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    record = LabRecord.create(run_dir, "up", backend)
    lab = None
    try:
        lab = make_lab(spec, run_dir, network, record)
        lab.start()
        scheme, port = ("https", vip.https_port) if tls != "none" else ("http", vip.http_port)
        where = f"containers on {network.subnet}" if network else "loopback"
        say(f"caslab up: {servers} CAS behind {driver} ({preset}), {where}; config in {run_dir / 'balancer'}")
        say(f"  OWA          {scheme}://{vip.host}:{port}/owa/   (user1@caslab.test / caslab)")
        say(f"  MAPI / AB    {vip.host}:{vip.mapi_port} / {vip.ab_port}")
        for e in endpoints:
            say(f"  {e.name}        {e.host}  admin {e.admin_url}/caslab/stats")
        if tls_files:
            say(f"  CA           {tls_files.ca_pem}")
        raised = f"raised from {before:,} to" if files > before else "already"
        say(f"  open files   {files:,} per process ({raised} the hard limit; a proxied connection takes two)")
        say("  stop with Ctrl-C or `caslab down`")
        while not stopping:
            time.sleep(0.5)
    finally:
        with Deadline(record, 2).bounding():  # the lab is gone in TEARDOWN_S, or the deadline removes it
            if lab is not None:
                lab.stop()
            record.remove()
    say("caslab up: stopped")
    return 0


def down(say: Callable[[str], None] = print, everything: bool = False, timeout: float = OWNER_STOP_S) -> int:
    """Stop this checkout's `caslab up` lab, then remove what labs whose owner is gone left (`everything`:
    every lab of this checkout and every caslab lab on the Docker engine). Exit code 2 if a lab did not
    stop in `timeout`."""
    code, stopped = 0, 0
    for record in labs_here():
        if record.command != "up" or record.owner.gone():
            continue
        if ask_to_stop(record.owner, timeout):
            say(f"caslab down: stopped the lab of caslab up (pid {record.owner.pid}, {record.run_dir})")
            stopped += 1
        else:
            say(f"caslab down: pid {record.owner.pid} did not stop in {timeout:.0f}s")
            code = 2
    removed = clean(everything=everything)
    for line in removed:
        say(f"caslab down: removed {line}")
    if code == 0 and not stopped and not removed:
        say("caslab down: no lab is running here and none was left behind")
    return code
