"""What the docker backend hands its load generator container and reads back, without Docker: client
addresses inside the lab network, the load plan as JSON, and the container's progress lines; with
--workers, where each loadgen container is and which addresses it holds."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.backends.docker import LabNetwork, json_lines
from lab.backends.docker.workers import LoadgenContainers
from lab.loadplan import address_plans, endpoints_for_vip, plan_from_scenario
from lab.model import Vip
from lab.scenario import load_scenario
from loadgen.addresses import DISTINCT_KINDS, AddressPlan, SubnetAddresses
from loadgen.container_run import client_addresses, plan_from_json, plan_to_json
from loadgen.plan import LoadPlan, PopulationPlan
from loadgen.split import share_addresses, split_users

NETWORK = "10.221.8.0/22"


@settings(deadline=None)  # thousands of addresses each; a busy machine takes a while
@given(st.lists(st.integers(1, 127), min_size=1, max_size=6))  # 762 fit in a /22
def test_subnet_addresses_are_distinct_in_the_client_24s_and_spread_over_them(sizes: list[int]) -> None:
    space = SubnetAddresses(NETWORK, tuple(sizes))
    net = ipaddress.ip_network(NETWORK)
    lab_block = ipaddress.ip_network("10.221.8.0/24")  # gateway, VIP, CAS, load generator
    every = [space.address(p, n) for p, size in enumerate(sizes) for n in range(size)]
    assert len(set(every)) == len(every)
    for a in map(ipaddress.ip_address, every):
        assert a in net and a not in lab_block and a != net.broadcast_address
    for p, size in enumerate(sizes):  # consecutive addresses of one population in different /24s
        for n in range(size - 1):
            assert space.address(p, n).rsplit(".", 1)[0] != space.address(p, n + 1).rsplit(".", 1)[0]


def test_subnet_addresses_refuse_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="population 0 has 3 addresses"):
        SubnetAddresses(NETWORK, (3,)).address(0, 3)
    with pytest.raises(ValueError, match="holds 762 client addresses"):
        SubnetAddresses(NETWORK, (700, 63)).address(0, 0)
    with pytest.raises(ValueError, match="no /24 for clients"):
        SubnetAddresses("10.221.8.0/24", (1,)).address(0, 0)
    assert SubnetAddresses.capacity(22) == 762


def test_a_scenarios_docker_plan_keeps_its_shape_with_lab_network_addresses() -> None:
    scenario = load_scenario("quickstart")
    local, docker = address_plans(scenario), address_plans(scenario, NETWORK)
    assert [a.pool_size for a in local] == [a.pool_size for a in docker]
    for a in docker:
        pool = a.pool()
        assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(NETWORK) for ip in pool)
        assert len(set(pool)) == a.pool_size
    tenant = next(a for a in docker if a.kind == "tenant-nat")
    assert {tenant.address_of(u) for u in range(scenario.populations[0].users)} == set(tenant.pool())


def test_lab_network_places_the_lab_in_its_first_24() -> None:
    network = LabNetwork(ipaddress.IPv4Network(NETWORK))
    assert network.gateway == "10.221.8.1"
    assert network.vip == Vip(host="10.221.8.2")
    assert [s.host for s in network.servers(3)] == ["10.221.8.11", "10.221.8.12", "10.221.8.13"]
    assert network.loadgen_host == "10.221.8.250"
    assert network.vip.hosts("vip-per-service")[-1] == "10.221.8.9"  # below the CAS


def test_loadgen_containers_of_workers_take_the_top_of_the_lab_24_clear_of_the_rest() -> None:
    network = LabNetwork(ipaddress.IPv4Network(NETWORK))
    assert network.loadgen_hosts(3) == ["10.221.8.250", "10.221.8.249", "10.221.8.248"]
    most = network.loadgen_hosts(141)
    others = {network.gateway, *network.vip.hosts("vip-per-service"), *(s.host for s in network.servers(99))}
    assert len(set(most)) == 141 and not set(most) & others
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.221.8.0/24") for a in most)
    for count in (0, 142):
        with pytest.raises(ValueError, match="1 to 141 load generator containers"):
            network.loadgen_hosts(count)


def test_each_loadgen_container_holds_its_shares_addresses_and_no_other_container_does() -> None:
    scenario = load_scenario("quickstart")
    plan = plan_from_scenario(scenario, endpoints_for_vip(Vip(host="10.221.8.2"), False), NETWORK)
    given = [share_addresses(plan, share) for share in split_users(plan, 3)]
    every = [a for addresses in given for a in addresses]
    assert all(given) and len(every) == len(set(every))  # no address on two containers
    assert set(every) <= set(client_addresses(plan))  # (intranet addresses of users with no client: none)


def test_the_master_finds_a_containers_share_by_the_host_name_its_worker_reports() -> None:
    workers = LoadgenContainers(None, "caslab-loadgen:test", None, Path("events.csv"), 3)  # type: ignore[arg-type]
    assert workers.names == ["loadgen-1", "loadgen-2", "loadgen-3"]  # each container's host name
    assert workers.share_of({"pid": 7, "host": "loadgen-2"}) == 1
    assert workers.share_of({"pid": 7, "host": "laptop"}) is None


names = st.text("abcdefghijklmnopqrstuvwxyz-#0123456789", min_size=1, max_size=12)


@st.composite
def load_plans(draw: st.DrawFn) -> LoadPlan:
    count = draw(st.integers(1, 4))
    users = draw(st.lists(st.integers(1, 40), min_size=count, max_size=count))
    space = draw(st.one_of(st.none(), st.just(SubnetAddresses(NETWORK, tuple(users)))))
    populations = []
    for i, n in enumerate(users):
        # Distinct kinds take one address per user, so `users` is each population's pool size.
        kind = draw(st.sampled_from(DISTINCT_KINDS))
        change = draw(st.one_of(st.none(), st.floats(0.5, 600)))
        populations.append(
            PopulationPlan(
                name=draw(names),
                addresses=AddressPlan(i, kind, n, draw(st.integers(0, 8)), change, space),
                clients=draw(st.dictionaries(st.sampled_from(["browser", "eas-device"]), st.integers(0, n))),
                profile=draw(st.sampled_from(["light", "medium", "heavy"])),
                keeps_cookies=draw(st.booleans()),
            )
        )
    tls = draw(st.booleans())
    return LoadPlan(
        populations=populations,
        endpoints=endpoints_for_vip(
            Vip(host="10.221.8.2"), tls, draw(st.sampled_from(["single-vip", "vip-per-service"]))
        ),
        time_scale=draw(st.floats(1, 1000)),
        seed=draw(st.integers(0, 2**31)),
        start_time=draw(st.floats(0, 2e9)),
        run_id=draw(st.text(max_size=40)),
        extra=draw(st.dictionaries(names, st.integers())),
    )


@given(load_plans())
def test_a_load_plan_survives_the_trip_to_the_container(plan: LoadPlan) -> None:
    assert plan_from_json(plan_to_json(plan)) == plan


def test_the_container_adds_each_address_of_a_scenario_once() -> None:
    scenario = load_scenario("quickstart")
    plan = plan_from_scenario(scenario, endpoints_for_vip(Vip(host="10.221.8.2"), False), NETWORK)
    addresses = client_addresses(plan_from_json(plan_to_json(plan)))
    assert len(addresses) == len(set(addresses)) == sum(a.pool_size for a in address_plans(scenario))


@given(st.lists(st.dictionaries(names, st.integers(), min_size=1), max_size=8), st.data())
def test_progress_lines_are_read_however_the_output_is_cut(messages: list[dict], data: st.DataObject) -> None:
    text = "".join(json.dumps(m) + "\n" + "not json\n" for m in messages).encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=10)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert list(json_lines(chunks)) == messages


@pytest.mark.parametrize("command", [["run", "quickstart"], ["up"]])
def test_without_docker_the_docker_backend_says_so_and_exits_2(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    caslab = [sys.executable, "-m", "lab.cli", *command, "--backend", "docker", "--out", str(tmp_path)]
    done = subprocess.run(caslab, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "Docker is not reachable" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
