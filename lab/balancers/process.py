"""What the drivers that run a real local process share (HAProxy, nginx, Envoy, Traefik): config files,
logs and sockets in run_dir/balancer/, the binary's own config check, readiness from the kernel's table of
listening sockets, and stopping the whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

from lab.balancers import Balancer, BalancerError
from lab.model import BalancerSpec


class ProcessBalancer(Balancer):
    """A balancer that is one local process, run in the foreground with its files in run_dir/balancer/.

    Subclasses give `command()` and may extend `wait_ready` with their own readiness signal.
    Readiness starts with the kernel's table of listening sockets (/proc/net/tcp), not with test
    connections: a connection to a TCP listener would reach a CAS and be counted.
    """

    def __init__(self, spec: BalancerSpec, run_dir: Path) -> None:
        super().__init__(spec, run_dir)
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def validate_command(self) -> list[str] | None:
        """The binary's own config check (haproxy -c, nginx -t, envoy --mode validate), if it has one."""
        return None

    def validate(self) -> None:
        """Write the config and have the real binary check it; BalancerError with its output if it
        refuses."""
        self.write_config()
        command = self.validate_command()
        if command is None:
            return
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.config_dir, timeout=60)
        if done.returncode != 0:
            raise BalancerError(f"{self.name} rejects its config:\n{done.stdout}{done.stderr}".rstrip())

    @property
    def log_path(self) -> Path:
        return self.config_dir / f"{self.name}.log"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise BalancerError(f"{self.name} is running already")
        self.write_config()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.config_dir,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the process listens on every VIP address and port of the layout."""
        wanted = self.listen_addresses()
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            missing = wanted - self.listening()
            if not missing:
                return
            if time.monotonic() > deadline:
                where = ", ".join(f"{h}:{p}" for h, p in sorted(missing))
                raise BalancerError(
                    f"{self.name} did not listen on {where} in {timeout:g} s; see {self.log_path}"
                )
            time.sleep(0.02)

    def listening(self) -> set[tuple[str, int]]:
        """The listening TCP sockets that the balancer's process or its children (nginx's workers) hold.
        A listener of another process on the same address and port (another lab's balancer, which
        HAProxy and Envoy let share the port through SO_REUSEPORT) proves nothing about this one."""
        if self.process is None:
            return set()
        try:
            tree = [
                self.process.pid,
                *(c.pid for c in psutil.Process(self.process.pid).children(recursive=True)),
            ]
        except psutil.NoSuchProcess:
            return set()
        return listening_sockets(inodes=socket_inodes(tree))

    def _check_alive(self) -> None:
        if self.process is None:
            raise BalancerError(f"{self.name} was not started")
        if self.process.poll() is not None:
            raise BalancerError(f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}")

    def stopped(self) -> str | None:
        if self.process is None or self.process.poll() is None:
            return None
        # Once Locust has patched this process, gevent's SIGCHLD handler may reap the balancer before
        # Popen does, and Popen then reads its exit code as 0: a 0 says only that it exited.
        code = self.process.returncode
        return f"{self.name} exited{f' with code {code}' if code else ''} (its log: {self.log_path})"

    def log_count(self, message: str) -> int:
        """How many lines of the balancer's log say `message`, in any case. Read line by line: a balancer
        out of open files can log a line per refused accept (Traefik wrote 246,000 in five seconds)."""
        wanted = message.lower().encode()
        try:
            with self.log_path.open("rb") as log:
                return sum(wanted in line.lower() for line in log)
        except FileNotFoundError:
            return 0

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


def listening_table(table_path: str = "/proc/net/tcp") -> dict[int, tuple[str, int]]:
    """Socket inode -> (IPv4 address, port) of every TCP socket in LISTEN state in this process's network
    namespace, or in another process's one through /proc/<pid>/net/tcp."""
    out = {}
    with open(table_path) as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            octets = bytes.fromhex(addr_hex)[::-1]  # the kernel prints the address little-endian
            out[int(fields[9])] = (".".join(str(b) for b in octets), int(port_hex, 16))
    return out


def listening_sockets(
    table_path: str = "/proc/net/tcp", inodes: set[int] | None = None
) -> set[tuple[str, int]]:
    """(IPv4 address, port) of every listening TCP socket (see listening_table); with `inodes`, of those
    among them only (the sockets some processes hold, see socket_inodes)."""
    table = listening_table(table_path)
    return {where for inode, where in table.items() if inodes is None or inode in inodes}


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """The inodes of the sockets the processes hold open (their /proc/<pid>/fd links "socket:[N]").
    A process that has exited, or whose descriptors this user may not read, holds none here."""
    out = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:  # closed since the listing
                continue
            if link.startswith("socket:["):
                out.add(int(link[8:-1]))
    return out
