"""A local lab owns its addresses: before it starts anything, every address and port it will listen on
must be free. When another lab holds them, the lab stops (exit 2) with a message that names that lab
and the way around it (CASLAB_LOCAL_NET), instead of running its clients against the other lab's farm.

The other lab is named by what its processes say of themselves: a CAS's health URL answers with its
run id and pid, the kernel's tables tell which process holds a listening socket (/proc/net/tcp and
/proc/<pid>/fd), and a process's parent and working folder tell who started it and from where.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import psutil

from lab.balancers.process import listening_table, socket_inodes
from lab.model import BalancerSpec

FALLBACK_NETS = [f"127.0.{n}" for n in range(22, 255)]  # suggested when the lab's own are taken


class AddressesTaken(RuntimeError):
    """Another lab (or any other process) listens where this lab must; the message names it."""


def lab_sockets(spec: BalancerSpec, vip: bool = True) -> set[tuple[str, int]]:
    """Every (address, port) the lab listens on: each CAS's five ports and, with `vip`, the VIP's on
    each of its addresses and its stats port."""
    out = set()
    for e in spec.servers:
        out |= {(e.host, port) for port in (e.http_port, e.https_port, e.mapi_port, e.ab_port, e.admin_port)}
    if not vip:
        return out
    vip = spec.vip
    for host in vip.hosts(spec.topology):
        out |= {(host, port) for port in (vip.http_port, vip.https_port, vip.mapi_port, vip.ab_port)}
    return out | {(vip.host, vip.stats_port)}


def taken(wanted: set[tuple[str, int]], table: dict[int, tuple[str, int]] | None = None) -> dict:
    """The wanted sockets something listens on already, each with the inodes of the listeners (a
    listener on 0.0.0.0 takes the port on every address)."""
    table = listening_table() if table is None else table
    out: dict[tuple[str, int], set[int]] = {}
    for inode, (host, port) in table.items():
        for socket in wanted:
            if socket[1] == port and host in (socket[0], "0.0.0.0"):
                out.setdefault(socket, set()).add(inode)
    return out


def check_free(spec: BalancerSpec, command: str = "caslab run", vip: bool = True) -> None:
    """AddressesTaken, naming who holds them and where this lab could go instead, if any of the lab's
    addresses (with `vip`, the VIP's too) is taken."""
    wanted = lab_sockets(spec, vip)
    held = taken(wanted)
    if not held:
        return
    examples = ", ".join(f"{h}:{p}" for h, p in sorted(held)[:4])
    lines = [
        f"this lab's addresses are taken ({len(held)} of {len(wanted)}: {examples}, ...), so it stops "
        "before starting anything. They are held by:",
        *(f"  {who}" for who in holders(spec, held)),
        "Stop that lab first (Ctrl-C where it runs; `caslab down` in its checkout removes a lab whose owner "
        "is gone), or run this one beside it on other addresses: " + _way_around(wanted, spec, command),
    ]
    raise AddressesTaken("\n".join(lines))


@dataclass
class Holder:
    """A process that listens where the lab must, as far as it can be told."""

    pid: int
    name: str  # a CAS's own name when it answered its health URL, else the process's name
    run: str | None = None  # the run id a CAS answered (or was started) with
    owner: int | None = None  # the caslab process that started it, while that runs
    owner_command: str = ""
    folder: str = ""  # where it runs: a CAS in its lab's checkout, a balancer in its run folder
    hosts: set[str] = field(default_factory=set)


def holders(spec: BalancerSpec, held: dict[tuple[str, int], set[int]]) -> list[str]:
    """One line per lab (or other process) that holds some of `held`: its run id (a CAS's health answer
    or command line), the processes with their pids and addresses, and who started them or that their
    owner is gone."""
    owners = _socket_owners({inode for inodes in held.values() for inode in inodes})
    found: dict[int, Holder] = {}
    for (host, _port), inodes in held.items():
        for inode in inodes:
            pid = owners.get(inode, 0)
            found.setdefault(pid, _holder(pid)).hosts.add(host)
    for e in spec.servers:  # a CAS says which run it is of, also when its sockets cannot be seen
        answer = _health(f"{e.admin_url}/caslab/health") if (e.host, e.admin_port) in held else None
        if answer and answer.get("pid"):
            holder = found.setdefault(int(answer["pid"]), _holder(int(answer["pid"])))
            holder.name, holder.run = str(answer.get("server")), answer.get("run") or holder.run
            holder.hosts.add(e.host)
    groups: dict[object, list[Holder]] = {}
    for holder in sorted(found.values(), key=lambda h: h.pid):
        groups.setdefault(holder.owner or holder.run or holder.pid, []).append(holder)
    return [_in_words(group) for group in groups.values()]


def _holder(pid: int) -> Holder:
    """What the kernel says of a process: its name, run id, folder and the caslab process above it."""
    if pid == 0:
        return Holder(0, "a process this user cannot see")
    try:
        process = psutil.Process(pid)
        holder = Holder(pid, process.name(), _option(process.cmdline(), "--run-id"), folder=process.cwd())
        parent = process.parent()
        command = " ".join(parent.cmdline()) if parent is not None and parent.pid != 1 else ""
    except psutil.Error:
        return Holder(pid, "a process that has exited")
    if "lab.cli" in command or "caslab" in command:
        holder.owner, holder.owner_command = parent.pid, command
    return holder


def _in_words(group: list[Holder]) -> str:
    first = group[0]
    run = next((h.run for h in group if h.run), None)
    members = ", ".join(f"{h.name} (pid {h.pid})" if h.pid else h.name for h in group)
    hosts = ", ".join(sorted({host for h in group for host in h.hosts}, key=ipaddress.ip_address))
    text = f"run {run}: {members} on {hosts}" if run else f"{members} on {hosts}"
    if first.owner:
        return f"{text}; started by pid {first.owner} ({_short(first.owner_command)}) in {first.folder}"
    if run:
        return f"{text}; its owner is gone (`caslab down` in {first.folder} removes it)"
    return f"{text}; running in {first.folder}" if first.folder else text


def _short(command: str, limit: int = 70) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."


def _option(cmdline: list[str], name: str) -> str | None:
    for i, arg in enumerate(cmdline[:-1]):
        if arg == name:
            return cmdline[i + 1]
    return None


def _health(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            answer = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


def _socket_owners(inodes: set[int]) -> dict[int, int]:
    """Socket inode -> pid of a process that holds it, for the inodes some visible process holds."""
    out: dict[int, int] = {}
    for pid in psutil.pids():
        for inode in socket_inodes([pid]) & inodes:
            out.setdefault(inode, pid)
    return out


def _way_around(wanted: set[tuple[str, int]], spec: BalancerSpec, command: str) -> str:
    """CASLAB_LOCAL_NET with the first 127.0.N on which all of the lab's sockets are free."""
    table = listening_table()
    here = spec.vip.host.rsplit(".", 1)[0]
    for net in FALLBACK_NETS:
        if net == here:
            continue
        moved = {(f"{net}.{host.rsplit('.', 1)[1]}", port) for host, port in wanted}
        if not taken(moved, table):
            return f"CASLAB_LOCAL_NET={net} {command} ... (moves the farm and the VIP to {net}.x)"
    return "CASLAB_LOCAL_NET=127.0.N (moves the farm and the VIP to 127.0.N.x)"
