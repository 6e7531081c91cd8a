"""A scenario as a load plan: the lab turns its populations into what the load generator runs
(loadgen.plan.LoadPlan), with their source addresses, client counts and the VIP's URLs.
"""

from __future__ import annotations

from dataclasses import replace

from caslab.vocab import HTTP_SERVICES
from lab.model import Vip
from lab.scenario import Scenario
from loadgen.addresses import AddressPlan, SubnetAddresses
from loadgen.plan import Endpoints, LoadPlan, PopulationPlan


def endpoints_for_vip(vip: Vip, tls: bool, topology: str = "single-vip") -> Endpoints:
    """The VIP's URLs: one address for all (single-vip) or one per service group (vip-per-service)."""
    scheme, port = ("https", vip.https_port) if tls else ("http", vip.http_port)
    return Endpoints(
        base_urls={s: f"{scheme}://{vip.service_host(s, topology)}:{port}" for s in HTTP_SERVICES},
        tcp={
            "mapi": (vip.service_host("mapi", topology), vip.mapi_port),
            "addressbook": (vip.service_host("addressbook", topology), vip.ab_port),
        },
    )


def address_plans(scenario: Scenario, client_network: str | None = None) -> list[AddressPlan]:
    """The source addresses of each population: loopback ones, or in `client_network` (the docker
    backend's lab network, see SubnetAddresses).

    `ip_change_every` is Exchange time like the other protocol timers, so it runs `time_scale` faster."""
    plans = [
        AddressPlan(
            index,
            p.kind,
            p.users,
            p.source_ips,
            p.ip_change_every_s / scenario.time_scale if p.ip_change_every_s else None,
        )
        for index, p in enumerate(scenario.populations)
    ]
    if client_network is None:
        return plans
    space = SubnetAddresses(client_network, tuple(a.pool_size for a in plans))
    return [replace(a, space=space) for a in plans]


def plan_from_scenario(
    scenario: Scenario, endpoints: Endpoints, client_network: str | None = None
) -> LoadPlan:
    """The load of a scenario: its populations with their addresses (see address_plans), clients and
    timers."""
    populations = [
        PopulationPlan(name=p.name, addresses=a, clients=p.client_counts(), keeps_cookies=p.keeps_cookies)
        for p, a in zip(scenario.populations, address_plans(scenario, client_network), strict=True)
    ]
    return LoadPlan(
        populations=populations,
        endpoints=endpoints,
        time_scale=scenario.time_scale,
        seed=scenario.seed,
        tls_max_version=scenario.farm.tls_max_version,
    )
