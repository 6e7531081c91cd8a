"""The capacity check before a run (lab.capacity): the estimate from users per client kind, the open-file
limit raised to the hard limit, and a scenario that cannot fit refused before anything starts."""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import background
import psutil
from namespace import isolated

from lab.balancers.userconfig import ConnectionLimit
from lab.candidate import prepare_candidate
from lab.capacity import COSTS, balancer_note, check, estimate, raise_fd_limit
from lab.model import Vip, local_farm
from lab.scenario import load_scenario, parse_scenario

REPO = Path(__file__).resolve().parents[1]
HUGE = """
name = "huge"
[[population]]
kind = "tenant-nat"
users = 100000000
source_ips = 100
"""


def tenant(users: int, source_ips: int, tls: str = "none") -> str:
    return f"""
name = "tenant"
[farm]
servers = 4
tls = "{tls}"
[[population]]
kind = "tenant-nat"
users = {users}
source_ips = {source_ips}
clients = {{ outlook2010-rpchttp = 1.0 }}
"""


def test_bundled_scenarios_fit_a_small_machine() -> None:
    for name in ("quickstart", "hosted-tenant-recommended", "mobile-carrier-churn"):
        need = estimate(load_scenario(name), workers=1)
        assert check(need, fd_limit=4096, available_mb=2048) == [], name


def test_the_estimate_counts_each_kinds_connections_and_memory() -> None:
    need = estimate(parse_scenario(tenant(1000, 10)), workers=1)
    outlook = COSTS["outlook2010-rpchttp"]
    assert (need.users, need.clients, need.connections) == (1000, 1000, 1000 * outlook.fds)
    assert need.cas_fds - need.connections // 4 == need.loadgen_fds - need.connections  # the same spare
    https = estimate(parse_scenario(tenant(1000, 10, tls="offload")), workers=1)
    extra_kb = 1000 * (outlook.tls_loadgen_kb - outlook.loadgen_kb + outlook.tls_cas_kb - outlook.cas_kb)
    assert abs((https.memory_mb - need.memory_mb) * 1024 - extra_kb) < 1


def test_workers_spread_descriptors_down_to_one_address_group() -> None:
    spread = tenant(8000, 8)  # eight NAT addresses: eight groups of 1,000 Outlooks
    one, four = (estimate(parse_scenario(spread), workers=w).loadgen_fds for w in (1, 4))
    assert one - four == 5 * 8000 - 5 * 2000
    single = tenant(8000, 1)  # one NAT address: its users stay in one worker however many there are
    assert estimate(parse_scenario(single), workers=4).loadgen_fds == one


def test_remote_workers_carry_their_share_of_the_load_generators_memory_and_files() -> None:
    """Users are dealt to local and remote workers alike (`caslab run --remote-workers`): what the remote
    ones hold is not this machine's, while the farm and the balancer still are."""
    scenario = parse_scenario(tenant(8000, 8))
    here = estimate(scenario, workers=1)
    half = estimate(scenario, workers=1, remote_workers=1)
    loadgen_mb = 8000 * COSTS["outlook2010-rpchttp"].loadgen_kb / 1024
    assert abs((here.memory_mb - half.memory_mb) - loadgen_mb / 2) < 0.01
    assert half.loadgen_fds == estimate(scenario, workers=2).loadgen_fds
    assert (half.cas_fds, half.balancer_fds) == (here.cas_fds, here.balancer_fds)
    assert "remote workers' users not counted" in str(half) and "remote" not in str(here)


def test_a_scenario_that_cannot_fit_is_refused_with_why() -> None:
    need = estimate(parse_scenario(HUGE), workers=1)
    problems = check(need, fd_limit=20000, available_mb=8000)
    assert len(problems) == 3
    assert problems[0].startswith(f"it needs about {need.memory_mb:,.0f} MB and 8,000 MB are available")
    assert "load generator process needs about" in problems[1] and "each CAS needs about" in problems[2]
    fits = dataclasses.replace(need, memory_mb=100, loadgen_fds=100, cas_fds=100)
    assert check(fits, fd_limit=20000, available_mb=8000) == []


def test_a_balancer_short_of_descriptors_is_a_note_not_a_refusal() -> None:
    need = estimate(load_scenario("tenant-10k"), workers=1)  # 17,600 held connections: two files each
    assert need.connections == 17_600 and need.balancer_fds > 20_000
    assert check(need, fd_limit=20_000, available_mb=8000) == []
    assert balancer_note(need, fd_limit=20_000) == (
        f"the balancer needs about {need.balancer_fds:,} open files for the 17,600 connections the users "
        "hold (two each) and a process here may open 20,000: connections beyond about 10,000 wait in its "
        "accept queue or are refused"
    )
    assert balancer_note(need, fd_limit=1_048_576) is None


def test_a_balancer_of_several_processes_has_the_files_of_all() -> None:
    """nginx's workers each have the limit (lab/balancers/drivers/nginx.py); the external balancer is the
    user's, whose files are not this machine's."""
    need = estimate(load_scenario("tenant-10k"), workers=1)  # 35,456 files
    assert balancer_note(need, fd_limit=20_000, processes=2) is None
    assert balancer_note(need, fd_limit=10_000, processes=3) == (
        f"the balancer needs about {need.balancer_fds:,} open files for the 17,600 connections the users "
        "hold (two each) and each of its 3 processes here may open 10,000: connections beyond about 15,000 "
        "wait in its accept queue or are refused"
    )
    assert balancer_note(need, fd_limit=100, processes=0) is None


def test_a_users_file_that_holds_fewer_connections_than_the_users_is_a_note_wherever_it_runs() -> None:
    """nginx's worker_connections, as the user's file sets them, are said first when the users'
    connections exceed them; a file with fewer workers than cores has only their files."""
    need = estimate(load_scenario("tenant-10k"), workers=1)  # 35,456 connections in the balancer
    words = "worker_processes 2 (line 3), worker_connections 4096 (line 8)"
    assert balancer_note(need, fd_limit=20_000, processes=2, file_limit=ConnectionLimit(2, 4096, words)) == (
        "the balancer needs about 35,200 connections for the 17,600 the users hold (two "
        f"each) and holds 8,192 at most as the file sets it ({words}): connections beyond about 4,096 "
        "wait in its accept queue or are refused, here and wherever the file runs"
    )
    one_worker = ConnectionLimit(1, 65_536, "worker_processes 1 (nginx's default), ...")
    assert balancer_note(need, fd_limit=20_000, processes=2, file_limit=one_worker) == (
        f"the balancer needs about {need.balancer_fds:,} open files for the 17,600 connections the users "
        "hold (two each) and a process here may open 20,000: connections beyond about 10,000 wait in its "
        "accept queue or are refused"
    )
    enough = ConnectionLimit(2, 65_536, "...")
    assert balancer_note(need, fd_limit=20_000, processes=1, file_limit=enough) is None


def test_a_users_nginx_file_short_of_connections_for_the_scenario_is_said_before_the_run(tmp_path) -> None:
    """prepare_candidate (what `caslab run` does with `[balancer] config`, before anything starts) reads
    the file's workers and worker_connections and notes the shortfall, for the report too."""
    userconfig = REPO / "tests" / "userconfig"
    text = (userconfig / "nginx-hash.conf").read_text().replace("connections 4096;", "connections 64;")
    (tmp_path / "nginx-hash.conf").write_text(text)
    scenario = load_scenario(userconfig / "candidate-nginx.toml")
    scenario = scenario.with_overrides(config=str(tmp_path / "nginx-hash.conf"))
    said: list[str] = []
    candidate = prepare_candidate(scenario, local_farm(3), Vip(), tmp_path / "run", said.append, local=False)
    need, cores = estimate(scenario, workers=1), len(os.sched_getaffinity(0))
    note = (
        f"the balancer needs about {2 * need.connections:,} connections for the {need.connections:,} the "
        f"users hold (two each) and holds {64 * cores:,} at most as the file sets it (worker_processes auto "
        f"(one per core here: {cores}) (line 3), worker_connections 64 (line 8)): connections beyond about "
        f"{32 * cores:,} wait in its accept queue or are refused, here and wherever the file runs"
    )
    assert note in candidate.notes and f"caslab: note: {note}" in said
    with_enough = scenario.with_overrides(config=str(userconfig / "nginx-hash.conf"))  # 4096 a worker
    candidate = prepare_candidate(with_enough, local_farm(3), Vip(), tmp_path / "b", said.append, local=False)
    assert not [n for n in candidate.notes if "the balancer needs" in n]


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, hard) // 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        assert raise_fd_limit() == (lowered, hard if hard != resource.RLIM_INFINITY else lowered)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_caslab_run_refuses_a_hundred_million_users_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "huge.toml").write_text(HUGE)
    caslab = str(Path(sys.executable).with_name("caslab"))
    command = [caslab, "run", str(tmp_path / "huge.toml"), "--out", str(tmp_path / "out"), "--workers", "1"]
    done = subprocess.run(isolated(*command), capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2
    assert "huge cannot fit this machine: it needs about" in done.stdout
    assert "Estimate: 100,000,000 users" in done.stdout
    log = next((tmp_path / "out").glob("huge-*/lab.log")).read_text()
    assert "open-file limit" in log and "capacity estimate: 100,000,000 users" in log
    assert "starting" not in log  # no CAS, no balancer


def test_caslab_up_raises_the_open_file_limit_and_its_balancer_runs_with_it(tmp_path: Path) -> None:
    """`caslab up` serves load it cannot know in advance: it raises the limit to the hard limit and says
    so, nginx's workers run with that limit, and their worker_connections follow it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    lowered = min(1024, hard)
    caslab = str(Path(sys.executable).with_name("caslab"))
    command = [caslab, "up", "--servers", "1", "--driver", "nginx", "--tls", "none", "--out", str(tmp_path)]
    up, text = background.start(
        isolated(*command),
        tmp_path,
        "stop with Ctrl-C",
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard)),
    )
    try:
        files = hard if hard != resource.RLIM_INFINITY else lowered
        raised = f"raised from {lowered:,} to" if files > lowered else "already"
        assert f"open files   {files:,} per process ({raised} the hard limit" in text, text
        nginx = [p for p in psutil.Process(up.pid).children(recursive=True) if p.name() == "nginx"]
        assert len(nginx) == 1 + len(psutil.Process().cpu_affinity()), nginx  # the master and its workers
        assert {open_files(p.pid) for p in nginx} == {files}
        conf = next(tmp_path.glob("*/balancer/nginx.conf")).read_text()
        assert f"worker_connections {min(files - 64, 65536)};" in conf
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()


def open_files(pid: int) -> int:
    """A process's soft open-file limit, from /proc (nginx's workers run as another user, whose limits
    prlimit may not read)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-file limit in /proc/{pid}/limits")
