"""Source-address plans: NAT shares, distinct clients spread over /24s, mobile devices that move."""

import itertools

import pytest

from loadgen.addresses import AddressPlan, OwnAddress, address


def test_tenant_nat_users_share_the_configured_addresses():
    plan = AddressPlan(0, "tenant-nat", users=100, source_ips=1)
    assert {plan.address_of(u) for u in range(100)} == {"127.64.1.10"}
    plan2 = AddressPlan(0, "tenant-nat", users=100, source_ips=4)
    assert len({plan2.address_of(u) for u in range(100)}) == 4


def test_intranet_users_each_get_their_own_address_spread_over_many_24s():
    plan = AddressPlan(2, "intranet", users=600, source_ips=0)
    addrs = [plan.address_of(u) for u in range(600)]
    assert len(set(addrs)) == 600
    assert len({a.rsplit(".", 1)[0] for a in addrs}) == 250  # consecutive users in different /24s
    assert all(a.startswith("127.66.") for a in addrs)


def test_mobile_devices_move_on_schedule_within_their_pool():
    plan = AddressPlan(1, "mobile-carrier", users=50, source_ips=8, change_every_s=60)
    pool = set(plan.pool())
    for user in range(50):
        seen = [plan.address_of(user, t) for t in range(0, 600, 5)]
        assert set(seen) <= pool
        changes = sum(1 for a, b in itertools.pairwise(seen) if a != b)
        assert 9 <= changes <= 10  # one move a minute over ten minutes


def test_populations_never_share_addresses_and_bounds_are_checked():
    assert address(0, 0) != address(1, 0)
    with pytest.raises(ValueError):
        address(64, 0)
    with pytest.raises(ValueError):
        AddressPlan(0, "carrier-pigeon", users=1, source_ips=1)


@pytest.mark.parametrize("kind", ["tenant-nat", "mobile-carrier", "intranet"])
def test_clients_on_their_own_address_bind_none_so_every_population_leaves_from_the_host(kind):
    plan = AddressPlan(0, kind, users=20, source_ips=4, change_every_s=60, space=OwnAddress())
    assert {plan.address_of(u, t) for u in range(20) for t in (0, 90)} == {"0.0.0.0"}
