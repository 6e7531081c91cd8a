"""`caslab run --workers N`: the plan split by address group (loadgen.split), each share's users sent to
one worker (loadgen.dispatch), N worker processes whose event logs and self-checks make the run's
(loadgen.distributed, loadgen.worker), and the lab's choice of how many."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from namespace import isolated, require_namespaces

from lab.run import LabError, default_workers, load_generators
from loadgen.addresses import AddressPlan
from loadgen.plan import Endpoints, LoadPlan, PopulationPlan
from loadgen.progress import LoadResult, combined
from loadgen.split import address_group, split_users
from loadgen.worker import parse_master, shares_from_wire, shares_to_wire

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


def test_master_address_is_host_and_port() -> None:
    assert parse_master("10.0.0.5:5557") == ("10.0.0.5", 5557)
    for bad in ("10.0.0.5", ":5557", "host:port"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_master(bad)


def test_how_many_load_generators() -> None:
    assert default_workers() >= 1
    assert load_generators("local", None) == default_workers()
    assert load_generators("local", 3) == 3
    assert load_generators("docker", None) == 1
    with pytest.raises(LabError, match="docker backend runs one"):
        load_generators("docker", 2)
    with pytest.raises(LabError, match="at least 1"):
        load_generators("local", 0)


def test_dispatcher_sends_every_user_of_a_share_to_its_worker() -> None:
    done = subprocess.run(
        [sys.executable, str(DRIVER), "dispatch"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
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
    assert (tmp_path / f"events-{survivor}.csv").is_file()


@pytest.mark.slow
def test_quickstart_on_two_workers_is_valid_with_each_address_in_one_worker(tmp_path: Path) -> None:
    require_namespaces()
    command = ["caslab", "run", "quickstart", "--workers", "2", "--out", str(tmp_path), "--name", "w2"]
    command[0] = str(Path(sys.executable).with_name("caslab"))
    done = subprocess.run(isolated(*command), capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    run_dir = next(tmp_path.glob("w2-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"] == "pass" and not summary["invalid_reasons"]
    reconciliation = summary["reconciliation"]
    assert reconciliation["unmatched"] == 0 and reconciliation["server_differs"] == 0
    assert "2 Locust worker processes" in (run_dir / "lab.log").read_text()
    events = pd.read_parquet(run_dir / "events.parquet")
    tagged = events[events["request_id"] != ""].copy()
    tagged["pid"] = tagged["request_id"].str.split(".").str[1]  # a user's instance: worker.pid.n
    assert tagged["pid"].nunique() == 2
    assert (tagged.groupby("source_ip")["pid"].nunique() == 1).all()
    nat = tagged[tagged["population"].str.startswith(("tenant-nat", "citrix"))]
    assert nat["source_ip"].nunique() >= 2 and (nat.groupby("source_ip")["pid"].nunique() == 1).all()
    assert not list(run_dir.glob("events*.csv"))  # merged into events.parquet, then removed


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
