"""The local farm: each mock CAS as its own `caslab cas` process on its own 127.x address.

`LocalFarm` starts the processes, waits until each answers its admin health URL, fires faults (stop,
start, health down/up/drain) and collects the ledgers. It is used by the local backend, by tests and by
benchmarks; it never leaves a process behind (stop() kills what did not exit on SIGTERM).

Every CAS of a farm is started with the farm's run id (`--run-id`), and a CAS is ready only when its
health URL answers with that id: an answer from another lab's CAS on the same address (whose process
holds the port this one could not bind) proves nothing about this one. The farm talks only to the CAS
that proved so (`proven`): a farm that failed to start must not close another lab's channels or read
its ledger as it stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from lab.model import CasEndpoint, ExchangeSettings, TlsFiles


class FarmError(RuntimeError):
    """The farm could not be started or reached."""


def http_get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def http_post_json(url: str, timeout: float = 5.0) -> dict:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_until_healthy(
    endpoint: CasEndpoint,
    deadline: float,
    process: subprocess.Popen | None = None,
    run_id: str | None = None,
) -> dict:
    """Poll the CAS's admin health URL until it answers (its admin port opens after all others); with
    `run_id`, until it answers with that run id, so that only this run's CAS counts. Returns the answer.
    FarmError if `process` exits first or the deadline passes; the message names another run that
    answered instead."""
    url = f"{endpoint.admin_url}/caslab/health"
    other = None
    while True:
        if process is not None and process.poll() is not None:
            raise FarmError(
                f"{endpoint.name} exited with code {process.returncode} while starting{_answered(url, other)}"
            )
        try:
            answer = http_get_json(url, timeout=1.0)
            if run_id is None or answer.get("run") == run_id:
                return answer
            other = answer
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise FarmError(f"{endpoint.name} did not answer {url} in time{_answered(url, other)}") from None
        time.sleep(0.05)


def _answered(url: str, answer: dict | None) -> str:
    if answer is None:
        return ""
    who = f"{answer.get('server')} of run {answer.get('run')!r} (pid {answer.get('pid')})"
    return f"; {url} is answered by {who}"


class LocalFarm:
    def __init__(
        self,
        endpoints: list[CasEndpoint],
        *,
        farm_key: bytes,
        run_dir: Path,
        time_scale: float = 1.0,
        key_seed: str | None = None,
        tls_files: TlsFiles | None = None,
        vip_host: str = "mail.caslab.test",
        exchange: ExchangeSettings | None = None,
        extra_args: list[str] | None = None,
        run_id: str | None = None,
        on_start: Callable[[str, int], None] | None = None,
    ) -> None:
        """`run_id` is what every CAS answers on its health URL (random unless given); `on_start(name,
        pid)` is called the moment each CAS process has started (the lab records it)."""
        self.endpoints = endpoints
        self.farm_key = farm_key
        self.run_dir = run_dir
        self.time_scale = time_scale
        self.key_seed = key_seed
        self.tls_files = tls_files
        self.vip_host = vip_host
        self.exchange = exchange or ExchangeSettings()  # the scenario's [farm.exchange], for every CAS
        self.extra_args = extra_args or []
        self.run_id = run_id or f"farm-{secrets.token_hex(4)}"
        self.on_start = on_start
        self.processes: dict[str, subprocess.Popen] = {}
        self.proven: set[str] = set()  # CAS whose health answered with this farm's run id
        self._ledger_next: dict[str, int] = {}
        self.ledger_rows: list[dict] = []
        # A sentence per CAS that ended without the lab stopping it, or whose ledger it could not read:
        # the rows it did not hand over are missing from the run's account.
        self.lost: list[str] = []

    def endpoint(self, name: str) -> CasEndpoint:
        for e in self.endpoints:
            if e.name == name:
                return e
        raise FarmError(f"no server {name!r} in this farm ({', '.join(e.name for e in self.endpoints)})")

    def _command(self, e: CasEndpoint) -> list[str]:
        cmd = [
            sys.executable, "-m", "lab.cli", "cas",
            "--name", e.name, "--run-id", self.run_id, "--host", e.host,
            "--http-port", str(e.http_port), "--https-port", str(e.https_port),
            "--mapi-port", str(e.mapi_port), "--ab-port", str(e.ab_port),
            "--admin-port", str(e.admin_port),
            "--farm-key", self.farm_key.hex(),
            "--time-scale", str(self.time_scale),
            "--vip-host", self.vip_host,
            "--log-level", "WARNING",
        ]  # fmt: skip
        if self.key_seed:
            cmd += ["--key-seed", self.key_seed]
        # Its IIS W3C log (u_exYYMMDD.log) beside its own log file, for `caslab scenario from-logs`.
        cmd += ["--w3c-log", str(self.run_dir / e.name)]
        if self.tls_files:
            cmd += ["--cert", str(self.tls_files.server_cert), "--key", str(self.tls_files.server_key)]
        return cmd + self.exchange.cas_args() + self.extra_args

    def start(self, names: list[str] | None = None, timeout: float = 20.0) -> None:
        """Start the named servers (all by default) and wait until each is healthy."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        todo = [self.endpoint(n) for n in names] if names else self.endpoints
        for e in todo:
            if e.name in self.processes and self.processes[e.name].poll() is None:
                continue
            log = open(self.run_dir / f"{e.name}.log", "ab")  # noqa: SIM115 - owned by the child
            self.processes[e.name] = subprocess.Popen(
                self._command(e), stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
            )
            log.close()
            self.proven.discard(e.name)
            if self.on_start:
                self.on_start(e.name, self.processes[e.name].pid)
            self._ledger_next[e.name] = 0  # a new process starts a new ledger
        deadline = time.monotonic() + timeout
        for e in todo:
            wait_until_healthy(e, deadline, self.processes[e.name], self.run_id)
            self.proven.add(e.name)

    def stop(self, names: list[str] | None = None, timeout: float = 5.0) -> None:
        """Stop the named servers (all by default): SIGTERM, then SIGKILL after `timeout`.
        Each first ends its open channels and hanging requests (their ledger rows are written then),
        and its ledger is collected, so a stopped CAS's rows are not lost."""
        chosen = names or list(self.processes)
        for name in chosen:
            if name in self.proven and self.processes[name].poll() is None:
                # A CAS that cannot answer has nothing more to hand out.
                with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                    http_post_json(f"{self.endpoint(name).admin_url}/caslab/close", timeout=timeout)
            self.collect_ledger(name)
        for name in chosen:
            proc = self.processes.get(name)
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in chosen:
            self.proven.discard(name)
            proc = self.processes.pop(name, None)
            if proc is None:
                continue
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self, name: str) -> None:
        """Stop one server abruptly, as a crash would (its unread ledger rows are collected first)."""
        self.collect_ledger(name)
        self.proven.discard(name)
        proc = self.processes.pop(name, None)
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()

    def set_health(self, name: str, value: str) -> None:
        e = self.endpoint(name)
        http_get_json(f"{e.admin_url}/caslab/fault?health={value}")

    def stats(self, name: str) -> dict:
        return http_get_json(f"{self.endpoint(name).admin_url}/caslab/stats")

    def collect_ledger(self, name: str | None = None) -> list[dict]:
        """Read new ledger rows of the named server (or all running ones) into `ledger_rows`: only of a
        CAS proven to be this farm's."""
        names = [name] if name else list(self.processes)
        new: list[dict] = []
        for n in names:
            proc = self.processes.get(n)
            if n not in self.proven or proc is None:
                continue
            if proc.poll() is not None:
                # Under gevent (Locust), its SIGCHLD handler may reap the CAS first: Popen then reads 0.
                code = f" with code {proc.returncode}" if proc.returncode else ""
                self.lost.append(f"{n} exited{code} without the lab stopping it (its log: {n}.log)")
                self.proven.discard(n)
                continue
            e = self.endpoint(n)
            while True:
                since = self._ledger_next.get(n, 0)
                try:
                    page = http_get_json(f"{e.admin_url}/caslab/ledger?since={since}", timeout=10)
                except (OSError, urllib.error.URLError, ValueError) as err:
                    self.lost.append(f"the lab could not read {n}'s ledger past row {since}: {err}")
                    break
                new.extend(page["rows"])
                self._ledger_next[n] = page["next"]
                if not page["rows"]:
                    break
        self.ledger_rows.extend(new)
        return new

    def __enter__(self) -> LocalFarm:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
