"""What would become of a production address a rewrite rule missed, were the safety check not there.

Run only inside a network namespace with nothing but loopback (`unshare -n`, then `ip link set lo up`;
tests/test_userconfig_runs.py does): a reader with a deliberate bug leaves the last server of the
production file on its production address. The script shows (1) that adopting the file refuses that
line, and (2) that HAProxy run on the unchecked file anyway cannot reach the address from here. It
prints one JSON object: the refusal, HAProxy's check of that server, and a direct connection's error.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.balancers.drivers.haproxy import haproxy_binary
from lab.balancers.userconfig import ConfigRefused, Place
from lab.balancers.userconfig.haproxy import HAProxyReader
from lab.certs import make_tls_files
from lab.model import Vip, local_farm

PRODUCTION = Path(__file__).parent / "exchange-single-vip.cfg"
MISSED = "    server exch03 10.20.0.23:59532 check"  # left as the user wrote it
ADDRESS = ("10.20.0.23", 59532)


class MissesOneServer(HAProxyReader):
    """A reader with a bug: it leaves the last server of the file as the user wrote it."""

    def rewrite(self, source, place):
        adopted = super().rewrite(source, place)
        lines = adopted.main.text.splitlines()
        last = max(i for i, line in enumerate(lines) if line.strip().startswith("server exch03"))
        lines[last] = MISSED
        main = dataclasses.replace(adopted.main, text="\n".join(lines) + "\n")
        return dataclasses.replace(adopted, files=(main, *adopted.files[1:]))


def main() -> None:
    interfaces = sorted(name for _index, name in socket.if_nameindex())  # of this network namespace
    if interfaces != ["lo"]:
        sys.exit(f"refusing to run outside a network namespace with only loopback (interfaces: {interfaces})")
    folder = Path(tempfile.mkdtemp())
    vip = Vip()
    servers = local_farm(3)
    place = Place(tuple(servers), vip, make_tls_files(folder / "tls", vip, servers), folder / "balancer")
    reader = MissesOneServer()
    try:
        reader.adopt(PRODUCTION, place)
        refusal = None
    except ConfigRefused as err:
        refusal = [str(p) for p in err.problems]
    unchecked = reader.rewrite(reader.open(PRODUCTION, place), place)  # what the safety check stopped
    place.folder.mkdir()
    (place.folder / "haproxy.cfg").write_text(unchecked.main.text)
    haproxy = subprocess.Popen(
        [haproxy_binary(), "-db", "-f", "haproxy.cfg"], cwd=place.folder, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        check = wait_for_check(place.folder / "haproxy.sock")
    finally:
        haproxy.terminate()
        haproxy.wait(10)
    try:
        socket.create_connection(ADDRESS, timeout=2).close()
        connect_error = None
    except OSError as err:
        connect_error = err.errno
    print(json.dumps({"refusal": refusal, "check": check, "connect_errno": connect_error}))


def wait_for_check(sock_path: Path, timeout: float = 20.0) -> dict[str, str]:
    """HAProxy's first finished check of the missed server (bk_ab/exch03)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as admin:
                admin.connect(str(sock_path))
                admin.sendall(b"show stat\n")
                text = b"".join(iter(lambda: admin.recv(65536), b"")).decode().lstrip("# ")
        except OSError:
            time.sleep(0.1)
            continue
        for row in csv.DictReader(io.StringIO(text)):
            if (row["pxname"], row["svname"]) == ("bk_ab", "exch03") and row["check_status"] not in (
                "",
                "INI",
            ):
                return {k: row[k] for k in ("status", "check_status", "last_chk", "addr")}
        time.sleep(0.1)
    return {}


if __name__ == "__main__":
    main()
