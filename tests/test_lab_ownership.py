"""A lab owns what it starts (lab.backends: owner, state, janitor, addresses, teardown): its CAS prove they
are this run's, its balancer is ready only when its own process listens, a run whose addresses another lab
holds stops before its load and names that lab, what a killed run left is removed by the next run or
`caslab down`, and teardown ends within its stated bound.

Tests that start servers run in a private network namespace (see the helper rules): the addresses are
127.0.23x.y, away from the lab's default 127.0.1.x.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import psutil
import pytest

from caslab.vocab import METHODS
from lab.backends.addresses import AddressesTaken, check_free
from lab.backends.janitor import clean
from lab.backends.owner import Owner, start_time
from lab.backends.state import STATE_DIR, LabRecord, labs_here
from lab.backends.teardown import EXIT_BOUND_S
from lab.balancers import BalancerError
from lab.balancers.presets import resolve
from lab.balancers.process import ProcessBalancer, listening_sockets
from lab.farm import FarmError, LocalFarm, wait_until_healthy
from lab.model import BalancerSpec, Vip, local_farm

CASLAB = [sys.executable, "-m", "lab.cli"]


def spec_on(base: str, driver: str = "haproxy") -> BalancerSpec:
    return BalancerSpec(
        driver, resolve("none-all"), local_farm(2, base), Vip(host=f"{base}.1"), preset="none-all"
    )


def sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "300"])


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout of its own: its `.caslab/labs/` holds only this test's labs."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; killed afterwards if still there."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def dead_owner(processes: list[subprocess.Popen]) -> Owner:
    """The owner of a lab that was killed: a process that ran and is gone."""
    process = sleeper()
    owner = Owner(process.pid, start_time(process.pid), socket.gethostname(), str(Path.cwd()))
    process.kill()
    process.wait()
    return owner


# --- who owns a lab -----------------------------------------------------------------------------------


def test_an_owner_is_gone_only_when_its_process_with_its_start_time_is(processes):
    me = Owner.this_process()
    assert not me.gone()
    assert dead_owner(processes).gone()
    assert Owner(me.pid, me.started - 100, me.host, me.checkout).gone()  # the pid, handed to another
    assert not Owner(me.pid + 10**6, 0.0, "another-host", me.checkout).gone()  # never known elsewhere
    assert Owner.from_labels(me.labels()) == me


def test_the_janitor_kills_what_a_lab_whose_owner_is_gone_left_and_nothing_else(checkout, processes):
    cas, balancer, stranger = sleeper(), sleeper(), sleeper()
    processes += [cas, balancer, stranger]
    orphan = LabRecord("quickstart-1-dead", "run", "local", str(checkout / "r1"), dead_owner(processes))
    orphan.save()
    orphan.started("CAS01", cas.pid)
    orphan.started("balancer", balancer.pid)
    # a recorded pid whose start time is not the stranger's: that process is not the lab's
    orphan.processes["CAS02"] = {"pid": stranger.pid, "started": start_time(stranger.pid) - 50}
    orphan.save()
    owner = sleeper()
    processes.append(owner)
    owned = Owner(owner.pid, start_time(owner.pid), socket.gethostname(), str(checkout))
    LabRecord("quickstart-2-live", "run", "local", str(checkout / "r2"), owned).save()

    removed = clean(docker=False)

    assert removed == [
        f"lab quickstart-1-dead (run, local, owner pid {orphan.owner.pid} on {socket.gethostname()}): "
        f"CAS01 pid {cas.pid}, balancer pid {balancer.pid}"
    ]
    assert not psutil.pid_exists(cas.pid) and not psutil.pid_exists(balancer.pid)  # killed and reaped
    assert stranger.poll() is None and owner.poll() is None
    assert [r.run_id for r in labs_here()] == ["quickstart-2-live"]

    removed = clean(everything=True, docker=False)  # `caslab down --all`: the live owner is asked to stop
    assert removed == [f"lab quickstart-2-live (run, local, owner {owned}): no process was left"]
    assert owner.wait(5) == -signal.SIGTERM
    assert labs_here() == [] and stranger.poll() is None


def test_a_lab_record_names_its_run_and_lives_in_the_checkout(checkout):
    record = LabRecord.create(checkout / "reports" / "my farm-20260101T000000Z", "run", "local")
    assert re.fullmatch(r"my-farm-20260101T000000Z-[0-9a-f]{4}", record.run_id)
    assert record.path == checkout / STATE_DIR / f"{record.run_id}.json"
    assert json.loads(record.path.read_text())["owner"]["pid"] == os.getpid()
    record.remove()
    assert labs_here() == []


# --- proofs of who listens ----------------------------------------------------------------------------


class Foreground(ProcessBalancer):
    """A stand-in balancer: the process given, on the spec's layout."""

    name = "foreground"
    methods = frozenset(METHODS)
    argv: ClassVar[list[str]] = []

    def render(self) -> dict[str, str]:
        return {}

    def command(self) -> list[str]:
        return self.argv

    def version(self) -> str:
        return "0"

    def counters(self) -> dict[str, int]:
        return {}


LISTEN_ON = """
import socket, sys, time
held = []
for where in sys.argv[1:]:
    host, port = where.split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, int(port)))
    s.listen()
    held.append(s)
time.sleep(300)
"""


def reuseport_listeners(sockets: set[tuple[str, int]]) -> list[socket.socket]:
    """Listeners on the sockets that others may share (SO_REUSEPORT, as HAProxy and Envoy bind)."""
    out = []
    for host, port in sockets:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, port))
        s.listen()
        out.append(s)
    return out


def test_a_balancer_is_ready_only_when_its_own_process_listens_on_the_vip(tmp_path):
    spec = spec_on("127.0.231")
    wanted = {(listener.host, listener.port) for listener in Foreground(spec, tmp_path).layout.listeners}
    others = reuseport_listeners(wanted)  # another lab's balancer on the same VIP
    try:
        assert wanted <= listening_sockets()
        idle = Foreground(spec, tmp_path)
        idle.argv = ["sleep", "300"]
        idle.start()
        try:
            with pytest.raises(BalancerError, match=r"did not listen on 127\.0\.231\.1:"):
                idle.wait_ready(timeout=1)
        finally:
            idle.stop()

        listening = Foreground(spec, tmp_path)
        listening.argv = [sys.executable, "-c", LISTEN_ON, *(f"{h}:{p}" for h, p in wanted)]
        listening.start()
        try:
            listening.wait_ready(timeout=20)
            assert listening.listening() == wanted
        finally:
            listening.stop()
    finally:
        for s in others:
            s.close()


def test_a_cas_is_ready_only_when_it_answers_with_the_run_id(make_farm):
    make_farm("127.0.232", servers=1, run_id="another-run-1a2b")
    cas = local_farm(1, "127.0.232")[0]
    with pytest.raises(FarmError, match=r"answered by CAS01 of run 'another-run-1a2b' \(pid \d+\)"):
        wait_until_healthy(cas, time.monotonic() + 0.5, run_id="this-run-3c4d")
    assert (
        wait_until_healthy(cas, time.monotonic() + 5, run_id="another-run-1a2b")["run"] == "another-run-1a2b"
    )


def test_a_farm_that_did_not_prove_a_cas_its_own_never_asks_that_address_anything(tmp_path, monkeypatch):
    """A farm whose CAS lost its address to another lab's (a start at the same moment) stops without
    closing that lab's channels or reading its ledger: it asks nothing of a CAS that did not answer
    with its run id."""
    asked = []
    monkeypatch.setattr("lab.farm.http_post_json", lambda url, timeout=5.0: asked.append(url) or {})
    monkeypatch.setattr("lab.farm.http_get_json", lambda url, timeout=5.0: asked.append(url) or {})
    farm = LocalFarm(local_farm(1, "127.0.238"), farm_key=b"k" * 32, run_dir=tmp_path, run_id="this-run")
    farm.processes["CAS01"] = sleeper()  # still running: it has not yet seen that its ports are taken
    farm.stop(timeout=5)
    assert asked == [] and farm.processes == {}


def test_a_lab_whose_addresses_are_taken_names_who_holds_them_and_where_to_go(make_farm):
    make_farm("127.0.233", servers=1, run_id="the-first-lab-1a2b")
    vip = socket.socket()
    vip.bind(("127.0.233.1", 8080))
    vip.listen()
    try:
        with pytest.raises(AddressesTaken) as refused:
            check_free(spec_on("127.0.233"))
    finally:
        vip.close()
    message = str(refused.value)
    me = os.getpid()
    assert f"run the-first-lab-1a2b: CAS01 (pid {me}) on 127.0.233.1, 127.0.233.11" in message
    assert "CASLAB_LOCAL_NET=127.0.22 caslab run" in message
    check_free(spec_on("127.0.234"))  # nothing there: no refusal


# --- whole runs ---------------------------------------------------------------------------------------

RUN_NET = "127.0.235"
ENV = {**os.environ, "CASLAB_LOCAL_NET": RUN_NET, "PYTHONUNBUFFERED": "1"}


def start_run(out: Path, cwd: Path, duration: str, *options: str) -> tuple[subprocess.Popen, list[str]]:
    """`caslab run quickstart` in the background, returned once its load runs (with what it said)."""
    command = [*CASLAB, "run", "quickstart", "--duration", duration, "--out", str(out), *options]
    run = subprocess.Popen(
        command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    said = []
    for line in run.stdout:
        said.append(line)
        if line.startswith(("phase: ramp", "phase: load")):
            return run, said
    run.wait()
    logs = "".join(log.read_text() for log in out.glob("*/lab.log"))
    raise AssertionError(f"the run never reached its load (exit {run.returncode}):\n{''.join(said)}\n{logs}")


def lab_processes(cwd: Path) -> list[psutil.Process]:
    """The processes the state files of the checkout record, that run."""
    out = []
    for path in (cwd / STATE_DIR).glob("*.json"):
        for info in json.loads(path.read_text())["processes"].values():
            out.append(psutil.Process(info["pid"]))
    return out


def lab_addresses_listening() -> set[str]:
    return {host for host, _port in listening_sockets() if host.startswith(RUN_NET + ".")}


@pytest.fixture
def runs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for run in started:
        if run.poll() is None:
            run.kill()
            run.wait()


@pytest.mark.slow
def test_runs_on_taken_addresses_stop_before_their_load_naming_the_first_whose_verdict_stands(tmp_path, runs):
    first, _ = start_run(tmp_path / "first", tmp_path, "20s", "--driver", "haproxy")
    runs.append(first)
    (state,) = (tmp_path / STATE_DIR).glob("*.json")
    first_id = json.loads(state.read_text())["run_id"]
    refusals = []
    for driver, preset in [("envoy", "recommended"), ("haproxy", "article"), ("nginx", "recommended"),
                           ("traefik", "none-all")]:  # fmt: skip
        command = [*CASLAB, "run", "quickstart", "--driver", driver, "--preset", preset, "--duration", "3s"]
        second = subprocess.run(
            [*command, "--out", str(tmp_path / driver)], cwd=tmp_path, env=ENV, capture_output=True, text=True
        )
        refusals.append((driver, second.returncode, second.stdout))
        (run_dir,) = (tmp_path / driver).iterdir()
        assert not (run_dir / "farm").exists() and not (run_dir / "balancer" / f"{driver}.log").exists()
    up = subprocess.run([*CASLAB, "up", "--out", str(tmp_path / "up")], cwd=tmp_path, env=ENV,
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    refusals.append(("up", up.returncode, up.stderr))
    assert first.poll() is None, "the first run stopped while the others were refused"
    output, _ = first.communicate(timeout=120)

    for who, code, said in refusals:
        assert code == 2, (who, said)
        assert f"run {first_id}: CAS01 (pid " in said, (who, said)
        assert "CASLAB_LOCAL_NET=127.0.22" in said, (who, said)
    assert first.returncode == 0, output
    (summary,) = (tmp_path / "first").glob("*/summary.json")
    assert json.loads(summary.read_text())["verdict"] == "pass"
    assert list((tmp_path / STATE_DIR).glob("*.json")) == []


@pytest.mark.slow
def test_what_a_sigkilled_run_left_is_removed_by_caslab_down(tmp_path, runs):
    run, _ = start_run(tmp_path / "reports", tmp_path, "60s", "--driver", "haproxy")
    runs.append(run)
    left = lab_processes(tmp_path)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert len(left) == 4 and all(p.is_running() for p in left)  # 3 CAS and HAProxy, orphaned
    assert lab_addresses_listening() == {f"{RUN_NET}.1", f"{RUN_NET}.11", f"{RUN_NET}.12", f"{RUN_NET}.13"}

    down = subprocess.run(
        [*CASLAB, "down"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60
    )

    assert down.returncode == 0, down.stdout + down.stderr
    assert (
        f"(run, local, owner pid {run.pid} on {socket.gethostname()}): CAS01 pid {left[0].pid}" in down.stdout
    )
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in left)
    assert lab_addresses_listening() == set()
    assert list((tmp_path / STATE_DIR).glob("*.json")) == []


@pytest.mark.slow
def test_what_a_sigkilled_run_left_is_removed_by_the_next_run_which_says_so(tmp_path, runs):
    run, _ = start_run(tmp_path / "killed", tmp_path, "60s", "--driver", "nginx")
    runs.append(run)
    (state,) = (tmp_path / STATE_DIR).glob("*.json")
    killed_id = json.loads(state.read_text())["run_id"]
    left = lab_processes(tmp_path)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert all(p.is_running() for p in left)

    command = [
        *CASLAB,
        "run",
        "quickstart",
        "--driver",
        "haproxy",
        "--duration",
        "3s",
        "--out",
        str(tmp_path / "next"),
    ]
    after = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)

    assert after.returncode == 0, after.stdout + after.stderr
    said = f"removed what a lab whose owner is gone left: lab {killed_id} (run, local, owner pid {run.pid}"
    assert said in after.stdout, after.stdout
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in left)
    assert list((tmp_path / STATE_DIR).glob("*.json")) == []


@pytest.mark.slow
def test_teardown_ends_within_its_bound_when_the_farm_does_not_answer(tmp_path, runs):
    run, _ = start_run(tmp_path / "reports", tmp_path, "60s", "--driver", "haproxy")
    runs.append(run)
    left = lab_processes(tmp_path)
    for cas in left:
        if "cas" in cas.cmdline():
            cas.suspend()  # SIGSTOP: its admin URL will not answer the lab's teardown
    interrupted = time.monotonic()
    run.send_signal(signal.SIGINT)
    output, _ = run.communicate(timeout=EXIT_BOUND_S + 30)
    took = time.monotonic() - interrupted

    assert run.returncode == 2, output
    assert took <= EXIT_BOUND_S, f"exited {took:.0f} s after Ctrl-C"
    assert "teardown took more than 45 s; removing what is left" in output
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in left)
    assert lab_addresses_listening() == set()
    assert list((tmp_path / STATE_DIR).glob("*.json")) == []
