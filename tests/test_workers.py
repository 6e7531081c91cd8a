"""`caslab run --workers N`: the plan split by address group (loadgen.split), each share's users sent to
one worker (loadgen.dispatch), N worker processes whose event logs and self-checks make the run's
(loadgen.distributed, loadgen.worker), the lab's choice of how many, and workers that join from
elsewhere (`--remote-workers`, `--master-bind`) and ship their event logs (loadgen.shipping)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from socket import gethostname

import pandas as pd
import pytest
from namespace import isolated, require_namespaces

from lab.run import LabError, default_workers, load_generators, remote_load_generators
from loadgen.addresses import AddressPlan
from loadgen.container_run import client_addresses
from loadgen.plan import Endpoints, LoadPlan, PopulationPlan
from loadgen.progress import LoadResult, clock_reasons, combined
from loadgen.shipping import WINDOW, Inbox, ShippingError, ship
from loadgen.split import address_group, share_addresses, split_users
from loadgen.worker import parse_host_port, shares_from_wire, shares_to_wire

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("workers_driver.py")


def plan_of(*populations: PopulationPlan) -> LoadPlan:
    return LoadPlan(list(populations), Endpoints.from_url("http://127.0.0.1:9"))


TENANT = PopulationPlan(
    "tenant-nat#0", AddressPlan(0, "tenant-nat", 40, 4), {"browser": 40, "eas-device": 20}
)
CARRIER = PopulationPlan("mobile-carrier#1", AddressPlan(1, "mobile-carrier", 30, 6, 5.0), {"eas-device": 30})
INTRANET = PopulationPlan(
    "intranet#2", AddressPlan(2, "intranet", 25, 0), {"outlook-mapi": 25, "browser": 10}
)


def addresses_by_share(plan: LoadPlan, shares: list) -> dict[str, set[int]]:
    """Every source address the users of each share start from -> the shares that have it."""
    seen: dict[str, set[int]] = {}
    populations = {p.name: p for p in plan.populations}
    for index, share in enumerate(shares):
        for (name, _kind), numbers in share.items():
            for user in numbers:
                seen.setdefault(populations[name].addresses.address_of(user), set()).add(index)
    return seen


def test_split_keeps_each_address_in_one_share_and_runs_every_user_once() -> None:
    plan = plan_of(TENANT, INTRANET)
    shares = split_users(plan, 3)
    for population in plan.populations:
        for kind, count in population.clients.items():
            runs = Counter(u for share in shares for u in share.get((population.name, kind), []))
            assert sorted(runs) == list(range(count)) and set(runs.values()) == {1}
    assert all(len(owners) == 1 for owners in addresses_by_share(plan, shares).values())
    sizes = [sum(len(n) for n in share.values()) for share in shares]
    assert max(sizes) - min(sizes) <= 15  # the largest group: one NAT address's 15 users


def test_a_user_numbers_kinds_stay_together_and_a_moving_carrier_is_one_group() -> None:
    shares = split_users(plan_of(INTRANET, CARRIER), 2)
    for share in shares:  # user 3's browser goes where user 3's Outlook goes: one person, one address
        assert set(share.get(("intranet#2", "browser"), [])) <= set(
            share.get(("intranet#2", "outlook-mapi"), [])
        )
    assert [len(s.get(("mobile-carrier#1", "eas-device"), [])) for s in shares].count(30) == 1
    still = PopulationPlan("mobile-carrier#1", AddressPlan(1, "mobile-carrier", 30, 6), {"eas-device": 30})
    assert {address_group(still, u) for u in range(30)} == set(range(6))  # without moves: per address


def test_each_share_gets_the_addresses_its_users_take_and_no_other_share_gets_them() -> None:
    plan = plan_of(TENANT, CARRIER, INTRANET)
    shares = split_users(plan, 3)
    given = [share_addresses(plan, share) for share in shares]
    populations = {p.name: p for p in plan.populations}
    for share, addresses in zip(shares, given, strict=True):
        assert len(addresses) == len(set(addresses))
        for (name, _kind), numbers in share.items():
            plan_of_addresses = populations[name].addresses
            for user in numbers:  # also where a moving phone is later in the run
                assert {plan_of_addresses.address_of(user, t) for t in range(0, 60, 1)} <= set(addresses)
    assert sorted(a for addresses in given for a in addresses) == sorted(client_addresses(plan))


def test_more_workers_than_address_groups_leaves_some_empty() -> None:
    one_nat = PopulationPlan("tenant-nat#0", AddressPlan(0, "tenant-nat", 9, 1), {"browser": 9})
    shares = split_users(plan_of(one_nat), 3)
    assert sorted(len(s) for s in shares) == [0, 0, 1]
    with pytest.raises(ValueError, match="at least 1"):
        split_users(plan_of(one_nat), 0)


def test_shares_cross_the_wire_unchanged() -> None:
    shares = split_users(plan_of(TENANT, CARRIER, INTRANET), 2)
    assert shares_from_wire(json.loads(json.dumps(shares_to_wire(shares)))) == shares


def test_a_saturated_worker_makes_the_run_saturated_and_is_named() -> None:
    calm = LoadResult(requests=100, failures=1, events=100, users=5, cpu_samples=[20.0], ticks=10)
    busy = LoadResult(
        requests=50, failures=0, events=49, users=5, cpu_samples=[99.0], max_lag_s=3.0, ticks=10
    )
    busy.saturated, busy.saturation_reason = True, "load generator stalled 3.00s behind its schedule"
    workers = [
        {"pid": 12, "host": "lab", "events": "e-12.csv", "result": dataclasses.asdict(calm)},
        {"pid": 11, "host": "lab", "events": "e-11.csv", "result": dataclasses.asdict(busy)},
    ]
    result = combined(10, workers)
    assert (result.requests, result.failures, result.events, result.users) == (150, 1, 149, 10)
    assert result.saturated and result.saturation_reason == (
        "worker pid 11 on lab: load generator stalled 3.00s behind its schedule"
    )
    assert (result.max_lag_s, result.ticks, sorted(result.cpu_samples)) == (3.0, 20, [20.0, 99.0])
    assert not combined(5, workers[:1]).saturated


def test_a_worker_whose_clock_is_off_the_masters_is_a_reason_the_run_is_invalid() -> None:
    """Its events would be misplaced against the faults and ledgers; within half a second is in step."""
    reasons = clock_reasons(
        {"worker pid 11 on a": 0.004, "worker pid 12 on b": -3.25, "worker pid 13 on c": 0.5}
    )
    assert reasons == [
        "worker pid 12 on b: its clock is -3.25 s off this machine's (read when it took the plan), so its "
        "events' times do not line up with the faults and the CAS ledgers; synchronise the clocks (NTP)"
    ]


def test_the_workers_client_errors_are_summed_and_the_first_is_kept() -> None:
    first = LoadResult(
        requests=9, failures=0, events=9, users=3, client_errors=2, client_error="browser: E: x"
    )
    other = LoadResult(
        requests=9, failures=0, events=9, users=3, client_errors=1, client_error="ews-app: E: y"
    )
    workers = [
        {"pid": pid, "host": "lab", "events": f"e-{pid}.csv", "result": dataclasses.asdict(one)}
        for pid, one in ((11, first), (12, other))
    ]
    result = combined(6, workers)
    assert (result.client_errors, result.client_error) == (3, "browser: E: x")


def test_master_address_is_host_and_port() -> None:
    assert parse_host_port("10.0.0.5:5557") == ("10.0.0.5", 5557)
    for bad in ("10.0.0.5", ":5557", "host:port", "10.0.0.5:0", "10.0.0.5:70000"):
        with pytest.raises(ValueError, match=r"--master-bind .*expected HOST:PORT"):
            parse_host_port(bad, "--master-bind")


def test_remote_workers_and_the_master_address_are_checked_before_the_lab_starts() -> None:
    assert remote_load_generators("local", 2, 0, None) == (0, None)
    assert remote_load_generators("local", 1, 2, None) == (2, None)  # 127.0.0.1, a free port
    for backend, workers, remote, bind, error in [
        ("local", 1, 1, "127.0.0.1", "--master-bind '127.0.0.1': expected HOST:PORT"),
        (
            "local",
            1,
            1,
            "mail.example:5557",
            "--master-bind mail.example:5557: HOST must be an IPv4 address of this machine",
        ),
        ("local", 1, 1, "192.0.2.1:5557", "--master-bind 192.0.2.1:5557: cannot listen there"),  # not ours
        ("local", 1, 0, "127.0.0.1:5557", "--workers 1 runs Locust in caslab itself"),
        ("local", 2, -1, None, "--remote-workers -1: 0 or more"),
        ("docker", 1, 1, None, "the local backend only"),
    ]:
        with pytest.raises(LabError, match=error):
            remote_load_generators(backend, workers, remote, bind)


def shipped(log: bytes, tmp_path: Path, size: int) -> tuple[int, Path | None, list[int]]:
    """`log` shipped part by part into an Inbox as the transport would, each part acknowledged as it is
    written: (parts sent, the log written, how many parts were unacknowledged at each send)."""
    (tmp_path / "worker.csv").write_bytes(log)
    inbox = Inbox(tmp_path / "run" / "events.csv")
    (tmp_path / "run").mkdir()
    acked, in_flight, queue = [0], [], []

    def send(message: dict) -> None:
        in_flight.append(message["part"] - acked[0])
        queue.append(message)

    def wait_acked(parts: int) -> None:  # the master writes what came and acknowledges it
        while acked[0] < parts:
            message = queue.pop(0)
            inbox.on_part("lab_1f2e", message["part"], message["data"])
            acked[0] = message["part"] + 1

    sent = ship(tmp_path / "worker.csv", send, wait_acked, size=size)
    return sent, inbox.finish("lab_1f2e", sent), in_flight


def test_a_shipped_event_log_arrives_whole_under_a_name_of_its_worker(tmp_path: Path) -> None:
    log = b"ts,population\n" + os.urandom(100_000) + b"\n"
    sent, written, in_flight = shipped(log, tmp_path, size=4096)
    assert sent == -(-len(log) // 4096) and max(in_flight) == WINDOW - 1
    assert written == tmp_path / "run" / "events-lab_1f2e.csv" and written.read_bytes() == log
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["events-lab_1f2e.csv"]


def test_an_empty_event_log_ships_no_part_and_leaves_no_file(tmp_path: Path) -> None:
    assert shipped(b"", tmp_path, size=4096) == (0, None, [])
    assert not list((tmp_path / "run").iterdir())  # the lab reads events*.csv as CSV: no empty file


def test_a_shipped_log_with_a_part_missing_is_not_left_to_read(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "events.csv")
    inbox.on_part("w/1", 0, b"ts\n1\n")
    assert inbox.path_for("w/1").name == "events-w_1.csv"  # a worker id never makes a path
    with pytest.raises(ShippingError, match="1 of 2 parts arrived"):
        inbox.finish("w/1", 2)
    inbox.on_part("w2", 1, b"2\n")
    with pytest.raises(ShippingError, match="part 1 came where part 0 was due"):
        inbox.finish("w2", 1)
    inbox.on_part("w3", 0, b"ts\n")  # a worker lost while it ships
    inbox.close()
    assert not list(tmp_path.iterdir())
    (tmp_path / "file").touch()
    unwritable = Inbox(tmp_path / "file" / "events.csv")  # a folder that cannot be made
    unwritable.on_part("w4", 0, b"ts\n")
    with pytest.raises(ShippingError, match="part 0 could not be written"):
        unwritable.finish("w4", 1)


def test_how_many_load_generators() -> None:
    assert default_workers() >= 1
    assert load_generators("local", None) == default_workers()
    assert load_generators("local", 3) == 3
    assert load_generators("docker", None) == default_workers()
    assert load_generators("docker", 2) == 2
    with pytest.raises(LabError, match="at least 1"):
        load_generators("local", 0)


@pytest.fixture(scope="module")
def dispatched() -> dict:
    """tests/workers_driver.py dispatch: where ShareDispatcher put each user class's users."""
    done = subprocess.run(
        [sys.executable, str(DRIVER), "dispatch"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_dispatcher_sends_every_user_of_a_share_to_its_worker(dispatched: dict) -> None:
    out = dispatched
    for placement in (out["ramp"], out["rebalanced"]):  # after the ramp; after a worker is gone
        worker_of_share: dict[int, set[str]] = {}
        for worker, counts in placement.items():
            for name, users in counts.items():
                if users:
                    assert users == len(out["numbers"][name])  # the whole class on this worker
                    worker_of_share.setdefault(out["shares"][name], set()).add(worker)
        assert all(len(workers) == 1 for workers in worker_of_share.values())
    assert [any(counts.values()) for counts in out["ramp"].values()] == [
        True,
        True,
        True,
    ]  # 3 shares, 3 workers


def test_a_pinned_dispatcher_sends_each_share_to_the_worker_that_holds_it(dispatched: dict) -> None:
    out = dispatched
    placed = {
        name: worker for worker, counts in out["pinned"].items() for name, users in counts.items() if users
    }
    assert sorted(placed) == sorted(out["shares"])  # every class placed, each on one worker
    for name, worker in placed.items():
        assert out["pinned"][worker][name] == len(out["numbers"][name])
        assert out["shares"][name] == out["owners"][worker]


@pytest.mark.slow
def test_a_worker_that_dies_is_named_in_the_result(tmp_path: Path) -> None:
    require_namespaces()
    command = [
        sys.executable,
        str(DRIVER),
        "run",
        "--events",
        str(tmp_path / "events.csv"),
        "--kill-after",
        "2",
    ]
    done = subprocess.run(isolated(*command), capture_output=True, text=True, timeout=90, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    killed, survivor = out["pids"]
    assert out["result"]["lost_workers"] == [f"load generator worker pid {killed} exited with code -9"]
    assert [w["pid"] for w in out["result"]["workers"]] == [survivor]
    assert len(list(tmp_path.glob(f"events-*-{survivor}.csv"))) == 1


def test_workers_whose_clocks_are_off_the_masters_are_named_in_the_result(tmp_path: Path) -> None:
    require_namespaces()
    command = [sys.executable, str(DRIVER), "run", "--events", str(tmp_path / "events.csv")]
    command += ["--seconds", "1", "--master-clock-skew", "3"]
    done = subprocess.run(isolated(*command), capture_output=True, text=True, timeout=90, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    reasons = out["result"]["lost_workers"]
    assert len(reasons) == 2 and all(
        re.search(r": its clock is -3\.\d\d s off this machine's", r) for r in reasons
    )
    assert {w["pid"] for w in out["result"]["workers"]} == set(out["pids"]), "both ran and reported"


@pytest.mark.slow
def test_quickstart_with_a_worker_that_joins_is_valid_and_its_shipped_events_are_judged(
    tmp_path: Path,
) -> None:
    """One worker started by the lab, one that joins as from another machine (its own working folder and
    temporary folder, no --events): the second's event log is shipped into the run folder and judged."""
    require_namespaces()
    caslab = str(Path(sys.executable).with_name("caslab"))
    elsewhere, temp = tmp_path / "elsewhere", tmp_path / "tmp"
    elsewhere.mkdir(), temp.mkdir()
    worker = f"{caslab} worker --master 127.0.0.1:5557"
    script = f'(cd {elsewhere} && TMPDIR={temp} {worker} >worker.log 2>&1; echo $? >worker.rc) & exec "$@"'
    run = [caslab, "run", "quickstart", "--workers", "1", "--remote-workers", "1"]
    run += ["--master-bind", "127.0.0.1:5557", "--out", str(tmp_path / "out"), "--name", "w2"]
    done = subprocess.run(
        isolated("sh", "-c", script, "sh", *run), capture_output=True, text=True, timeout=180, cwd=REPO
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"run `{worker.replace(caslab, 'caslab')}` there" in done.stdout
    run_dir = next((tmp_path / "out").glob("w2-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"] == "pass" and not summary["invalid_reasons"]
    reconciliation = summary["reconciliation"]
    assert reconciliation["unmatched"] == 0 and reconciliation["server_differs"] == 0
    lab_log = (run_dir / "lab.log").read_text()
    assert "1 worker process(es) started here and 1 from other machines" in lab_log
    results = {  # each worker's result as the master logged it: pid -> (events, file)
        int(pid): (int(events), Path(file))
        for pid, events, file in re.findall(
            r"worker pid (\d+) on \S+: \d+ requests, (\d+) events in (\S+)", lab_log
        )
    }
    assert len(results) == 2 and all(file.parent == run_dir for _, file in results.values())
    local = [pid for pid, (_, file) in results.items() if file.name == f"events-{gethostname()}-{pid}.csv"]
    assert len(local) == 1  # the other's log was shipped, under its Locust worker id
    events = pd.read_parquet(run_dir / "events.parquet")
    assert len(events) == sum(n for n, _ in results.values())  # the verifier read both logs
    tagged = events[events["request_id"] != ""].copy()
    tagged["pid"] = tagged["request_id"].str.split(".").str[1].astype(int)  # a user's instance: worker.pid.n
    (joined,) = set(results) - set(local)
    assert 0 < (tagged["pid"] == joined).sum() <= results[joined][0]  # rows without a request id too
    assert (tagged.groupby("source_ip")["pid"].nunique() == 1).all()
    nat = tagged[tagged["population"].str.startswith(("tenant-nat", "citrix"))]
    assert nat["source_ip"].nunique() >= 2 and (nat.groupby("source_ip")["pid"].nunique() == 1).all()
    assert not list(run_dir.glob("events*.csv*"))  # merged into events.parquet, then removed
    assert (elsewhere / "worker.rc").read_text().strip() == "0"  # it quit with the master
    assert not list(temp.iterdir()) and sorted(p.name for p in elsewhere.iterdir()) == [
        "worker.log",
        "worker.rc",
    ]


@pytest.mark.slow
def test_the_self_check_judges_the_load_not_the_users_stopping(tmp_path: Path) -> None:
    require_namespaces()
    command = [sys.executable, str(DRIVER), "slow-stop", "--events", str(tmp_path / "events.csv")]
    done = subprocess.run(isolated(*command), capture_output=True, text=True, timeout=90, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    result = out["result"]
    assert result["events"] > 0 and result["ticks"] >= 15 and out["stopped"] == result["users"]
    assert not result["saturated"] and result["max_lag_s"] < 1.0, result["saturation_reason"]
